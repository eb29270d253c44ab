/**
 * Benchmark 6: GET /v1/requests/export of a large history, and whether the service's memory grows
 * with it. The export is streamed in keyset batches (src/requests/export.ts), so the peak should
 * not depend on the row count.
 *
 * For each history size (ROWS, default 10000,100000,1000000) a fresh service (bin/proxytorrent serve) is
 * started on a database already holding that many requests of the bench token's tenant (written
 * with one INSERT … SELECT before the start). After a warm-up export that matches nothing, each
 * format is downloaded once by a client that counts bytes and lines without keeping them; before
 * each download the service's peak RSS is reset (`echo 5 > /proc/<pid>/clear_refs`), so VmHWM after
 * it is the peak during that export alone.
 *
 * Reference, same run: the service's RSS just before the export (what the peak is compared with)
 * and the size of the body (what a service that built the whole reply in memory would hold at least).
 *
 * Peak RSS counts garbage not yet collected as well as live objects, and how much garbage JSC lets
 * pile up depends on the machine's RAM (its heap growth function applies from 16 GiB on, option
 * heapGrowthFunctionThresholdInMB): in a 1,000,000-request export on the 23.5 GiB reference machine
 * BUN_JSC_logGC=1 showed a young-generation collection every ~33 MiB allocated and a full one when
 * the heap reached ~72 MiB (~17 MiB left after it); sized as on 8 GiB, every ~16.5 MiB and at
 * ~40 MiB. The piled-up garbage rises over the first seconds of a long export, then levels off. So the
 * service runs under bench/serve-heap-probe.ts (the same `serve`, plus a loopback port that runs a
 * full collection and answers the live JS heap): after each export the live heap after a full GC
 * is what shows whether anything is kept per row. The largest size's ndjson export is also run once
 * with BUN_JSC_forceRAMSize=8 GiB, i.e. with JSC sizing its heap as on a host of 8 GiB.
 *
 *   npx bun bench/export.ts            (ROWS=10000,100000 to change)
 */
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { sql } from "drizzle-orm";
import { openDatabase, runMigrations } from "../seeder/process/database";
import { loadConfig } from "../src/config";
import { fetchJobs, fetchRequests } from "../src/db/schema";
import {
  appendResults,
  BUN,
  fmt,
  freePort,
  log,
  MiB,
  ROOT,
  type Row,
  Service,
  TOKEN,
  tmpDir,
  waitForQuiet,
} from "./lib";

await waitForQuiet();

const SIZES = (process.env.ROWS ?? "10000,100000,1000000,2000000").split(",").map(Number);
/** JSC's RAM size as on a smaller host (its heap growth function applies from 16 GiB on). */
const SMALL_HOST_RAM = 8 * 1024 * MiB;
const FORMATS = ["csv", "ndjson", "json"] as const;
// The principal a static bearer token gets (src/api/middleware/auth.ts): its requests' user_id.
const TENANT = `token:${createHash("sha256").update(TOKEN).digest("hex").slice(0, 16)}`;

/** A storage directory whose database holds `n` requests of TENANT, one ready job behind them all. */
async function history(n: number): Promise<{ dir: string; now: number }> {
  const dir = await tmpDir("pt-bench-export-");
  const { client, db } = await openDatabase(loadConfig({ STORAGE__BASE_PATH: dir }));
  await runMigrations(db);
  const now = Date.now();
  const jobId = crypto.randomUUID();
  await db.insert(fetchJobs).values({
    id: jobId,
    fingerprint: `bench-${jobId}`,
    status: "ready",
    url: "https://example.test/bench",
    method: "GET",
    createdAt: now,
    updatedAt: now,
    completedAt: now,
    contentHash: "ab".repeat(32),
    contentSize: 16384,
    contentType: "text/html",
    infohash: "cd".repeat(20),
  });
  // Realistic row widths: a ~70-character URL with a query, a UUID, every timestamp set.
  await db.run(sql`
    WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ${n - 1})
    INSERT INTO ${fetchRequests} (id, job_id, user_id, url, method, ttl, created_at)
    SELECT lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2)
             || '-8' || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6))),
           ${jobId}, ${TENANT}, 'https://www.example.test/articles/' || i || '/index.html?utm_source=bench&page=' || (i % 97),
           'GET', 0, ${now} - i * 1000
    FROM n`);
  client.close();
  return { dir, now };
}

