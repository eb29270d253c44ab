/**
 * Shared pieces of the benchmarks: the real service as a child process (`bin/proxytorrent serve`,
 * own storage dir and ports, loopback only), machine details, percentiles, Prometheus scraping,
 * deterministic test files, and the markdown section each benchmark appends to bench/results.md.
 *
 * Nothing here passes or fails on time: a benchmark prints figures next to the reference measured
 * in the same run. Every child process and temp directory is removed on exit (also on Ctrl-C).
 */

import { appendFileSync, existsSync, readFileSync, rmSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import os from "node:os";
import { join, resolve } from "node:path";
import { type Subprocess, spawn, spawnSync } from "bun";
import { freePort } from "../seeder/dev/free-port";
import { ApiClient } from "../test/support/api-client";
import { PatternBody } from "../test/support/origin";

export const ROOT = resolve(import.meta.dir, "..");
export const CLI = join(ROOT, "bin", "proxytorrent");
export const RESULTS = join(ROOT, "bench", "results.md");
export const TOKEN = "bench-token-0123456789abcdef0123";
export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

// ---------- cleanup ----------

const children = new Set<Subprocess>();
const tempDirs = new Set<string>();
const cleanups: (() => void)[] = [];

function cleanupAll() {
  for (const c of children) {
    try {
      c.kill("SIGKILL");
    } catch {
      /* already gone */
    }
  }
  children.clear();
  for (const f of cleanups.splice(0)) {
    try {
      f();
    } catch {
      /* best effort */
    }
  }
  if (process.env.KEEP_TMP !== "1") for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}
process.once("exit", cleanupAll);
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    cleanupAll();
    process.exit(130);
  });
}

/** Run `fn` at exit (after children are killed). */
export function atExit(fn: () => void): void {
  cleanups.push(fn);
}

/** Track a child so it is SIGKILLed if the benchmark exits early. */
export function track<T extends Subprocess>(p: T): T {
  children.add(p);
  void p.exited.then(() => children.delete(p));
  return p;
}

