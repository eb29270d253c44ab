/**
 * Run the Worker (edge/worker.ts) locally under `wrangler dev` (the real workerd runtime) against a
 * libSQL *file*: the file is served over Hrana/HTTP by the dev server in ./server.ts, because a
 * Worker can only reach a database over HTTP. Used by `npm run dev:edge` and by test/edge.
 *
 * DEVELOPMENT AND TEST SUPPORT ONLY. In production the Worker talks to Turso or a self-hosted sqld
 * (see docs/edge.md).
 *
 * Offline by construction: the env given to wrangler turns off metrics, error reports, the banner
 * and `request.cf` fetching; wrangler's update check is answered from a pre-filled cache in a
 * private TMPDIR; wrangler's home (XDG_CONFIG_HOME), state and temp files live in a private
 * temporary directory removed on stop. Everything listens on 127.0.0.1 only.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { loadConfig, SETTINGS } from "../../../src/config";
import { openDatabase, runMigrations } from "../../process/database";
import { freePort } from "../free-port";
import { type HranaServer, startHranaServer } from "./server";

export const PROJECT_ROOT = resolve(import.meta.dir, "..", "..", "..");
const WRANGLER_JS = join(PROJECT_ROOT, "node_modules", "wrangler", "bin", "wrangler.js");

/** The environment that keeps wrangler quiet and on loopback. */
export const WRANGLER_OFFLINE_ENV = {
  WRANGLER_SEND_METRICS: "false",
  WRANGLER_SEND_ERROR_REPORTS: "false",
  WRANGLER_HIDE_BANNER: "true",
  CLOUDFLARE_CF_FETCH_ENABLED: "false",
  // Only our env file reaches the Worker: not the project's .dev.vars/.env, not this process's env.
  CLOUDFLARE_LOAD_DEV_VARS_FROM_DOT_ENV: "true",
  CLOUDFLARE_INCLUDE_PROCESS_ENV: "false",
} as const;

export interface EdgeDevOptions {
  /** A `file:` URL (or path) of the libSQL database the Worker should use. */
  databaseUrl: string;
  /** Port of the Worker (wrangler dev --port). */
  port: number;
  /** Settings (GROUP__FIELD) handed to the Worker as bindings; DATABASE__* are replaced. */
  workerEnv?: Record<string, string | undefined>;
  /** Port of the Hrana server; 0 (default) picks a free one. */
  hranaPort?: number;
  /** Apply the migrations to the file first, as `proxytorrent migrate` does (default true). */
  migrate?: boolean;
  /** Where wrangler output goes: "inherit" (CLI) or "pipe" (tests: kept for error messages). */
  stdio?: "inherit" | "pipe";
  /** How long to wait for the Worker to answer (default 90 s). */
  readyTimeoutMs?: number;
  /** Abort the start-up (Ctrl-C while wrangler is still starting): everything started is stopped. */
  signal?: AbortSignal;
  /** The Node.js binary that runs wrangler (wrangler does not run on Bun). Default: `node` on PATH. */
  nodeBinary?: string;
  /** Another Worker entry instead of wrangler.toml's `main` (tests: a wrapper of edge/worker.ts). */
  main?: string;
}

export interface EdgeDev {
  /** The Worker's base URL, e.g. http://127.0.0.1:8787 */
  url: string;
  hrana: HranaServer;
  /** The absolute path of the database file. */
  file: string;
  /** Recent wrangler output (stdio "pipe" only). */
  output(): string;
  /** Resolves with wrangler's exit code when it exits. */
  exited: Promise<number | null>;
  /** Stop wrangler (and workerd), then the Hrana server; remove the temporary directory. */
  stop(): Promise<void>;
}

/** A free TCP port on 127.0.0.1 (bound then released; a small race is possible). */
export { freePort };

/** The path inside a `file:` URL (or a plain path), absolute. */
export function fileUrlPath(url: string): string {
  if (!url.startsWith("file:")) return resolve(url);
  let path = url.slice("file:".length).split("?")[0]!;
  if (path.startsWith("//")) path = path.replace(/^\/\/[^/]*/, "");
  return resolve(path);
}

/** One KEY=value line dotenv reads back unchanged (quotes chosen so nothing is unescaped). */
export function dotenvLine(name: string, value: string): string {
  if (/[\r\n]/.test(value))
    throw new Error(`${name}: a value with a line break cannot be passed to wrangler dev`);
  if (!value.includes("'")) return `${name}='${value}'`;
  if (!value.includes('"') && !value.includes("\\")) return `${name}="${value}"`;
  if (!value.includes("`")) return `${name}=\`${value}\``;
  throw new Error(`${name}: a value with ', " and \` cannot be passed to wrangler dev`);
}

