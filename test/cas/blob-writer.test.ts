/**
 * The content store's blob writer hashes in a worker while it writes the file. Whatever the
 * chunking, the size, aborts or a failing worker: the blob is committed under the SHA-256 of
 * exactly its bytes with the right piece hashes, or not at all, and no temp file is left behind.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { ContentStore } from "../../seeder/node/cas";
import { terminateHashWorkers } from "../../seeder/node/hashing/hash-workers";
import { choosePieceLength } from "../../seeder/node/swarm/torrent";
import { removeTmpDirs, tmpDir } from "../support/clients";

afterAll(() => removeTmpDirs());

const MiB = 1024 * 1024;
const PIECE = 256 * 1024;

async function newStore(pieceLengthFor: ((n: number) => number) | undefined = () => PIECE) {
  const store = new ContentStore(await tmpDir("pt-cas-"), pieceLengthFor);
  await store.init();
  return store;
}

function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

function pieceHashes(data: Uint8Array, pieceLength: number): Buffer {
  const out: Buffer[] = [];
  for (let off = 0; off < data.length; off += pieceLength)
    out.push(
      createHash("sha1")
        .update(data.subarray(off, off + pieceLength))
        .digest(),
    );
  return Buffer.concat(out);
}

/** Every file under the store's cas/ tree. */
async function blobsIn(store: ContentStore): Promise<string[]> {
  const entries = await readdir(store.casRoot, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => e.name);
}

async function store(
  s: ContentStore,
  data: Uint8Array,
  chunks: number | ((i: number) => number),
  expectedSize: number | null,
) {
  const w = await s.createWriter({ expectedSize });
  for (let off = 0, i = 0; off < data.length; i++) {
    const n = typeof chunks === "number" ? chunks : chunks(i);
    await w.write(data.subarray(off, off + n));
    off += n;
  }
  expect(w.size).toBe(data.length);
  return w.commit();
}

async function expectStored(s: ContentStore, data: Uint8Array, blob: Awaited<ReturnType<typeof store>>) {
  expect(blob.sha256).toBe(sha256(data));
  expect(blob.size).toBe(data.length);
  expect(blob.path).toBe(s.pathFor(blob.sha256));
  expect(Buffer.from(await readFile(blob.path)).equals(Buffer.from(data))).toBe(true);
  expect(await s.tempFiles()).toEqual([]);
}

/** A deterministic mix of odd chunk sizes, 1 B to ~700 KiB. */
const oddChunks = (i: number) => [1, 7, 4093, 65_537, 700_001, 524_288, 333][i % 7]!;

describe("BlobWriter: hashes and bytes", () => {
  test.each([
    ["empty body", 0, 4096],
    ["1-byte chunks", 3000, 1],
    ["one partial block", 100_000, 8192],
    ["odd chunking, several blocks", 3 * MiB + 12_345, 4093],
    ["chunks across block edges", 5 * MiB + 1, 65_537],
    ["fetcher-sized chunks", 5 * MiB + 3, 524_288],
    ["exact blocks", 4 * MiB, MiB],
    ["one chunk larger than all blocks", 9 * MiB + 3, 7 * MiB + 5],
    ["mixed chunk sizes", 6 * MiB + 99, oddChunks],
  ] as const)("%s (%d bytes)", async (_name, size, chunks) => {
    const s = await newStore();
    const data = randomBytes(size);
    for (const expectedSize of [size, null]) {
      const blob = await store(s, data, chunks, expectedSize);
      await expectStored(s, data, blob);
      if (expectedSize && size > 0) {
        expect(blob.pieces?.pieceLength).toBe(PIECE);
        expect(Buffer.from(blob.pieces!.hashes).equals(pieceHashes(data, PIECE))).toBe(true);
      } else expect(blob.pieces).toBeUndefined();
    }
  });

  test("a 64+ MiB body: SHA-256 and 'auto' piece hashes equal node:crypto's", async () => {
    const s = await newStore((n) => choosePieceLength(n, "auto"));
    const size = 72 * MiB + 4321;
    const data = randomBytes(size);
    const blob = await store(s, data, (i) => (i % 3 === 0 ? 524_288 : 391_000 + i), size);
    await expectStored(s, data, blob);
    const pl = choosePieceLength(size, "auto");
    expect(blob.pieces?.pieceLength).toBe(pl);
    expect(Buffer.from(blob.pieces!.hashes).equals(pieceHashes(data, pl))).toBe(true);
  });

  test("writes not awaited one by one still land in order", async () => {
    const s = await newStore();
    const data = randomBytes(4 * MiB + 777);
    const w = await s.createWriter({ expectedSize: data.length });
    const pending: Promise<void>[] = [];
    for (let off = 0; off < data.length; off += 300_000)
      pending.push(w.write(data.subarray(off, off + 300_000)));
    const blob = await w.commit();
    await Promise.all(pending);
    await expectStored(s, data, blob);
    expect(Buffer.from(blob.pieces!.hashes).equals(pieceHashes(data, PIECE))).toBe(true);
  });

  test("concurrent writers, interleaved chunk by chunk", async () => {
    const s = await newStore();
    const bodies = [3 * MiB + 1, 2 * MiB, 5 * MiB + 17, 100_000].map((n) => randomBytes(n));
    const writers = await Promise.all(bodies.map((b) => s.createWriter({ expectedSize: b.length })));
    const chunk = 200_003;
    for (let off = 0; bodies.some((b) => off < b.length); off += chunk)
      await Promise.all(
        writers.map((w, i) =>
          off < bodies[i]!.length ? w.write(bodies[i]!.subarray(off, off + chunk)) : undefined,
        ),
      );
    const blobs = await Promise.all(writers.map((w) => w.commit()));
    for (const [i, blob] of blobs.entries()) {
      await expectStored(s, bodies[i]!, blob);
      expect(Buffer.from(blob.pieces!.hashes).equals(pieceHashes(bodies[i]!, PIECE))).toBe(true);
    }
  });

  test("the caller may reuse its buffer once write() has resolved", async () => {
    const s = await newStore();
    const data = randomBytes(3 * MiB + 5);
    const w = await s.createWriter({ expectedSize: data.length });
    const scratch = Buffer.alloc(123_457);
    for (let off = 0; off < data.length; off += scratch.length) {
      const n = data.copy(scratch, 0, off, off + scratch.length);
      await w.write(scratch.subarray(0, n));
      scratch.fill(0xee);
    }
    await expectStored(s, data, await w.commit());
  });
});