export async function tmpDir(prefix = "pt-bench-"): Promise<string> {
  const dir = await mkdtemp(join(os.tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

export { freePort };

// ---------- numbers ----------

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  const rank = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[rank]!;
}

/** The middle value (mean of the two middle ones for an even count). */
export function median(values: number[]): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function fmt(n: number, digits = 1): string {
  if (!Number.isFinite(n)) return "n/a";
  return n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** MB/s (10^6 bytes per second), the unit the targets use. */
export const mbps = (bytes: number, ms: number) => bytes / 1e6 / (ms / 1000);

export function log(...args: unknown[]): void {
  console.log(...args);
}

// ---------- machine ----------

export interface Machine {
  cpu: string;
  cores: number;
  memGiB: number;
  bun: string;
  node: string;
  kernel: string;
  date: string;
  commit: string;
}

function cmdOut(cmd: string[]): string {
  try {
    const r = spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
    return `${r.stdout.toString()}${r.stderr.toString()}`.trim();
  } catch {
    return "";
  }
}

export function machine(): Machine {
  let cpu = os.cpus()[0]?.model ?? "unknown";
  try {
    const m = readFileSync("/proc/cpuinfo", "utf8").match(/^model name\s*:\s*(.+)$/m);
    if (m) cpu = m[1]!.trim();
  } catch {
    /* not linux */
  }
  const head = cmdOut(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]);
  const dirty = cmdOut(["git", "-C", ROOT, "status", "--porcelain"]).length > 0;
  const commit = /^[0-9a-f]{7,}$/.test(head)
    ? `${head}${dirty ? " (+ uncommitted changes)" : ""}`
    : "none (no commit yet)";
  return {
    cpu,
    cores: os.cpus().length,
    memGiB: Math.round((os.totalmem() / GiB) * 10) / 10,
    bun: Bun.version,
    node: cmdOut(["node", "--version"]) || "n/a",
    kernel: `${os.type()} ${os.release()}`,
    date: new Date().toISOString(),
    commit,
  };
}

export function toolVersion(cmd: string[], pattern: RegExp): string {
  const m = cmdOut(cmd).match(pattern);
  return m ? (m[1] ?? m[0]) : "n/a";
}

export function hasCommand(cmd: string): boolean {
  return cmdOut(["sh", "-c", `command -v ${cmd}`]).length > 0;
}

// ---------- is the machine quiet? ----------

function cpuTimes(): { idle: number; total: number } {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { idle: (f[3] ?? 0) + (f[4] ?? 0), total };
}

/** Share of all CPUs busy (0..1) over `ms`, whoever uses them. */
export async function machineBusy(ms = 1000): Promise<number> {
  const a = cpuTimes();
  await Bun.sleep(ms);
  const b = cpuTimes();
  const total = b.total - a.total;
  return total > 0 ? 1 - (b.idle - a.idle) / total : 0;
}

/** utime+stime of this process plus its reaped children, in clock ticks (/proc/self/stat). */
function ownTicks(): number {
  const st = readFileSync("/proc/self/stat", "utf8");
  const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
  return Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
}

/** What the busy share was when the benchmark started (filled by waitForQuiet). */
export const quiet = {
  busyAtStart: Number.NaN,
  waitedS: 0,
  start: null as { idle: number; total: number } | null,
  ownStart: 0,
};

/**
 * Share of the machine's CPU time used by processes other than this benchmark and its (finished)
 * children since waitForQuiet(). Services still running at the time count as "other".
 */
function othersShare(): number {
  if (!quiet.start) return Number.NaN;
  const now = cpuTimes();
  const total = now.total - quiet.start.total;
  const busy = total - (now.idle - quiet.start.idle);
  const own = ownTicks() - quiet.ownStart;
  return total > 0 ? Math.max(0, busy - own) / total : Number.NaN;
}

/**
 * Other work on the machine (tests, builds, another benchmark) changes every figure here. Wait up
 * to BENCH_QUIET_WAIT_S (default 120) for a second in which the CPUs are at most 10 % busy, and
 * record what was seen; results.md says so when the machine was not quiet.
 */
export async function waitForQuiet(): Promise<void> {
  const maxS = Number(process.env.BENCH_QUIET_WAIT_S ?? 120);
  const t0 = performance.now();
  let busy = await machineBusy(1000);
  while (busy > 0.1 && performance.now() - t0 < maxS * 1000) {
    console.log(`machine ${Math.round(busy * 100)} % busy; waiting for it to quiet down…`);
    busy = await machineBusy(2000);
  }
  quiet.busyAtStart = busy;
  quiet.waitedS = Math.round((performance.now() - t0) / 1000);
  quiet.start = cpuTimes();
  quiet.ownStart = ownTicks();
}

/** Our own children (and ourselves) are not "other load". */
function otherLoadNote(): string {
  const load = os.loadavg()[0] ?? 0;
  const busy = Number.isNaN(quiet.busyAtStart) ? "not checked" : `${Math.round(quiet.busyAtStart * 100)} %`;
  const others = othersShare();
  const othersText = Number.isNaN(others) ? "n/a" : `${Math.round(others * 100)} % of the machine`;
  const warn =
    quiet.busyAtStart > 0.1 || others > 0.1
      ? " — NOT QUIET: other processes were using the CPUs, figures are low"
      : "";
  return `machine busy before the run: ${busy}${quiet.waitedS > 1 ? ` (after waiting ${quiet.waitedS} s)` : ""}; CPU used by other processes during the run: ${othersText}; 1-min load average at the end: ${load.toFixed(2)}${warn}`;
}

// ---------- results.md ----------

export interface Row {
  figure: string;
  measured: string;
  reference?: string;
  target?: string;
}

export interface Section {
  title: string;
  /** Settings that shaped this run (env, sizes, counts). */
  setup: string[];
  rows: Row[];
  notes?: string[];
}

export function appendResults(s: Section): void {
  const m = machine();
  const lines = [
    "",
    `## ${s.title}`,
    "",
    `${m.date} · ${m.cpu}, ${m.cores} cores, ${m.memGiB} GiB · Bun ${m.bun}, Node ${m.node.replace(/^v/, "")} · ${m.kernel} · commit ${m.commit}`,
    "",
    ...s.setup.map((x) => `- ${x}`),
    `- ${otherLoadNote()}`,
    "",
    "| Figure | Measured | Reference (same run) | Target |",
    "|---|---|---|---|",
    ...s.rows.map((r) => `| ${r.figure} | ${r.measured} | ${r.reference ?? "–"} | ${r.target ?? "–"} |`),
  ];
  if (s.notes?.length) lines.push("", ...s.notes.map((x) => `- ${x}`));
  lines.push("");
  if (!existsSync(RESULTS)) {
    appendFileSync(
      RESULTS,
      "# Benchmark results\n\nAppended by `bench/*.ts` (see docs/performance.md). Each section is one run; the reference beside each figure was measured in that same run. Nothing here is pass/fail.\n",
    );
  }
  appendFileSync(RESULTS, `${lines.join("\n")}\n`);
  // `npm run lint` runs biome over bench/, markdown included: keep the file in its format.
  const biome = join(ROOT, "node_modules", ".bin", "biome");
  if (existsSync(biome))
    spawnSync([biome, "format", "--write", RESULTS], { stdout: "ignore", stderr: "ignore" });
  // Also print it, so a run's output is complete on its own.
  console.log(lines.join("\n"));
}

// ---------- Prometheus ----------

/** Sum of every sample of `name` whose labels include `labels` (e.g. {via: "peer"}). */
export function promValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/);
    if (!m || m[1] !== name) continue;
    const lab = m[2] ?? "";
    if (Object.entries(labels).every(([k, v]) => lab.includes(`${k}="${v}"`))) sum += Number(m[3]);
  }
  return sum;
}

