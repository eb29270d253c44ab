/**
 * Benchmark: the cost of virus scanning (SCAN__CLAMD) on the 1 GiB pipeline of bench/large-object.ts,
 * measured beside the unscanned run in the same process: the same bytes, the same origin, one
 * fresh service per run (so no earlier verdict is reused), alternating unscanned / scanned.
 *
 * clamd is the machine's /usr/sbin/clamd, started here with only a one-line custom signature (the
 * official database needs freshclam, which never runs here) and its limits raised so that the whole
 * body is really scanned (StreamMaxLength, MaxScanSize, MaxFileSize 4000M). With the official
 * database clamd does more work per byte: this is the floor, the protocol and I/O cost.
 *
 * Reference, same run: the same file streamed to the same clamd with INSTREAM by the node's own
 * client (seeder/node/scan/clamd.ts), outside the service. Also measured: a scanned request for
 * bytes already found clean (the verdict is reused, nothing is sent).
 *
 *   npx bun bench/scan-cost.ts        (SIZE_MIB=1024 REPS=2 to change)
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ClamdClient } from "../seeder/node/scan/clamd";
import { bodySignature, startClamd } from "../test/support/clamd";
import {
  appendResults,
  fileOrigin,
  fmt,
  log,
  MiB,
  mbps,
  median,
  type Row,
  Service,
  tmpDir,
  waitForQuiet,
  writePatternFile,
} from "./lib";

await waitForQuiet();

const SIZE = Number(process.env.SIZE_MIB ?? 1024) * MiB;
const REPS = Number(process.env.REPS ?? 2);
const SEED = 42;

const dir = await tmpDir("pt-bench-scan-");
const file = join(dir, "large.bin");
await writePatternFile(file, SIZE, SEED);

const clamd = await startClamd(
  { "bench.ndb": bodySignature("ProxyTorrent.Bench.Never", "PROXYTORRENT-BENCH-PATTERN-NOT-IN-THE-BODY") },
  ["StreamMaxLength 4000M", "MaxScanSize 4000M", "MaxFileSize 4000M"].join("\n"),
);
const clamdCpuMs = () => {
  const stat = readFileSync(`/proc/${clamd.pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
};

// ---- reference: the client alone ----
const client = new ClamdClient(clamd.socket, 3_600_000);
const engine = await client.version();
await client.scanFile(file); // warm-up: clamd's first scan also sets up its engine
const direct: number[] = [];
for (let i = 0; i < REPS; i++) {
  const t = performance.now();
  const v = await client.scanFile(file);
  direct.push(performance.now() - t);
  if (v.infected) throw new Error(`clamd found ${v.signature} in the pattern body`);
  log(`direct INSTREAM #${i + 1}: ${fmt(direct.at(-1)!, 0)} ms`);
}

// ---- the pipeline, unscanned and scanned ----
const origin = fileOrigin({ "/large.bin": { path: file, type: "application/octet-stream" } });
const baseEnv = {
  FETCHER__MAX_SIZE: String(4 * SIZE),
  FETCHER__TOTAL_TIMEOUT: "3600",
  FETCHER__READ_TIMEOUT: "600",
  FETCHER__MIME_WHITELIST: "application/octet-stream,text/plain",
};
const scanEnv = {
  SCAN__CLAMD: clamd.socket,
  SCAN__TIMEOUT_MS: "3600000",
  SCAN__MAX_BYTES: String(4000 * MiB),
};

interface Run {
  totalMs: number;
  scanMs: number;
  cpuMs: number;
  clamdCpuMs: number;
  verdict: string | null;
}
async function once(svc: Service): Promise<Run> {
  svc.kept = [];
  const cpu0 = svc.cpuMs();
  const clamd0 = clamdCpuMs();
  const id = await svc.create({ url: origin.url("/large.bin"), ttl: 0 });
  const st = await svc.waitReady(id, 50, 3_600_000);
  const scanned = svc.kept.find((l) => l.msg === "virus scan: clean");
  return {
    totalMs: Date.parse(st.completed_at) - Date.parse(st.created_at),
    scanMs: Number(scanned?.ms ?? Number.NaN),
    cpuMs: svc.cpuMs() - cpu0,
    clamdCpuMs: clamdCpuMs() - clamd0,
    verdict: st.scan?.verdict ?? null,
  };
}

const plain: Run[] = [];
const scanned: Run[] = [];
let cached: Run | null = null;
for (let i = 0; i < REPS; i++) {
  for (const scan of [false, true]) {
    const svc = await Service.start({ env: { ...baseEnv, ...(scan ? scanEnv : {}) } });
    svc.keep.add("virus scan: clean");
    const r = await once(svc);
    (scan ? scanned : plain).push(r);
    log(
      `${scan ? "scanned  " : "unscanned"} #${i + 1}: ${fmt(r.totalMs, 0)} ms${scan ? ` (scan ${fmt(r.scanMs, 0)} ms, verdict ${r.verdict})` : ""}, service CPU ${fmt(r.cpuMs, 0)} ms, clamd CPU ${fmt(r.clamdCpuMs, 0)} ms`,
    );
    // The same bytes again on the same service: the clean verdict of this engine is reused.
    if (scan && i === REPS - 1) {
      cached = await once(svc);
      log(`scanned, verdict reused: ${fmt(cached.totalMs, 0)} ms`);
    }
    await svc.stop();
  }
}
origin.stop();
await clamd.stop();

const med = (rs: Run[], k: keyof Run) => median(rs.map((r) => Number(r[k])));
const rows: Row[] = [
  {
    figure: `POST→ready for ${SIZE / MiB} MiB, unscanned, ${REPS} runs: ${plain.map((r) => fmt(r.totalMs, 0)).join(" / ")} ms`,
    measured: `median ${fmt(med(plain, "totalMs"), 0)} ms = ${fmt(mbps(SIZE, med(plain, "totalMs")), 0)} MB/s`,
  },
  {
    figure: `POST→ready for ${SIZE / MiB} MiB, scanned (SCAN__CLAMD), ${REPS} runs: ${scanned.map((r) => fmt(r.totalMs, 0)).join(" / ")} ms`,
    measured: `median ${fmt(med(scanned, "totalMs"), 0)} ms = ${fmt(mbps(SIZE, med(scanned, "totalMs")), 0)} MB/s; +${fmt(med(scanned, "totalMs") - med(plain, "totalMs"), 0)} ms (${fmt(med(scanned, "totalMs") / med(plain, "totalMs"), 2)}× unscanned)`,
    reference: `unscanned ${fmt(med(plain, "totalMs"), 0)} ms (row above)`,
  },
  {
    figure: "of which the scan stage (VERSION + INSTREAM of the stored blob, median)",
    measured: `${fmt(med(scanned, "scanMs"), 0)} ms = ${fmt(mbps(SIZE, med(scanned, "scanMs")), 0)} MB/s`,
    reference: `the same file to the same clamd by the client alone: ${direct.map((x) => fmt(x, 0)).join(" / ")} ms (median ${fmt(median(direct), 0)} ms)`,
  },
  {
    figure: "CPU per run (median): service / clamd",
    measured: `scanned ${fmt(med(scanned, "cpuMs"), 0)} ms / ${fmt(med(scanned, "clamdCpuMs"), 0)} ms`,
    reference: `unscanned ${fmt(med(plain, "cpuMs"), 0)} ms / ${fmt(med(plain, "clamdCpuMs"), 0)} ms`,
  },
  {
    figure: "the same bytes again, clean verdict of this engine reused (one run)",
    measured: cached
      ? `${fmt(cached.totalMs, 0)} ms (verdict ${cached.verdict}, clamd CPU ${fmt(cached.clamdCpuMs, 0)} ms)`
      : "–",
    reference: `unscanned ${fmt(med(plain, "totalMs"), 0)} ms`,
  },
];
appendResults({
  title: `2b. The ${SIZE / MiB} MiB pipeline with virus scanning (clamd) beside it without`,
  setup: [
    `origin: Bun.serve + Bun.file (sendfile) on 127.0.0.1 serving PatternBody(${SIZE}, ${SEED}) from a temp file, application/octet-stream`,
    "service: as in section 2, a fresh service (storage, database) per run, alternating unscanned / scanned; scanned runs add SCAN__CLAMD (unix socket), SCAN__MAX_BYTES raised",
    `clamd: ${engine}, /usr/sbin/clamd with only one custom .ndb body signature (no official database: this is the protocol and I/O floor; the official signatures cost more per byte), StreamMaxLength/MaxScanSize/MaxFileSize 4000M so the whole body is scanned`,
  ],
  rows,
});
process.exit(0);
