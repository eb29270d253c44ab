/**
 * Benchmark 7: what the passkey check costs the web seed. Every web seed request with
 * TORRENT__ACCESS=passkey looks its passkey up in the database (one indexed query, no cache, so a
 * DELETE or a key revocation takes effect on the next request); `open` serves by content hash
 * with no lookup. Same service settings, same blob, same client.
 *
 * Sequential range GETs (one connection, keep-alive) of 16 KiB and 1 MiB, the range sizes at the
 * two ends of what BEP 19 clients ask for (aria2c asks piece-sized ranges; libtorrent up to
 * urlseed_max_request_bytes, 16 MiB by default), reported as time per request.
 *
 *   npx bun bench/webseed-access.ts      (REQUESTS=2000 to change)
 */
import { bytesRoute, startOrigin } from "../test/support/origin";
import { appendResults, fmt, log, median, type Row, Service, waitForQuiet } from "./lib";

const REQUESTS = Number(process.env.REQUESTS ?? 2000);
const SIZE = 8 * 1024 * 1024;
const ROUNDS = 3;

await waitForQuiet();
const origin = await startOrigin({
  "/blob.bin": bytesRoute({ size: SIZE, seed: 66, contentType: "text/plain" }),
});

/** µs per request for `n` sequential range GETs of `span` bytes. */
async function perRequest(url: string, span: number, n: number): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const start = (i * span) % (SIZE - span);
    const res = await fetch(url, { headers: { range: `bytes=${start}-${start + span - 1}` } });
    if (res.status !== 206) throw new Error(`web seed answered ${res.status}`);
    await res.arrayBuffer();
  }
  return ((performance.now() - t0) * 1000) / n;
}

const spans = [16 * 1024, 1024 * 1024];
const results: Record<string, Record<number, number[]>> = { open: {}, passkey: {} };
for (const access of ["open", "passkey"] as const) {
  const svc = await Service.start({ env: { TORRENT__ACCESS: access } });
  const id = await svc.create({ url: origin.url("/blob.bin") });
  let st = await svc.status(id);
  while (st.status !== "ready") {
    if (st.status === "error") throw new Error(String(st.error_message));
    await Bun.sleep(50);
    st = await svc.status(id);
  }
  const url =
    access === "open" ? `${svc.url}/webseed/${st.content_hash}/blob.bin` : `${await svc.webSeed(id)}blob.bin`;
  await perRequest(url, 16 * 1024, 300); // warm-up: JIT, page cache, keep-alive
  for (const span of spans) {
    results[access]![span] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const n = span >= 1024 * 1024 ? Math.ceil(REQUESTS / 2) : REQUESTS;
      results[access]![span]!.push(await perRequest(url, span, n));
    }
    log(
      `${access}, ${span / 1024} KiB ranges: ${results[access]![span]!.map((x) => fmt(x, 0)).join(", ")} µs/request`,
    );
  }
  await svc.stop();
}
await origin.close();

const rows: Row[] = spans.map((span) => {
  const p = median(results.passkey![span]!);
  const o = median(results.open![span]!);
  return {
    figure: `web seed, sequential ${span / 1024} KiB range GETs, TORRENT__ACCESS=passkey (median of ${ROUNDS} rounds)`,
    measured: `${fmt(p, 0)} µs/request (${fmt(span / 1e6 / (p / 1e6), 0)} MB/s on one connection)`,
    reference: `TORRENT__ACCESS=open, same run: ${fmt(o, 0)} µs/request; the passkey lookup adds ${fmt(p - o, 0)} µs`,
  };
});
appendResults({
  title: "7. Web seed: the cost of the passkey check",
  setup: [
    `bin/proxytorrent serve on a local libSQL file, one ${SIZE / 1024 / 1024} MiB text/plain blob; settings default except TORRENT__ACCESS`,
    `client: Bun fetch on 127.0.0.1, one request at a time (keep-alive), ${REQUESTS} requests of 16 KiB and ${Math.ceil(REQUESTS / 2)} of 1 MiB per round after 300 warm-up requests`,
  ],
  rows,
  notes: [
    "Every passkeyed request reads the database (no cache), so revocation takes effect on the next request. On Turso the lookup is a network round trip: expect that latency per request instead.",
  ],
});
process.exit(0);
