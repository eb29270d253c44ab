/**
 * CasBlobStore as webtorrent drives it: whole pieces and 16 KiB blocks straight from the blob,
 * a short last piece, errors for bad requests and writes, and a blob that survives destroy().
 */
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { stat, truncate } from "node:fs/promises";
import { CasBlobStore } from "../../seeder/node/swarm/store";
import { removeTmpDirs, tmpDir } from "../support/clients";
import { writeCasBlob } from "../support/seeder-fixture";

const PIECE = 64 * 1024;
const stores: CasBlobStore[] = [];
afterEach(async () => {
  for (const s of stores.splice(0)) await new Promise<void>((r) => s.close(() => r()));
});
afterAll(removeTmpDirs);

async function setup(size: number, opts: { cacheBytes?: number } = {}) {
  const bytes = randomBytes(size);
  const blob = await writeCasBlob(await tmpDir("pt-store-"), bytes);
  const store = new CasBlobStore(PIECE, { blobPath: blob.path, length: size, ...opts });
  stores.push(store);
  return { bytes, blob, store };
}

function get(
  store: CasBlobStore,
  index: number,
  opts?: { offset?: number; length?: number },
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const cb = (err: Error | null, buf?: Buffer) => (err ? reject(err) : resolve(buf!));
    if (opts) store.get(index, opts, cb);
    else store.get(index, cb);
  });
}

describe("given a blob of 3.5 pieces", () => {
  const size = 3 * PIECE + PIECE / 2;

  test("when whole pieces are read (no opts, as webtorrent's verify path does), then they match the blob", async () => {
    const { bytes, store } = await setup(size);
    for (let i = 0; i < 4; i++) {
      const buf = await get(store, i);
      expect(Buffer.compare(buf, bytes.subarray(i * PIECE, Math.min(size, (i + 1) * PIECE)))).toBe(0);
    }
    expect((await get(store, 3)).length).toBe(PIECE / 2);
  });

  test("when 16 KiB blocks are requested concurrently, then each is the right slice", async () => {
    const { bytes, store } = await setup(size);
    const reqs: Promise<void>[] = [];
    for (let i = 0; i < 4; i++) {
      const len = i === 3 ? PIECE / 2 : PIECE;
      for (let off = 0; off < len; off += 16 * 1024) {
        reqs.push(
          get(store, i, { offset: off, length: 16 * 1024 }).then((buf) => {
            const want = bytes.subarray(i * PIECE + off, i * PIECE + off + 16 * 1024);
            expect(Buffer.compare(buf, want)).toBe(0);
          }),
        );
      }
    }
    await Promise.all(reqs);
  });

  test("when the cache holds only two pieces and reads jump around, then data stays right", async () => {
    const { bytes, store } = await setup(size, { cacheBytes: 1 });
    for (const i of [0, 1, 2, 0, 3, 1, 0]) {
      const buf = await get(store, i, { offset: 100, length: 1000 });
      expect(Buffer.compare(buf, bytes.subarray(i * PIECE + 100, i * PIECE + 1100))).toBe(0);
    }
  });

  test("when a piece or range outside the torrent is asked for, then the callback gets an error", async () => {
    const { store } = await setup(size);
    await expect(get(store, 4)).rejects.toThrow(/out of range/);
    await expect(get(store, -1)).rejects.toThrow(/out of range/);
    await expect(get(store, 3, { offset: 0, length: PIECE })).rejects.toThrow(/bad range/);
  });

  test("when webtorrent tries to write, then put fails (the store is read-only)", async () => {
    const { store } = await setup(size);
    const err = await new Promise<Error | null>((r) => store.put(0, Buffer.alloc(PIECE), (e) => r(e)));
    expect(err?.message).toMatch(/read-only/);
  });

  test("when the store is destroyed, then the CAS blob is still there and later reads fail cleanly", async () => {
    const { blob, store } = await setup(size);
    await get(store, 0);
    await new Promise<void>((r) => store.destroy(() => r()));
    expect((await stat(blob.path)).size).toBe(size);
    await expect(get(store, 0)).rejects.toThrow(/closed/);
  });
});

describe("given a blob shorter than the torrent says (damaged store)", () => {
  test("when the missing part is read, then the read fails instead of serving zeros", async () => {
    const { blob, store } = await setup(2 * PIECE);
    await truncate(blob.path, PIECE + 10);
    await expect(get(store, 1)).rejects.toThrow(/shorter/);
  });
});

describe("given a blob path that does not exist", () => {
  test("when constructed, then nothing throws, and reads report the open error", async () => {
    const store = new CasBlobStore(PIECE, { blobPath: "/nonexistent/blob", length: 10 });
    stores.push(store);
    await expect(get(store, 0)).rejects.toThrow(/ENOENT/);
  });
});
