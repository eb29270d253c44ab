/**
 * Development entry points (never production):
 *
 *   bun seeder/dev/hrana/cli.ts dev-edge     what `npm run dev:edge` runs: migrate the libSQL file named by
 *                                        DATABASE__DATABASE_URL (default file:./data/proxytorrent.db),
 *                                        serve it over Hrana/HTTP on a free loopback port, and run the
 *                                        Worker under `wrangler dev` on 127.0.0.1:$PORT (default 8787).
 *   bun seeder/dev/hrana/cli.ts serve [--file F] [--port N]
 *                                        only the Hrana server over a file (for drizzle-kit, the
 *                                        libsql http client, or a `wrangler dev` you start yourself).
 *
 * The project's settings in the environment (SECURITY__BEARER_TOKENS, …) are handed to the Worker.
 */
import { ConfigError, loadConfig } from "../../../src/config";
import { startEdgeDev } from "./dev-edge";
import { startHranaServer } from "./server";

function fail(message: string): never {
  console.error(message);
  process.exit(2);
}

function databaseUrlFromEnv(): string {
  try {
    return loadConfig(process.env).database.url;
  } catch (e) {
    if (e instanceof ConfigError) fail(`${e.message}\n\nFix the variables above and start again.`);
    throw e;
  }
}

/**
 * Stop cleanly on Ctrl-C / SIGTERM / SIGHUP, and also when our parent goes away (e.g. `npm run`'s
 * shell was killed on its own): wrangler runs in its own process group and would otherwise be left
 * behind. Installed before anything starts; `setStop` names what to stop once it exists.
 */
function shutdownHandling() {
  const aborter = new AbortController();
  let stop: (() => Promise<void>) | undefined;
  let stopping = false;
  const shutdown = () => {
    if (stopping) return;
    stopping = true;
    aborter.abort();
    if (stop) void stop().finally(() => process.exit(0));
    // else: start-up is in progress; it sees the abort, cleans up and exits.
  };
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(sig, shutdown);
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) shutdown();
  }, 1000);
  return {
    signal: aborter.signal,
    setStop(fn: () => Promise<void>) {
      stop = fn;
      if (stopping) void fn().finally(() => process.exit(0));
    },
  };
}

async function devEdge() {
  const url = databaseUrlFromEnv();
  if (!url.startsWith("file:")) {
    fail(
      `dev:edge serves a local libSQL file to the Worker, but DATABASE__DATABASE_URL is ${url.split("?")[0]!.replace(/\/\/[^@/]*@/, "//***@")}.\n` +
        "For a remote database (Turso, sqld) run `npx wrangler dev` with DATABASE__DATABASE_URL and " +
        "DATABASE__AUTH_TOKEN in .dev.vars instead (see docs/edge.md).",
    );
  }
  const rawPort = process.env.PORT?.trim() || "8787";
  const port = Number(rawPort);
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    fail(`PORT: expected a port number, got ${rawPort}`);

  const shutdown = shutdownHandling();
  console.log(`dev:edge: migrating ${url.split("?")[0]} …`);
  const dev = await startEdgeDev({
    databaseUrl: url,
    port,
    workerEnv: process.env,
    stdio: "inherit",
    signal: shutdown.signal,
  }).catch((e: Error) => (shutdown.signal.aborted ? process.exit(0) : fail(`dev:edge: ${e.message}`)));
  console.log(
    [
      "",
      `dev:edge: the Worker (workerd) answers on ${dev.url}`,
      `dev:edge: database ${dev.file}, served to it by the dev Hrana server on ${dev.hrana.url} (loopback, test/dev only)`,
      "dev:edge: Ctrl-C stops both.",
      "",
    ].join("\n"),
  );
  shutdown.setStop(dev.stop);
  const code = await dev.exited;
  await dev.stop();
  process.exit(code ?? 1);
}

function option(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

async function serve(args: string[]) {
  const file = option(args, "--file") ?? databaseUrlFromEnv();
  if (/^(libsql|https?|wss?):/i.test(file)) fail(`serve needs a file, got ${file}`);
  const port = Number(option(args, "--port") ?? "0");
  const server = await startHranaServer({
    file,
    port,
    host: "127.0.0.1",
    authToken: process.env.HRANA_AUTH_TOKEN,
  });
  console.log(`dev Hrana server (test/dev only) for ${server.file} on ${server.url}`);
  shutdownHandling().setStop(server.stop);
}

const [command = "dev-edge", ...rest] = process.argv.slice(2);
if (command === "dev-edge") await devEdge();
else if (command === "serve") await serve(rest);
else fail(`unknown command ${command}; use dev-edge or serve`);
