/**
 * Benchmark 1: small objects (16 KiB) in embedded mode.
 *
 *  - sequential POST -> ready latency over N distinct URLs (client side: POST sent until a status
 *    poll every POLL_MS sees `ready`; server side: completed_at - created_at), with the split of
 *    where a job's time goes (queue wait, fetch+store, package+seed+complete) from the job's logs;
 *  - throughput of C concurrent distinct requests: all POSTed at once; the time from the first POST
 *    to the last `completed_at` the service records (per NODE__CONCURRENCY in NODE_CONCURRENCIES).
 *    Waiting uses one status GET every 50 ms, not /metrics: a scrape costs the service ~10 ms of
 *    event loop under Bun (see docs/performance.md), which would distort what is measured.
 *
 * Reference, same run: a direct fetch of the same origin URLs from this process (sequential
 * latency and C concurrent), i.e. what the origin and loopback HTTP cost by themselves.
 *
 *   npx bun bench/small-objects.ts            (SEQ=100 CONC=200 POLL_MS=5 to change)
 */
import { PatternBody, startOrigin } from "../test/support/origin";
import { appendResults, fmt, log, percentile, type Row, Service, waitForQuiet } from "./lib";

await waitForQuiet();

const SEQ = Number(process.env.SEQ ?? 100);
const CONC = Number(process.env.CONC ?? 200);
const POLL_MS = Number(process.env.POLL_MS ?? 5);
const SIZE = 16 * 1024;
const WARMUP = 5;
/** NODE__CONCURRENCY values to run the concurrent test with (the default 8 first). */
const CONCURRENCIES = (process.env.NODE_CONCURRENCIES ?? "8,32").split(",").map(Number);

let seq = 0;
const origin = await startOrigin({
  "/obj.txt": (req, res) => {
    const i = Number(new URL(req.target, "http://x").searchParams.get("i") ?? 0);
    const body = new PatternBody(SIZE, 1000 + i).bytes();
    res.writeHead(200, { "content-type": "text/plain", "content-length": String(body.length) });
    res.end(body);
  },
});
const nextUrl = () => origin.url(`/obj.txt?i=${seq++}`);

const stats = (xs: number[]) => ({
  p50: percentile(xs, 50),
  p90: percentile(xs, 90),
  p99: percentile(xs, 99),
});
const ms = (x: number) => `${fmt(x, 1)} ms`;
const perMin = (n: number, wallMs: number) => (n / wallMs) * 60_000;

// ---- reference: direct fetch of the same origin ----
async function directFetch(url: string) {
  const res = await fetch(url);
  await res.arrayBuffer();
}
for (let i = 0; i < WARMUP; i++) await directFetch(nextUrl());
const refLat: number[] = [];
for (let i = 0; i < SEQ; i++) {
  const url = nextUrl();
  const t0 = performance.now();
  await directFetch(url);
  refLat.push(performance.now() - t0);
}
const refUrls = Array.from({ length: CONC }, nextUrl);
let t0 = performance.now();
await Promise.all(refUrls.map(directFetch));
const refConcMs = performance.now() - t0;
const ref = stats(refLat);
log(
  `direct fetch: p50 ${ms(ref.p50)} p90 ${ms(ref.p90)} p99 ${ms(ref.p99)}; ${CONC} concurrent in ${ms(refConcMs)}`,
);

// ---- sequential, default settings ----
const svc = await Service.start();
for (const k of ["fetch started", "fetch finished", "job ready"]) svc.keep.add(k);
for (let i = 0; i < WARMUP; i++) await svc.waitReady(await svc.create({ url: nextUrl() }), POLL_MS);
svc.kept = [];
const clientLat: number[] = [];
const postLat: number[] = [];
const ids: string[] = [];
for (let i = 0; i < SEQ; i++) {
  const url = nextUrl();
  const t = performance.now();
  const id = await svc.create({ url });
  postLat.push(performance.now() - t);
  await svc.waitReady(id, POLL_MS);
  clientLat.push(performance.now() - t);
  ids.push(id);
}
// Server-side split, from status timestamps and the job's own log lines.
const serverLat: number[] = [];
const queueWait: number[] = [];
const fetchMs: number[] = [];
const afterFetch: number[] = [];
const byJob = new Map<string, Record<string, any>>();
for (const l of svc.kept) {
  const j = byJob.get(String(l.job_id)) ?? {};
  j[String(l.msg)] = l;
  byJob.set(String(l.job_id), j);
}
const jobLines = [...byJob.values()];
const seqStatus = await Promise.all(ids.map((id) => svc.status(id)));
for (const st of seqStatus) serverLat.push(Date.parse(st.completed_at) - Date.parse(st.created_at));
// One request in flight at a time: the n-th job started is the n-th request.
jobLines.sort((a, b) => Date.parse(a["fetch started"]?.time) - Date.parse(b["fetch started"]?.time));
for (let i = 0; i < jobLines.length && i < ids.length; i++) {
  const j = jobLines[i]!;
  const st = seqStatus[i]!;
  if (j["fetch started"]) queueWait.push(Date.parse(j["fetch started"].time) - Date.parse(st.created_at));
  if (j["fetch finished"]) fetchMs.push(Number(j["fetch finished"].ms));
  if (j["job ready"] && j["fetch finished"])
    afterFetch.push(Number(j["job ready"].ms) - Number(j["fetch finished"].ms));
}
await svc.stop();
const c = stats(clientLat);
const s = stats(serverLat);
log(`sequential POST->ready: p50 ${ms(c.p50)} p90 ${ms(c.p90)} p99 ${ms(c.p99)} (server ${ms(s.p50)})`);

