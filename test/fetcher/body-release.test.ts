/**
 * pumpBody gives memory back as soon as it is garbage (releaseChunk) instead of leaving hundreds
 * of MiB to the collector: each socket read once node:http's parser copied the body out of it,
 * each identity body chunk once the sink's write resolved. The sink still receives every byte
 * intact. Decoded (gzip) output is never released: its chunks may be slices of a buffer the
 * decoder keeps using. One test pins what releasing socket reads relies on: the parser's body
 * chunks never share a socket read's buffer (true of Bun 1.4.5's node:http).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import http from "node:http";
import { type BodyRun, type ContentCoding, pumpBody, releaseChunk } from "../../seeder/node/fetcher/body";
import { bytesRoute, compressedRoute, type Origin, startOrigin } from "../support/origin";

let origin: Origin;
beforeAll(async () => {
  origin = await startOrigin();
});
afterAll(async () => {
  await origin.close();
});

const SIZE = 8 * 1024 * 1024;

function get(path: string): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    http.get(origin.url(path), { agent: false }, resolve).on("error", reject);
  });
}

/** Pump a response into a sink that hashes each chunk during write() and keeps the chunk objects. */
async function pump(res: http.IncomingMessage, coding: ContentCoding) {
  const seen: Uint8Array[] = [];
  // Registered before pumpBody's own listener, so it sees each read before any release.
  const reads: Uint8Array[] = [];
  res.socket!.on("data", (d: Uint8Array) => reads.push(d));
  const h = createHash("sha256");
  let total = 0;
  const run: BodyRun = {
    coding,
    limits: { maxSize: 1 << 30, maxDecompressionRatio: 1000, ratioCheckAfter: 1 << 20 },
    alreadyDecoded: 0,
    expectedLength: coding === "identity" ? SIZE : null,
    host: "origin.test",
    signal: new AbortController().signal,
    touch() {},
    async write(chunk) {
      h.update(chunk);
      total += chunk.byteLength;
      seen.push(chunk);
    },
  };
  const done = await pumpBody(res, run);
  return { done, seen, reads, total, sha256: h.digest("hex") };
}

const detached = (c: Uint8Array) => (c.buffer as ArrayBuffer & { detached?: boolean }).detached === true;

describe("pumpBody releases identity chunks after the sink took them", () => {
  test("every byte reaches the sink, and the large chunks are freed once written", async () => {
    const route = bytesRoute({ size: SIZE, seed: 7 });
    origin.route("/big", route);
    const r = await pump(await get("/big"), "identity");
    expect(r.done.decoded).toBe(SIZE);
    expect(r.total).toBe(SIZE);
    expect(r.sha256).toBe(route.body.sha256());
    const large = r.seen.filter((c) => c.byteLength === 0 || c.byteLength >= 16 * 1024);
    expect(large.length).toBeGreaterThan(0);
    // Released chunks read as empty afterwards: their memory is gone, not waiting for the GC.
    expect(large.every(detached)).toBe(true);
    const reads = r.reads.filter((d) => d.byteLength === 0 || d.byteLength >= 16 * 1024);
    expect(reads.length).toBeGreaterThan(0);
    expect(reads.every(detached)).toBe(true);
  });

  test("node:http's body chunks never share a socket read's buffer (what releasing reads relies on)", async () => {
    const route = bytesRoute({ size: SIZE, seed: 8 });
    origin.route("/pin", route);
    const res = await get("/pin");
    const readBuffers = new Set<ArrayBufferLike>();
    res.socket!.on("data", (d: Uint8Array) => readBuffers.add(d.buffer));
    const h = createHash("sha256");
    let shared = 0;
    for await (const chunk of res as AsyncIterable<Buffer>) {
      if (readBuffers.has(chunk.buffer)) shared++;
      h.update(chunk);
    }
    expect(readBuffers.size).toBeGreaterThan(0);
    expect(shared).toBe(0);
    expect(h.digest("hex")).toBe(route.body.sha256());
  });

  test("gzip-decoded chunks are left alone", async () => {
    const plain = Buffer.alloc(4 * 1024 * 1024, "abcdefgh");
    origin.route("/gz", compressedRoute(plain, "gzip"));
    const r = await pump(await get("/gz"), "gzip");
    expect(r.total).toBe(plain.length);
    expect(r.sha256).toBe(createHash("sha256").update(plain).digest("hex"));
    expect(r.seen.some(detached)).toBe(false);
    expect(r.reads.some(detached)).toBe(false);
  });
});

describe("releaseChunk", () => {
  test("frees a chunk that spans its own ArrayBuffer", () => {
    const c = new Uint8Array(64 * 1024);
    releaseChunk(c);
    expect(c.byteLength).toBe(0);
    expect(detached(c)).toBe(true);
  });

  test("leaves views into a larger buffer, small chunks and shared memory alone", () => {
    const big = new ArrayBuffer(256 * 1024);
    const view = new Uint8Array(big, 0, 128 * 1024);
    releaseChunk(view);
    expect(view.byteLength).toBe(128 * 1024);
    const offset = new Uint8Array(big, 128 * 1024);
    releaseChunk(offset);
    expect(offset.byteLength).toBe(128 * 1024);
    const small = new Uint8Array(1024);
    releaseChunk(small);
    expect(small.byteLength).toBe(1024);
    const shared = new Uint8Array(new SharedArrayBuffer(64 * 1024));
    releaseChunk(shared);
    expect(shared.byteLength).toBe(64 * 1024);
  });
});