// ---------- the service ----------

export interface ServiceOptions {
  env?: Record<string, string>;
  basePath?: string;
  port?: number;
  torrentPort?: number;
  /**
   * Command to run instead of `bin/proxytorrent serve`, e.g. for profiling:
   * `[BUN, "--cpu-prof", "--cpu-prof-dir=/tmp/prof", "seeder/cli/index.ts", "serve"]`. Also from the
   * environment: BENCH_SERVICE_CMD="node_modules/.bin/bun --cpu-prof seeder/cli/index.ts serve".
   */
  cmd?: string[];
}

export const BUN = join(ROOT, "node_modules", ".bin", "bun");

/** Settings every benchmark run uses: loopback only, no create rate limit or quota, INFO logs. */
export function baseEnv(): Record<string, string> {
  return {
    HOST: "127.0.0.1",
    SECURITY__BEARER_TOKENS: TOKEN,
    EGRESS__ALLOW_PRIVATE_NETWORKS: "true",
    RATE_LIMIT__RATE_LIMIT_ENABLED: "false",
    QUOTA__MAX_ACTIVE: "0",
    MONITORING__LOG_LEVEL: "INFO",
    MONITORING__METRICS_ENABLED: "true",
  };
}

export class Service extends ApiClient {
  proc: Subprocess<"ignore", "pipe", "pipe"> | null = null;
  /** Last lines of output (ring), for error messages. */
  tail: string[] = [];
  /** JSON log lines whose `msg` is in `keep` (e.g. "node started"). */
  kept: Record<string, unknown>[] = [];
  keep = new Set(["node started", "job attempt failed", "job crashed", "reseed failed"]);
  spawnedAt = 0;
  private lineWaiters: { msg: string; resolve: (l: Record<string, unknown>) => void }[] = [];

  private constructor(
    readonly basePath: string,
    readonly port: number,
    readonly torrentPort: number,
    readonly env: Record<string, string>,
    readonly cmd: string[],
  ) {
    super();
  }

  static async start(opts: ServiceOptions = {}): Promise<Service> {
    const basePath = opts.basePath ?? (await tmpDir("pt-bench-svc-"));
    const port = opts.port ?? (await freePort());
    const torrentPort = opts.torrentPort ?? (await freePort());
    const env = {
      ...baseEnv(),
      PORT: String(port),
      STORAGE__BASE_PATH: basePath,
      TORRENT__LISTEN_PORT: String(torrentPort),
      ...opts.env,
    };
    const cmd = opts.cmd ?? (process.env.BENCH_SERVICE_CMD?.split(/\s+/) || [CLI, "serve"]);
    const s = new Service(basePath, port, torrentPort, env, cmd);
    await s.launch();
    return s;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get pid(): number {
    return this.proc?.pid ?? 0;
  }

  /** Spawn (again, same storage and ports) and wait until /v1/health answers. */
  async launch(opts: { until?: (health: any) => boolean; timeoutMs?: number; pollMs?: number } = {}) {
    this.tail = [];
    this.kept = [];
    this.spawnedAt = performance.now();
    this.proc = track(
      spawn(this.cmd, {
        cwd: ROOT,
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/tmp", ...this.env },
        stdin: "ignore",
        stdout: "pipe",
        stderr: "pipe",
      }),
    );
    void this.collect(this.proc.stdout);
    void this.collect(this.proc.stderr);
    const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
    const until = opts.until ?? (() => true);
    while (Date.now() < deadline) {
      if (this.proc.exitCode !== null)
        throw new Error(`service exited with ${this.proc.exitCode}:\n${this.tail.join("\n")}`);
      try {
        const res = await fetch(`${this.url}/v1/health`);
        const body = await res.json();
        if (until(body)) return performance.now() - this.spawnedAt;
      } catch {
        /* not up yet */
      }
      await Bun.sleep(opts.pollMs ?? 20);
    }
    throw new Error(`service not ready in time:\n${this.tail.join("\n")}`);
  }

  private async collect(stream: ReadableStream<Uint8Array>) {
    const dec = new TextDecoder();
    let buf = "";
    const reader = stream.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let nl = buf.indexOf("\n");
      while (nl >= 0) {
        this.onLine(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        nl = buf.indexOf("\n");
      }
    }
  }

  private onLine(line: string) {
    this.tail.push(line);
    if (this.tail.length > 60) this.tail.shift();
    if (!line.startsWith("{")) return;
    // Cheap filter before parsing: most lines are per-request logs.
    if (
      !line.includes('"msg":"node started"') &&
      !this.lineWaiters.length &&
      ![...this.keep].some((k) => line.includes(k))
    )
      return;
    try {
      const obj = JSON.parse(line) as Record<string, unknown>;
      if (this.keep.has(String(obj.msg))) this.kept.push(obj);
      for (const w of this.lineWaiters.splice(0)) {
        if (w.msg === obj.msg) w.resolve(obj);
        else this.lineWaiters.push(w);
      }
    } catch {
      /* not JSON */
    }
  }

  /** Resolves with the first log line with this `msg` seen from now on (or already kept). */
  waitForLine(msg: string): Promise<Record<string, unknown>> {
    const seen = this.kept.find((l) => l.msg === msg);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => this.lineWaiters.push({ msg, resolve }));
  }

