/**
 * Benchmark 4: GET /v1/requests/{id} throughput (an authenticated status read of a ready request)
 * with a load generator: wrk (`apt-get install -y wrk`) when present, else a Bun loop of
 * CONNECTIONS concurrent keep-alive fetches.
 *
 * References, same run, same load generator and settings:
 *  - `GET /` of the same service (Hono routing and the per-request log line, no auth, no database);
 *    the status read's target is half its rate;
 *  - a static `Bun.serve` "hello" in its own process (the ceiling of Bun's HTTP server here).
 * Measured with the service's defaults (rate limiting on, INFO logs) with the static bearer token and
 * with an API key (`keys create`), then with rate limiting off, then also with
 * MONITORING__LOG_LEVEL=WARNING (no per-request log line), to show what each costs.
 *
 *   npx bun bench/status-throughput.ts     (DURATION_S=5 CONNECTIONS=64 to change)
 */
import { createHash } from "node:crypto";
import { spawn } from "bun";
import { startOrigin, textRoute } from "../test/support/origin";
import {
  appendResults,
  BUN,
  CLI,
  fmt,
  freePort,
  hasCommand,
  log,
  percentile,
  type Row,
  run,
  Service,
  TOKEN,
  toolVersion,
  track,
  waitForQuiet,
} from "./lib";

await waitForQuiet();

const DURATION_S = Number(process.env.DURATION_S ?? 5);
const CONNECTIONS = Number(process.env.CONNECTIONS ?? 64);
const WRK = hasCommand("wrk") && process.env.NO_WRK !== "1";

interface Load {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
}

function wrkMs(v: string, unit: string): number {
  const n = Number(v);
  return unit === "us" ? n / 1000 : unit === "s" ? n * 1000 : n;
}

/** `auth`: true for the static TOKEN, or the bearer value to send. */
async function load(url: string, auth: boolean | string, seconds = DURATION_S): Promise<Load> {
  const bearer = auth === true ? TOKEN : auth || null;
  if (WRK) {
    const args = ["wrk", "-t1", `-c${CONNECTIONS}`, `-d${seconds}s`, "--latency"];
    if (bearer) args.push("-H", `Authorization: Bearer ${bearer}`);
    const r = await run([...args, url], { timeoutMs: (seconds + 30) * 1000 });
    const rps = Number(r.out.match(/Requests\/sec:\s+([\d.]+)/)?.[1] ?? Number.NaN);
    const pct = (p: string) => {
      const m = r.out.match(new RegExp(`\\s${p}%\\s+([\\d.]+)(us|ms|s)`));
      return m ? wrkMs(m[1]!, m[2]!) : Number.NaN;
    };
    const non2xx = Number(r.out.match(/Non-2xx or 3xx responses:\s+(\d+)/)?.[1] ?? 0);
    const sockErr = r.out.match(/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/);
    const errors = non2xx + (sockErr ? sockErr.slice(1).reduce((a, b) => a + Number(b), 0) : 0);
    return { rps, p50: pct("50"), p99: pct("99"), errors };
  }
  // Fallback: CONNECTIONS loops of sequential keep-alive fetches.
  const headers = bearer ? { authorization: `Bearer ${bearer}` } : undefined;
  const lat: number[] = [];
  let errors = 0;
  const end = performance.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      while (performance.now() < end) {
        const t = performance.now();
        const res = await fetch(url, { headers });
        await res.arrayBuffer();
        if (res.status !== 200) errors++;
        lat.push(performance.now() - t);
      }
    }),
  );
  return { rps: lat.length / seconds, p50: percentile(lat, 50), p99: percentile(lat, 99), errors };
}

const origin = await startOrigin({ "/page.txt": textRoute("hello from the origin\n") });

async function statusTarget(env: Record<string, string>) {
  const svc = await Service.start({ env });
  const id = await svc.create({ url: origin.url("/page.txt") });
  await svc.waitReady(id, 20);
  return { svc, url: `${svc.url}/v1/requests/${id}` };
}

/** An API key made by the CLI against the service's database, in the static token's tenant. */
async function apiKey(svc: Service): Promise<string> {
  const tenant = `token:${createHash("sha256").update(TOKEN).digest("hex").slice(0, 16)}`;
  const p = track(
    spawn([CLI, "keys", "create", "--name", "bench", "--tenant", tenant, "--json"], {
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/tmp", ...svc.env },
      stdout: "pipe",
      stderr: "inherit",
    }),
  );
  const out = await new Response(p.stdout).text();
  if ((await p.exited) !== 0) throw new Error("keys create failed");
  return (JSON.parse(out) as { key: string }).key;
}

const pctOf = (a: Load, b: Load) => `${fmt((100 * a.rps) / b.rps, 0)} % of GET /`;

function fmtLoad(l: Load): string {
  return `${fmt(l.rps, 0)}/s (p50 ${fmt(l.p50, 2)} ms, p99 ${fmt(l.p99, 2)} ms${l.errors ? `, ${l.errors} errors` : ""})`;
}