/** The project's settings present in `env` (GROUP__FIELD names from src/config), non-empty. */
export function settingsFrom(env: Record<string, string | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of Object.keys(SETTINGS)) {
    const value = env[name];
    if (value !== undefined && value.trim() !== "") out[name] = value;
  }
  return out;
}

function findNode(explicit?: string): string {
  const candidates = [
    explicit,
    process.env.NODE_BINARY,
    Bun.which("node"),
    "/usr/bin/node",
    "/usr/local/bin/node",
  ];
  for (const c of candidates) {
    if (!c) continue;
    const probe = spawnSync(c, ["-p", "process.versions.bun ? 'bun' : process.versions.node"], {
      encoding: "utf8",
    });
    const out = probe.stdout?.trim();
    if (probe.status === 0 && out && out !== "bun") return c;
  }
  throw new Error("wrangler needs Node.js (>= 20) on PATH; set NODE_BINARY to its path");
}

/**
 * Apply the project's migrations to the file: the same two calls `proxytorrent migrate` makes
 * (seeder/process/database.ts), in-process, so a half-edited seeder runtime cannot break `dev:edge`.
 */
export async function migrateFile(databaseUrl: string): Promise<void> {
  const config = loadConfig({ DATABASE__DATABASE_URL: databaseUrl });
  const { client, db } = await openDatabase(config);
  try {
    await runMigrations(db);
  } finally {
    client.close();
  }
}

/** Keep the last ~64 KiB of a child's output for error messages. */
function tail(limit = 64 * 1024) {
  let buf = "";
  return {
    push(chunk: Buffer | string) {
      buf += chunk.toString();
      if (buf.length > limit) buf = buf.slice(-limit);
    },
    text: () => buf,
  };
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals) {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      /* gone */
    }
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function wranglerVersion(): string {
  const pkg = join(PROJECT_ROOT, "node_modules", "wrangler", "package.json");
  return (JSON.parse(readFileSync(pkg, "utf8")) as { version: string }).version;
}

/**
 * A few lines of Node that run the command given as arguments and, when stdin closes (the parent
 * died), end its whole process group and remove the temporary directory. Group-wide
 * SIGTERM/SIGINT/SIGHUP are left to the command.
 */
const GUARD = `
const { spawn } = require("node:child_process");
const [cmd, ...args] = process.argv.slice(1);
const child = spawn(cmd, args, { stdio: ["ignore", "inherit", "inherit"] });
let orphaned = false;
for (const s of ["SIGTERM", "SIGINT", "SIGHUP"]) process.on(s, () => {});
const orphan = () => {
  if (orphaned) return;
  orphaned = true;
  try { process.kill(0, "SIGTERM"); } catch {}
  setTimeout(() => process.kill(0, "SIGKILL"), 5000);
};
process.stdin.on("end", orphan);
process.stdin.on("error", orphan);
process.stdin.resume();
child.on("exit", (code) => {
  if (orphaned) {
    const dir = process.env.PT_EDGE_DEV_WORKDIR;
    if (dir && /pt-edge-dev-[^/]+$/.test(dir)) require("node:fs").rmSync(dir, { recursive: true, force: true });
    process.kill(0, "SIGKILL");
  }
  process.exit(code ?? 1);
});
`;