  protected get token(): string {
    return TOKEN;
  }

  /** Poll every `pollMs` until a final state; throws on error/cancelled or timeout. */
  async waitReady(id: string, pollMs = 5, timeoutMs = 120_000): Promise<Record<string, any>> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const st = await this.status(id);
      if (st.status === "ready") return st;
      if (st.status === "error" || st.status === "cancelled")
        throw new Error(`request ${id} ended ${st.status}: ${st.error_message}`);
      if (performance.now() > deadline)
        throw new Error(`request ${id} not ready in time: ${JSON.stringify(st)}`);
      await Bun.sleep(pollMs);
    }
  }

  async torrent(id: string): Promise<Uint8Array> {
    const res = await this.api(`/v1/requests/${id}/torrent`);
    if (res.status !== 200) throw new Error(`torrent failed: ${res.status}`);
    return new Uint8Array(await res.arrayBuffer());
  }

  async metrics(): Promise<string> {
    return (await fetch(`${this.url}/metrics`)).text();
  }

  async health(): Promise<any> {
    return (await fetch(`${this.url}/v1/health`)).json();
  }

  /** A line of /proc/<pid>/status in kB (VmHWM = peak RSS, VmRSS = current). */
  procStatusKb(field: "VmHWM" | "VmRSS"): number {
    try {
      const m = readFileSync(`/proc/${this.pid}/status`, "utf8").match(
        new RegExp(`^${field}:\\s+(\\d+) kB`, "m"),
      );
      return m ? Number(m[1]) : Number.NaN;
    } catch {
      return Number.NaN;
    }
  }

  /** utime+stime of the service process in ms (from /proc/<pid>/stat). */
  cpuMs(): number {
    try {
      const stat = readFileSync(`/proc/${this.pid}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const tick = 100; // USER_HZ on Linux
      return ((Number(f[11]) + Number(f[12])) * 1000) / tick;
    } catch {
      return Number.NaN;
    }
  }

  /** SIGTERM, wait up to 15 s, then SIGKILL. */
  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    p.kill("SIGTERM");
    const t = setTimeout(() => p.kill("SIGKILL"), 15_000);
    await p.exited;
    clearTimeout(t);
    this.proc = null;
  }
}

// ---------- deterministic files and a fast file origin ----------

/** Write PatternBody(size, seed) (test/support/origin.ts) to `path`; returns its byte count. */
export async function writePatternFile(path: string, size: number, seed: number): Promise<void> {
  const body = new PatternBody(size, seed);
  const w = Bun.file(path).writer({ highWaterMark: 4 * MiB });
  for (const c of body.chunks()) {
    w.write(c);
  }
  await w.end();
}

export interface FileOrigin {
  url(path: string): string;
  stop(): void;
}

/**
 * A loopback origin that serves files with Bun.file (sendfile), so a 1 GiB body costs the origin
 * almost no CPU and the pipeline, not the origin, is what gets measured.
 */
export function fileOrigin(files: Record<string, { path: string; type: string }>): FileOrigin {
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeout: 0,
    fetch(req) {
      const f = files[new URL(req.url).pathname];
      if (!f) return new Response("not found", { status: 404 });
      return new Response(Bun.file(f.path), { headers: { "content-type": f.type } });
    },
  });
  atExit(() => server.stop(true));
  return {
    url: (p) => `http://127.0.0.1:${server.port}${p}`,
    stop: () => server.stop(true),
  };
}

/** Run a command to completion; stdout+stderr, exit code, wall ms. */
export async function run(
  cmd: string[],
  opts: { timeoutMs?: number; cwd?: string } = {},
): Promise<{ code: number | null; out: string; ms: number }> {
  const t0 = performance.now();
  const p = track(spawn(cmd, { stdout: "pipe", stderr: "pipe", stdin: "ignore", cwd: opts.cwd }));
  const timer = setTimeout(() => p.kill("SIGKILL"), opts.timeoutMs ?? 120_000);
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  const code = await p.exited;
  clearTimeout(timer);
  return { code, out: out + err, ms: performance.now() - t0 };
}
