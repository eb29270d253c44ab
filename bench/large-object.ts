/**
 * Benchmark 2: one large object (1 GiB) through the whole pipeline: fetch from a loopback origin,
 * SHA-256 into the content store (write + fsync + rename), piece hashing (SHA-1; while streaming
 * when the size is announced, else a second pass over the blob) into a private torrent, seeding;
 * timed by the service's own created_at -> completed_at.
 *
 * Reference, same run, over the same bytes: `openssl dgst -sha256` plus `openssl dgst -sha1` of a
 * temp file holding them (page cache warm), i.e. the two hashes the pipeline must compute, at
 * OpenSSL speed, one after the other. Also shown: `dd ... conv=fsync` of the same file, the cost of
 * writing and syncing 1 GiB on this disk, which the store also pays.
 *
 * Memory: VmHWM (peak RSS) of the service process, from /proc/<pid>/status, before and after.
 *
 * The bytes are test/support/origin.ts PatternBody(SIZE, SEED), written once to a temp file and
 * served with Bun.file (sendfile), so the origin costs next to no CPU.
 *
 *   npx bun bench/large-object.ts        (SIZE_MIB=1024 REPS=2 to change)
 */
import { join } from "node:path";
import {
  appendResults,
  fileOrigin,
  fmt,
  log,
  MiB,
  mbps,
  median,
  type Row,
  run,
  Service,
  tmpDir,
  toolVersion,
  waitForQuiet,
  writePatternFile,
} from "./lib";

await waitForQuiet();

const SIZE = Number(process.env.SIZE_MIB ?? 1024) * MiB;
const REPS = Number(process.env.REPS ?? 2);
const SEED = 42;

const dir = await tmpDir("pt-bench-large-");
const file = join(dir, "large.bin");
const t = performance.now();
await writePatternFile(file, SIZE, SEED);
log(`wrote ${SIZE / MiB} MiB of PatternBody to a temp file in ${fmt(performance.now() - t, 0)} ms`);

// ---- reference ----
async function openssl(alg: "sha256" | "sha1") {
  const r = await run(["openssl", "dgst", `-${alg}`, "-r", file]);
  if (r.code !== 0) throw new Error(`openssl failed: ${r.out}`);
  return { ms: r.ms, hex: r.out.trim().split(/\s+/)[0]! };
}
await openssl("sha1"); // warm the page cache and the binary
const ref256 = await openssl("sha256");
const ref1 = await openssl("sha1");
const refMs = ref256.ms + ref1.ms;
const dd = await run(["dd", `if=${file}`, `of=${join(dir, "dd.bin")}`, "bs=4M", "conv=fsync", "status=none"]);
await run(["rm", "-f", join(dir, "dd.bin")]);
log(
  `reference: openssl sha256 ${fmt(ref256.ms, 0)} ms + sha1 ${fmt(ref1.ms, 0)} ms = ${fmt(refMs, 0)} ms; dd+fsync ${fmt(dd.ms, 0)} ms`,
);

// ---- the pipeline ----
const origin = fileOrigin({ "/large.bin": { path: file, type: "application/octet-stream" } });
const svc = await Service.start({
  env: {
    FETCHER__MAX_SIZE: String(4 * SIZE),
    FETCHER__TOTAL_TIMEOUT: "3600",
    FETCHER__READ_TIMEOUT: "600",
    FETCHER__MIME_WHITELIST: "application/octet-stream,text/plain",
  },
});
for (const k of ["fetch finished", "job ready"]) svc.keep.add(k);
await Bun.sleep(300);
const hwmIdle = svc.procStatusKb("VmHWM");
interface Rep {
  totalMs: number;
  fetchMs: number;
  afterMs: number;
  cpuMs: number;
  hash: string;
  pieceLength: number;
}
const reps: Rep[] = [];
for (let i = 0; i < REPS; i++) {
  svc.kept = [];
  const cpu0 = svc.cpuMs();
  // ttl 0: fetch again even though the same URL is ready from the previous repetition.
  const id = await svc.create({ url: origin.url("/large.bin"), ttl: 0 });
  const st = await svc.waitReady(id, 50, 600_000);
  const cpuMs = svc.cpuMs() - cpu0;
  const fetched = svc.kept.find((l) => l.msg === "fetch finished");
  const ready = svc.kept.find((l) => l.msg === "job ready");
  const torrent = await svc.api(`/v1/requests/${id}/torrent`).then((r) => r.arrayBuffer());
  const pl = new TextDecoder("latin1").decode(new Uint8Array(torrent)).match(/12:piece lengthi(\d+)e/);
  const rep: Rep = {
    totalMs: Date.parse(st.completed_at) - Date.parse(st.created_at),
    fetchMs: Number(fetched?.ms ?? Number.NaN),
    afterMs: Number(ready?.ms ?? Number.NaN) - Number(fetched?.ms ?? Number.NaN),
    cpuMs,
    hash: st.content_hash,
    pieceLength: Number(pl?.[1] ?? 0),
  };
  reps.push(rep);
  log(
    `pipeline #${i + 1}: ${fmt(rep.totalMs, 0)} ms (fetch+sha256+store ${fmt(rep.fetchMs, 0)} ms, torrent+seed ${fmt(rep.afterMs, 0)} ms), CPU ${fmt(cpuMs, 0)} ms, VmHWM ${fmt(svc.procStatusKb("VmHWM") / 1024, 0)} MiB`,
  );
}
const hwm = svc.procStatusKb("VmHWM");
await svc.stop();
origin.stop();