// ---- concurrent, per NODE__CONCURRENCY ----
interface ConcResult {
  concurrency: number;
  wallMs: number;
  postMs: number;
  serverP50: number;
  serverP99: number;
  readyCount: number;
  cpuMs: number;
}
const concResults: ConcResult[] = [];
for (const nc of CONCURRENCIES) {
  const svc2 = await Service.start({ env: { NODE__CONCURRENCY: String(nc) } });
  for (let i = 0; i < WARMUP; i++) await svc2.waitReady(await svc2.create({ url: nextUrl() }), POLL_MS);
  const urls = Array.from({ length: CONC }, nextUrl);
  const cpu0 = svc2.cpuMs();
  const t0Epoch = Date.now();
  t0 = performance.now();
  const cids = await Promise.all(urls.map((url) => svc2.create({ url })));
  const postMs = performance.now() - t0;
  // Wait cheaply (one status GET every 50 ms, oldest unfinished first); the figures come from the
  // service's own created_at/completed_at, so the poll interval does not blur them.
  const deadline = performance.now() + 180_000;
  for (let i = 0; i < cids.length && performance.now() < deadline; ) {
    const st = await svc2.status(cids[i]!);
    if (st.status === "ready" || st.status === "error" || st.status === "cancelled") i++;
    else await Bun.sleep(50);
  }
  const cpuMs = svc2.cpuMs() - cpu0;
  const sts = await Promise.all(cids.map((id) => svc2.status(id)));
  const ready = sts.filter((x) => x.status === "ready");
  const lat = ready.map((x) => Date.parse(x.completed_at) - Date.parse(x.created_at));
  const lastDone = Math.max(...ready.map((x) => Date.parse(x.completed_at)));
  const wallMs = ready.length === CONC ? lastDone - t0Epoch : Number.NaN;
  concResults.push({
    concurrency: nc,
    wallMs,
    postMs,
    serverP50: percentile(lat, 50),
    serverP99: percentile(lat, 99),
    readyCount: lat.length,
    cpuMs,
  });
  log(
    `NODE__CONCURRENCY=${nc}: ${CONC} concurrent ready in ${ms(wallMs)} = ${fmt(perMin(CONC, wallMs), 0)}/min (${lat.length} ready)`,
  );
  await svc2.stop();
}
await origin.close();

const rows: Row[] = [
  {
    figure: `sequential POST→ready p50 / p90 / p99 (client, ${SEQ} distinct URLs)`,
    measured: `${ms(c.p50)} / ${ms(c.p90)} / ${ms(c.p99)}`,
    reference: `direct fetch of the same origin: ${ms(ref.p50)} / ${ms(ref.p90)} / ${ms(ref.p99)}`,
    target: "p50 ≤ 100 ms",
  },
  {
    figure: "sequential, server side (completed_at − created_at) p50 / p99",
    measured: `${ms(s.p50)} / ${ms(s.p99)}`,
  },
  {
    figure: "POST /v1/requests alone p50 / p99",
    measured: `${ms(percentile(postLat, 50))} / ${ms(percentile(postLat, 99))}`,
  },
  {
    figure: "where a job's time goes (p50): queue wait → fetch+store → package+seed+complete",
    measured: `${ms(percentile(queueWait, 50))} → ${ms(percentile(fetchMs, 50))} → ${ms(percentile(afterFetch, 50))}`,
  },
];
for (const r of concResults) {
  rows.push({
    figure: `${CONC} concurrent distinct requests, NODE__CONCURRENCY=${r.concurrency}`,
    measured: `${fmt(perMin(CONC, r.wallMs), 0)}/min (${ms(r.wallMs)} to all ready; server p50 ${ms(r.serverP50)}, p99 ${ms(r.serverP99)}; ${r.readyCount}/${CONC} ready; service CPU ${fmt(r.cpuMs / CONC, 1)} ms/request)`,
    reference: `direct fetch, ${CONC} concurrent: ${fmt(perMin(CONC, refConcMs), 0)}/min (${ms(refConcMs)})`,
    target: "≥ 3,000/min",
  });
}
appendResults({
  title: "1. Small objects (16 KiB), embedded mode",
  setup: [
    `bin/proxytorrent serve, fresh storage per service; RATE_LIMIT__RATE_LIMIT_ENABLED=false, MONITORING__LOG_LEVEL=INFO, other settings default (NODE__CONCURRENCY ${CONCURRENCIES.join(" / ")})`,
    `origin: node:http on 127.0.0.1 (test/support/origin.ts), 16 KiB PatternBody per URL, text/plain; ${WARMUP} warm-up requests per service`,
    `client latency = POST sent until a GET /v1/requests/{id} poll (every ${POLL_MS} ms) sees ready; throughput = ${CONC} POSTs at once; time from the first POST to the last completed_at the service records (waiting by one status poll every 50 ms); service CPU from /proc/<pid>/stat`,
  ],
  rows,
});
process.exit(0);