interface Measured {
  bytes: number;
  lines: number;
  ms: number;
  rssBeforeKb: number;
  peakKb: number;
  anonBeforeKb: number;
  /** Highest RssAnon seen by sampling every 2 ms (the heap; RSS also counts mapped files). */
  anonPeakKb: number;
  /** After the export, once a full GC has run: what is still alive, and the RSS then. */
  after: HeapAfterGc;
}

interface HeapAfterGc {
  heapBytes: number;
  objects: number;
  rssKb: number;
}

/** The service under bench/serve-heap-probe.ts, and its probe: a full GC, then the live heap. */
async function startProbed(dir: string, env: Record<string, string> = {}) {
  const probePort = await freePort();
  const svc = await Service.start({
    basePath: dir,
    cmd: [BUN, join(ROOT, "bench", "serve-heap-probe.ts")],
    env: { HEAP_PROBE_PORT: String(probePort), ...env },
  });
  const heapAfterGc = async (): Promise<HeapAfterGc> =>
    (await fetch(`http://127.0.0.1:${probePort}/`)).json() as Promise<HeapAfterGc>;
  return { svc, heapAfterGc };
}

function statusKb(pid: number, field: string): number {
  try {
    const m = readFileSync(`/proc/${pid}/status`, "utf8").match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"));
    return m ? Number(m[1]) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

async function exportOnce(
  svc: Service,
  heapAfterGc: () => Promise<HeapAfterGc>,
  query: string,
): Promise<Measured> {
  const rssBeforeKb = svc.procStatusKb("VmRSS");
  const anonBeforeKb = statusKb(svc.pid, "RssAnon");
  let anonPeakKb = anonBeforeKb;
  const sampler = setInterval(() => {
    anonPeakKb = Math.max(anonPeakKb, statusKb(svc.pid, "RssAnon"));
  }, 2);
  try {
    writeFileSync(`/proc/${svc.pid}/clear_refs`, "5");
  } catch {
    /* not Linux or not allowed: VmHWM is then the peak since start, said in the notes */
  }
  const t0 = performance.now();
  const res = await fetch(`${svc.url}/v1/requests/export?${query}`, {
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  if (res.status !== 200 || !res.body) throw new Error(`export ${query}: HTTP ${res.status}`);
  let bytes = 0;
  let lines = 0;
  const reader = res.body.getReader();
  for (let r = await reader.read(); !r.done; r = await reader.read()) {
    const chunk = r.value;
    bytes += chunk.byteLength;
    for (let i = 0; i < chunk.length; i++) if (chunk[i] === 10) lines++;
  }
  const ms = performance.now() - t0;
  clearInterval(sampler);
  anonPeakKb = Math.max(anonPeakKb, statusKb(svc.pid, "RssAnon"));
  const peakKb = svc.procStatusKb("VmHWM");
  const after = await heapAfterGc();
  return { bytes, lines, ms, rssBeforeKb, peakKb, anonBeforeKb, anonPeakKb, after };
}

/**
 * Backpressure: the client takes the first chunk and then reads nothing for PAUSE_MS. A stream
 * that reads ahead would spend the service's CPU and memory on the whole export meanwhile; this
 * one stops at what the socket buffers hold. Returns the service's CPU and RssAnon over the pause.
 */
const PAUSE_MS = 2000;
async function pausedClient(svc: Service, total: number) {
  // The same span with no export at all first: what the service spends idle (timers, and the
  // garbage collection the exports before left to do), so the pause is compared with it.
  const idleCpu0 = svc.cpuMs();
  await Bun.sleep(PAUSE_MS);
  const idleCpuMs = svc.cpuMs() - idleCpu0;
  const res = await fetch(`${svc.url}/v1/requests/export?format=ndjson`, {
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  const reader = res.body!.getReader();
  let bytes = (await reader.read()).value?.byteLength ?? 0;
  await Bun.sleep(200); // let what the socket buffers hold be written
  const cpu0 = svc.cpuMs();
  const anon0 = statusKb(svc.pid, "RssAnon");
  await Bun.sleep(PAUSE_MS);
  const paused = { cpuMs: svc.cpuMs() - cpu0, anonKb: statusKb(svc.pid, "RssAnon") - anon0 };
  const cpu1 = svc.cpuMs();
  for (let r = await reader.read(); !r.done; r = await reader.read()) bytes += r.value.byteLength;
  return { ...paused, idleCpuMs, restCpuMs: svc.cpuMs() - cpu1, bytes, total };
}

const results = new Map<string, Measured>();
let pause: Awaited<ReturnType<typeof pausedClient>> | null = null;
let smallHost: Measured | null = null;
const idle = new Map<number, HeapAfterGc>();
for (const n of SIZES) {
  const { dir, now } = await history(n);
  const { svc, heapAfterGc } = await startProbed(dir);
  // Warm-up: every format over the newest 2,000 requests (the code paths compiled, the allocator grown).
  const since = encodeURIComponent(new Date(now - 2_000_000).toISOString());
  try {
    for (const format of FORMATS) await exportOnce(svc, heapAfterGc, `format=${format}&since=${since}`);
    idle.set(n, await heapAfterGc());
    for (const format of FORMATS) {
      const m = await exportOnce(svc, heapAfterGc, `format=${format}`);
      // csv: header + one line per row (no URL here holds a newline); ndjson: one per row; json: `[`, rows, `]`.
      const rows = format === "csv" ? m.lines - 1 : format === "json" ? m.lines - 2 : m.lines;
      if (rows !== n) throw new Error(`${format} export of ${n} rows had ${rows}`);
      results.set(`${n}/${format}`, m);
      log(
        `${n} rows ${format}: ${fmt(m.bytes / MiB)} MiB in ${fmt(m.ms, 0)} ms; RSS before ${fmt(m.rssBeforeKb / 1024)} MiB, peak ${fmt(m.peakKb / 1024)} MiB; RssAnon ${fmt(m.anonBeforeKb / 1024)} -> peak ${fmt(m.anonPeakKb / 1024)} MiB; after a full GC: live JS heap ${fmt(m.after.heapBytes / MiB)} MiB (${m.after.objects} objects), RSS ${fmt(m.after.rssKb / 1024)} MiB`,
      );
    }
    if (n === SIZES.at(-1)) pause = await pausedClient(svc, n);
  } finally {
    await svc.stop();
  }
  if (n === SIZES.at(-1)) {
    const probed = await startProbed(dir, { BUN_JSC_forceRAMSize: String(SMALL_HOST_RAM) });
    try {
      for (const format of FORMATS)
        await exportOnce(probed.svc, probed.heapAfterGc, `format=${format}&since=${since}`);
      smallHost = await exportOnce(probed.svc, probed.heapAfterGc, "format=ndjson");
      if (smallHost.lines !== n) throw new Error(`ndjson export of ${n} rows had ${smallHost.lines}`);
      log(
        `${n} rows ndjson, JSC sized as on 8 GiB: peak ${fmt(smallHost.peakKb / 1024)} MiB in ${fmt(smallHost.ms, 0)} ms`,
      );
    } finally {
      await probed.svc.stop();
    }
  }
}

const mib = (kb: number) => `${fmt(kb / 1024)} MiB`;
const live = (h: HeapAfterGc) =>
  `${fmt(h.heapBytes / MiB)} MiB (${h.objects.toLocaleString("en-US")} objects)`;
const rows: Row[] = [];
for (const format of FORMATS) {
  for (const n of SIZES) {
    const m = results.get(`${n}/${format}`)!;
    rows.push({
      figure: `${format} export of ${n.toLocaleString("en-US")} requests: live JS heap after a full GC once it is done; service peak RSS during it (VmHWM), above the RSS before it; peak RssAnon (sampled), above before`,
      measured: `live ${live(m.after)}; ${mib(m.peakKb)}, +${mib(m.peakKb - m.rssBeforeKb)}; ${mib(m.anonPeakKb)}, +${mib(m.anonPeakKb - m.anonBeforeKb)}; ${fmt(m.ms, 0)} ms (${Math.round(n / (m.ms / 1000)).toLocaleString("en-US")} rows/s)`,
      reference: `live heap after the warm-up ${live(idle.get(n)!)}; RSS before ${mib(m.rssBeforeKb)} (RssAnon ${mib(m.anonBeforeKb)}), after the GC ${mib(m.after.rssKb)}; body ${fmt(m.bytes / MiB)} MiB`,
      target: "live heap not growing with the row count",
    });
  }
}
const [small, large] = [SIZES[0]!, SIZES.at(-1)!];
const growth = FORMATS.map((f) => {
  const a = results.get(`${small}/${f}`)!;
  const b = results.get(`${large}/${f}`)!;
  return `${f} ${mib(b.peakKb - a.peakKb)} (RssAnon ${mib(b.anonPeakKb - a.anonPeakKb)})`;
});

appendResults({
  title: `6. Export of the request history (${SIZES.map((n) => n.toLocaleString("en-US")).join(" vs ")} requests)`,
  setup: [
    `one fresh service (bin/proxytorrent serve, defaults) per history size, on a database pre-filled with that many requests of the bench token's tenant (one INSERT … SELECT); warm-up: each format over the newest 2,000 requests; RSS after it and a full GC: ${SIZES.map((n) => `${n.toLocaleString("en-US")}: ${mib(idle.get(n)!.rssKb)}`).join(", ")}`,
    "each format downloaded once, in this order: csv, ndjson, json; the client (fetch in the benchmark process) counts bytes and newlines and keeps nothing; the row count is checked",
    "the service runs under bench/serve-heap-probe.ts (the same `serve` plus a loopback probe port); after the warm-up and after each download the probe runs a full GC (Bun.gc(true)) and reads the live JS heap (bun:jsc heapStats) and the RSS, so each download starts from a collected heap",
    "peak = VmHWM from /proc/<pid>/status after the download, with /proc/<pid>/clear_refs reset (5) just before it; RssAnon (heap, without mapped files) sampled every 2 ms during the download",
  ],
  rows: [
    ...rows,
    {
      figure: `ndjson export of ${large.toLocaleString("en-US")} requests, JSC sizing its heap as on an 8 GiB host (BUN_JSC_forceRAMSize): service peak RSS, above before`,
      measured: smallHost
        ? `${mib(smallHost.peakKb)}, +${mib(smallHost.peakKb - smallHost.rssBeforeKb)}; ${fmt(smallHost.ms, 0)} ms; live ${live(smallHost.after)}`
        : "n/a",
      reference: (() => {
        const a = results.get(`${large}/ndjson`)!;
        return `the same export with this machine's RAM: ${mib(a.peakKb)}, +${mib(a.peakKb - a.rssBeforeKb)}; ${fmt(a.ms, 0)} ms`;
      })(),
      target: "–",
    },
    {
      figure: `ndjson export of ${large.toLocaleString("en-US")} requests, client pauses ${PAUSE_MS} ms after its first chunk: service CPU and RssAnon change during the pause`,
      measured: pause
        ? `${fmt(pause.cpuMs, 0)} ms CPU; ${pause.anonKb >= 0 ? "+" : ""}${mib(pause.anonKb)}`
        : "n/a",
      reference: pause
        ? `the same ${PAUSE_MS} ms idle just before: ${fmt(pause.idleCpuMs, 0)} ms CPU; the rest of that export once reading resumed: ${fmt(pause.restCpuMs, 0)} ms CPU`
        : "–",
      target: "no reading ahead",
    },
  ],
  notes: [
    `peak RSS of the ${large.toLocaleString("en-US")}-row export minus that of the ${small.toLocaleString("en-US")}-row one: ${growth.join(", ")}; the body grows ${Math.round(large / small)}×`,
    `live JS heap after a full GC once each export is done, ${small.toLocaleString("en-US")} vs ${large.toLocaleString("en-US")} requests: ${FORMATS.map((f) => `${f} ${fmt(results.get(`${small}/${f}`)!.after.heapBytes / MiB)} vs ${fmt(results.get(`${large}/${f}`)!.after.heapBytes / MiB)} MiB`).join(", ")}: nothing is kept per row; the peak RSS above it is garbage not yet collected, which the full GC gives back`,
    "paused-client row: while the client reads nothing the service spends no more CPU than idle, so it reads nothing ahead and holds at most a batch or two",
  ],
});