/** Start the Hrana server over the file, then `wrangler dev` on 127.0.0.1:port; resolve once it answers. */
export async function startEdgeDev(opts: EdgeDevOptions): Promise<EdgeDev> {
  const file = fileUrlPath(opts.databaseUrl);
  const fileUrl = `file:${file}`;
  mkdirSync(resolve(file, ".."), { recursive: true });
  if (opts.migrate ?? true) await migrateFile(fileUrl);

  const node = findNode(opts.nodeBinary);
  const work = mkdtempSync(join(tmpdir(), "pt-edge-dev-"));
  const cleanupWork = () => rmSync(work, { recursive: true, force: true });

  // wrangler's update check reads this cache before going online; a fresh entry means "no check".
  const wranglerTmp = join(work, "tmp");
  mkdirSync(join(wranglerTmp, "update-check"), { recursive: true });
  writeFileSync(
    join(wranglerTmp, "update-check", "wrangler-latest.json"),
    JSON.stringify({ latest: wranglerVersion(), lastUpdate: Date.now() + 10 * 365 * 86_400_000 }),
  );

  const token = Buffer.from(crypto.getRandomValues(new Uint8Array(24))).toString("base64url");
  let hrana: HranaServer;
  try {
    hrana = await startHranaServer({ file, port: opts.hranaPort ?? 0, host: "127.0.0.1", authToken: token });
  } catch (e) {
    cleanupWork();
    throw e;
  }

  const bindings: Record<string, string> = {
    ...settingsFrom(opts.workerEnv ?? {}),
    DATABASE__DATABASE_URL: hrana.url,
    DATABASE__AUTH_TOKEN: token,
  };
  const envFile = join(work, "worker.env");
  writeFileSync(
    envFile,
    `${Object.entries(bindings)
      .map(([k, v]) => dotenvLine(k, v))
      .join("\n")}\n`,
    { mode: 0o600 },
  );

  const args = [
    WRANGLER_JS,
    "dev",
    ...(opts.main ? [opts.main] : []),
    "--config",
    join(PROJECT_ROOT, "wrangler.toml"),
    "--env-file",
    envFile,
    "--port",
    String(opts.port),
    "--ip",
    "127.0.0.1",
    "--inspector-ip",
    "127.0.0.1",
    "--inspector-port",
    String(await freePort()),
    "--persist-to",
    join(work, "state"),
    "--show-interactive-dev-session=false",
    "--local",
  ];
  const childEnv: Record<string, string | undefined> = {
    ...process.env,
    ...WRANGLER_OFFLINE_ENV,
    PT_EDGE_DEV_WORKDIR: work,
    XDG_CONFIG_HOME: join(work, "config"),
    WRANGLER_LOG_PATH: join(work, "logs"),
    TMPDIR: wranglerTmp,
    TMP: wranglerTmp,
    TEMP: wranglerTmp,
    NO_COLOR: "1",
    FORCE_COLOR: "0",
  };
  // Nothing from this process's own settings may leak into wrangler's env-file handling.
  for (const name of Object.keys(SETTINGS)) delete childEnv[name];

  const out = tail();
  // wrangler (and the workerd processes it starts) run under GUARD in a process group of their
  // own, so stop() can signal all of them at once; GUARD's stdin is a pipe from this process, so
  // if this process dies in any way (even SIGKILL), GUARD sees EOF and takes the group down.
  const child = spawn(node, ["-e", GUARD, node, ...args], {
    cwd: PROJECT_ROOT,
    env: childEnv,
    stdio: [
      "pipe",
      opts.stdio === "inherit" ? "inherit" : "pipe",
      opts.stdio === "inherit" ? "inherit" : "pipe",
    ],
    detached: true,
  });
  child.stdout?.on("data", out.push);
  child.stderr?.on("data", out.push);
  const onExit = () => killGroup(child, "SIGKILL");
  process.on("exit", onExit);
  const exited = new Promise<number | null>((ok) => {
    child.on("exit", (code) => ok(code));
    child.on("error", () => ok(null));
  });
  let hasExited = false;
  void exited.then(() => {
    hasExited = true;
  });

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      if (!hasExited) {
        killGroup(child, "SIGTERM");
        const done = await Promise.race([exited.then(() => true), sleep(5_000).then(() => false)]);
        if (!done) killGroup(child, "SIGKILL");
        await Promise.race([exited, sleep(2_000)]);
      }
      // workerd may outlive wrangler if wrangler died first: the group kill covers it.
      killGroup(child, "SIGKILL");
      process.off("exit", onExit);
      await hrana.stop();
      cleanupWork();
    })();
    return stopping;
  };

  const url = `http://127.0.0.1:${opts.port}`;
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 90_000);
  try {
    for (;;) {
      if (hasExited) throw new Error(`wrangler dev exited before the Worker answered`);
      if (opts.signal?.aborted) throw new Error("start-up aborted");
      try {
        const timeout = AbortSignal.timeout(5_000);
        const res = await fetch(`${url}/`, {
          signal: opts.signal ? AbortSignal.any([timeout, opts.signal]) : timeout,
        });
        const type = res.headers.get("content-type") ?? "";
        await res.arrayBuffer();
        if (type.includes("application/json")) break;
      } catch {
        /* not listening yet */
      }
      if (Date.now() > deadline) throw new Error(`the Worker did not answer on ${url} in time`);
      await sleep(250);
    }
  } catch (e) {
    await stop();
    const detail = opts.stdio === "inherit" ? "" : `\n--- wrangler output ---\n${out.text()}`;
    throw new Error(`${(e as Error).message}${detail}`);
  }

  return { url, hrana, file, output: out.text, exited, stop };
}