// ---- the service with its defaults (rate limiting on: a failure-bucket read per request) ----
const a = await statusTarget({ RATE_LIMIT__RATE_LIMIT_ENABLED: "true" });
await load(a.url, true, 1); // warm-up
const cpu0 = a.svc.cpuMs();
const status = await load(a.url, true);
const statusCpu = (a.svc.cpuMs() - cpu0) / (status.rps * DURATION_S);
const key = await apiKey(a.svc);
await load(a.url, key, 1);
const cpuK = a.svc.cpuMs();
const statusKey = await load(a.url, key);
const statusKeyCpu = (a.svc.cpuMs() - cpuK) / (statusKey.rps * DURATION_S);
const cpuR = a.svc.cpuMs();
const root = await load(`${a.svc.url}/`, false);
const rootCpu = (a.svc.cpuMs() - cpuR) / (root.rps * DURATION_S);
const health = await load(`${a.svc.url}/v1/health`, false);
await a.svc.stop();
log(
  `status ${fmtLoad(status)} (${pctOf(status, root)}); with an API key ${fmtLoad(statusKey)} (${pctOf(statusKey, root)}); GET / ${fmtLoad(root)}; health ${fmtLoad(health)}`,
);

// ---- the same without rate limiting, then also without the per-request log line ----
async function variant(env: Record<string, string>) {
  const v = await statusTarget(env);
  await load(v.url, true, 1);
  const c0 = v.svc.cpuMs();
  const l = await load(v.url, true);
  const cpu = (v.svc.cpuMs() - c0) / (l.rps * DURATION_S);
  await v.svc.stop();
  return { l, cpu };
}
const noLimit = await variant({ RATE_LIMIT__RATE_LIMIT_ENABLED: "false" });
log(`status, rate limiting off: ${fmtLoad(noLimit.l)}`);
const quietLogs = await variant({
  RATE_LIMIT__RATE_LIMIT_ENABLED: "false",
  MONITORING__LOG_LEVEL: "WARNING",
});
log(`status, rate limiting off, logs at WARNING: ${fmtLoad(quietLogs.l)}`);

// ---- static Bun.serve hello ----
const port = await freePort();
const hello = track(
  spawn(
    [
      BUN,
      "-e",
      `Bun.serve({ hostname: "127.0.0.1", port: ${port}, fetch: () => new Response("hello") }); console.log("up");`,
    ],
    { stdout: "pipe", stderr: "inherit" },
  ),
);
for (let i = 0; i < 100; i++) {
  try {
    await fetch(`http://127.0.0.1:${port}/`);
    break;
  } catch {
    await Bun.sleep(50);
  }
}
await load(`http://127.0.0.1:${port}/`, false, 1);
const ceiling = await load(`http://127.0.0.1:${port}/`, false);
hello.kill("SIGTERM");
await hello.exited;
await origin.close();
log(`Bun.serve hello: ${fmtLoad(ceiling)}`);

const rows: Row[] = [
  {
    figure:
      "GET /v1/requests/{id} (bearer token, ready request), service defaults (rate limiting on, INFO logs)",
    measured: `${fmtLoad(status)} = ${pctOf(status, root)}; service CPU ${fmt(statusCpu * 1000, 0)} µs/request`,
    reference: `static Bun.serve hello: ${fmtLoad(ceiling)}; GET / of the service: ${fmtLoad(root)}, service CPU ${fmt(rootCpu * 1000, 0)} µs/request`,
    target: "≥ 5,000/s and ≥ 50 % of GET /",
  },
  {
    figure:
      "the same with an API key (`keys create`) instead of the static token, SECURITY__API_KEY_CACHE_SECONDS default",
    measured: `${fmtLoad(statusKey)} = ${pctOf(statusKey, root)}; service CPU ${fmt(statusKeyCpu * 1000, 0)} µs/request`,
    reference: "as above",
    target: "≥ 50 % of GET /",
  },
  {
    figure: "the same, RATE_LIMIT__RATE_LIMIT_ENABLED=false",
    measured: `${fmtLoad(noLimit.l)}; service CPU ${fmt(noLimit.cpu * 1000, 0)} µs/request`,
    reference: "as above",
  },
  {
    figure: "the same, rate limiting off and MONITORING__LOG_LEVEL=WARNING (no per-request log line)",
    measured: `${fmtLoad(quietLogs.l)}; service CPU ${fmt(quietLogs.cpu * 1000, 0)} µs/request`,
    reference: "as above",
  },
  {
    figure: "GET /v1/health (database, queue, storage probe, seeding)",
    measured: fmtLoad(health),
  },
];
appendResults({
  title: "4. GET /v1/requests/{id} throughput",
  setup: [
    WRK
      ? `load: ${toolVersion(["wrk", "-v"], /wrk (\S+)/)} -t1 -c${CONNECTIONS} -d${DURATION_S}s --latency (1 s warm-up first), keep-alive, 127.0.0.1`
      : `load: ${CONNECTIONS} concurrent keep-alive Bun fetch loops for ${DURATION_S} s (wrk not installed)`,
    "service: bin/proxytorrent serve, one ready 22-byte request, a fresh service per row; service CPU from /proc/<pid>/stat (steadier than req/s on a shared 2-core machine)",
    "Bun.serve hello: `bun -e` in its own process; the load generator shares the 2 cores with the server in every case",
  ],
  rows,
});
process.exit(0);