describe("BlobWriter: sizes other than announced", () => {
  test.each([
    ["shorter than announced", 50_000, 60_000],
    ["longer than announced, announced below one block", 5 * MiB + 9, 100_000],
    ["shorter than announced, several blocks", 3 * MiB, 5 * MiB],
    ["longer than announced, several blocks", 4 * MiB + 1, 4 * MiB],
  ])("%s: right SHA-256, no piece hashes", async (_name, size, announced) => {
    const s = await newStore();
    const data = randomBytes(size);
    const blob = await store(s, data, 100_003, announced);
    await expectStored(s, data, blob);
    expect(blob.pieces).toBeUndefined();
  });
});

describe("BlobWriter: abort and failure", () => {
  test("abort mid-stream (hashing in the worker) leaves no temp file and no blob", async () => {
    const s = await newStore();
    const w = await s.createWriter({ expectedSize: 10 * MiB });
    const data = randomBytes(6 * MiB);
    for (let off = 0; off < data.length; off += 524_288) await w.write(data.subarray(off, off + 524_288));
    expect((await s.tempFiles()).length).toBe(1);
    await w.abort();
    expect(await s.tempFiles()).toEqual([]);
    expect(await blobsIn(s)).toEqual([]);
    await expect(w.write(data.subarray(0, 10))).rejects.toThrow();
    await expect(w.commit()).rejects.toThrow();
    await w.abort(); // twice is harmless
  });

  test("abort while a write waits for buffers: the write fails, nothing is left", async () => {
    const s = await newStore();
    const w = await s.createWriter({ expectedSize: null });
    await w.write(randomBytes(2 * MiB));
    const big = w.write(randomBytes(40 * MiB));
    const aborted = w.abort();
    await expect(big).rejects.toThrow();
    await aborted;
    expect(await s.tempFiles()).toEqual([]);
    expect(await blobsIn(s)).toEqual([]);
  });

  test("abort before the first block left the event loop", async () => {
    const s = await newStore();
    const w = await s.createWriter({ expectedSize: 1000 });
    await w.write(randomBytes(500));
    await w.abort();
    expect(await s.tempFiles()).toEqual([]);
  });

  test("a hash worker that dies fails the commit: no blob, no temp file; the next writer works", async () => {
    const s = await newStore();
    const data = randomBytes(8 * MiB);
    const w = await s.createWriter({ expectedSize: data.length });
    for (let off = 0; off < data.length; off += 524_288) await w.write(data.subarray(off, off + 524_288));
    terminateHashWorkers();
    await expect(w.commit()).rejects.toThrow(/hash worker/);
    expect(await s.tempFiles()).toEqual([]);
    expect(await blobsIn(s)).toEqual([]);
    await w.abort();

    const again = await store(s, data, 524_288, data.length);
    await expectStored(s, data, again);
  });

  test("a write after commit is refused", async () => {
    const s = await newStore();
    const w = await s.createWriter();
    await w.write(Buffer.from("hello"));
    const blob = await w.commit();
    expect(blob.sha256).toBe(sha256(Buffer.from("hello")));
    await expect(w.write(Buffer.from("more"))).rejects.toThrow(/closed/);
    await expect(w.commit()).rejects.toThrow(/closed/);
  });
});

describe("BlobWriter: process lifetime", () => {
  test("a script that only writes a blob runs to its end and then exits (no worker holds it)", async () => {
    const base = await tmpDir("pt-cas-exit-");
    const script = join(base, "write.ts");
    const cas = join(import.meta.dir, "../../seeder/node/cas.ts");
    await Bun.write(
      script,
      `import { ContentStore } from ${JSON.stringify(cas)};
const s = new ContentStore(${JSON.stringify(join(base, "store"))}, () => 262144);
await s.init();
const w = await s.createWriter({ expectedSize: 8 * 1024 * 1024 });
const chunk = new Uint8Array(1024 * 1024).fill(7);
for (let i = 0; i < 8; i++) await w.write(chunk);
const blob = await w.commit();
console.log(blob.sha256, blob.pieces?.hashes.length);
`,
    );
    const t0 = performance.now();
    const p = Bun.spawn([process.execPath, script], { stdout: "pipe", stderr: "pipe" });
    const timer = setTimeout(() => p.kill("SIGKILL"), 30_000);
    const [out, err, code] = await Promise.all([
      new Response(p.stdout).text(),
      new Response(p.stderr).text(),
      p.exited,
    ]);
    clearTimeout(timer);
    expect(err).toBe("");
    expect(code).toBe(0);
    const expected = sha256(new Uint8Array(8 * MiB).fill(7));
    expect(out.trim()).toBe(`${expected} ${((8 * MiB) / 262_144) * 20}`);
    expect(performance.now() - t0).toBeLessThan(20_000);
  });
});