const totals = reps.map((r) => r.totalMs);
const best = Math.min(...totals);
const hashOk = reps.every((r) => r.hash === ref256.hex);
const rows: Row[] = [
  {
    figure: `POST→ready for ${SIZE / MiB} MiB (server side), ${REPS} runs: ${totals.map((x) => fmt(x, 0)).join(" / ")} ms`,
    measured: `median ${fmt(median(totals), 0)} ms = ${fmt(mbps(SIZE, median(totals)), 0)} MB/s; ${fmt(median(totals) / refMs, 2)}× the reference (best ${fmt(best / refMs, 2)}×)`,
    reference: `openssl sha256 ${fmt(ref256.ms, 0)} ms (${fmt(mbps(SIZE, ref256.ms), 0)} MB/s) + sha1 ${fmt(ref1.ms, 0)} ms (${fmt(mbps(SIZE, ref1.ms), 0)} MB/s) = ${fmt(refMs, 0)} ms`,
    target: "≤ 1.5× reference",
  },
  {
    figure: "of which fetch + SHA-256 + write + fsync + rename (median)",
    measured: `${fmt(median(reps.map((r) => r.fetchMs)), 0)} ms`,
    reference: `openssl sha256 alone ${fmt(ref256.ms, 0)} ms; dd bs=4M conv=fsync of the file ${fmt(dd.ms, 0)} ms`,
  },
  {
    figure: `of which packaging after the fetch (piece hashing if not done while streaming, ${reps[0]!.pieceLength / MiB} MiB pieces) + seed + complete (median)`,
    measured: `${fmt(median(reps.map((r) => r.afterMs)), 0)} ms`,
    reference: `openssl sha1 alone ${fmt(ref1.ms, 0)} ms`,
  },
  {
    figure: "service CPU time per run (user+sys, median)",
    measured: `${fmt(median(reps.map((r) => r.cpuMs)), 0)} ms`,
    reference: `${fmt(refMs, 0)} ms (openssl, both hashes)`,
  },
  {
    figure: "service peak RSS (VmHWM)",
    measured: `${fmt(hwm / 1024, 0)} MiB after the runs`,
    reference: `${fmt(hwmIdle / 1024, 0)} MiB idle after start-up`,
    target: "≤ 150 MB (143 MiB)",
  },
  {
    figure: "content_hash equals openssl's SHA-256",
    measured: hashOk ? "yes" : `NO (${reps.map((r) => r.hash).join(", ")} vs ${ref256.hex})`,
  },
];
appendResults({
  title: `2. One large object (${SIZE / MiB} MiB) through the pipeline`,
  setup: [
    `origin: Bun.serve + Bun.file (sendfile) on 127.0.0.1 serving PatternBody(${SIZE}, ${SEED}) from a temp file, application/octet-stream`,
    "service: bin/proxytorrent serve, FETCHER__MAX_SIZE/TOTAL_TIMEOUT/READ_TIMEOUT raised, FETCHER__MIME_WHITELIST=application/octet-stream,text/plain, TORRENT__PIECE_SIZE=auto, one request at a time with ttl 0",
    `reference: ${toolVersion(["openssl", "version"], /OpenSSL \S+/)} dgst -sha256 then -sha1 over the temp file (page cache warm), wall time`,
  ],
  rows,
});
process.exit(0);
