/**
 * Piece hashes computed while a body streams into the store give the very same .torrent as
 * create-torrent reading the stored blob: same bytes, same infohash. This is what lets packaging
 * skip re-reading large blobs.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { ContentStore } from "../../seeder/node/cas";
import { choosePieceLength, createTorrentFile, torrentFromPieces } from "../../seeder/node/swarm/torrent";
import { removeTmpDirs, tmpDir } from "../support/clients";

afterAll(() => removeTmpDirs());

const base = {
  private: true,
  announce: ["http://127.0.0.1:8000/announce"],
  urlList: ["http://127.0.0.1:8000/webseed/x/"],
  createdBy: "ProxyTorrent/test",
  creationDate: new Date(1_700_000_000_000),
};

async function storeInChunks(store: ContentStore, data: Buffer, chunk: number, expectedSize: number | null) {
  const w = await store.createWriter({ expectedSize });
  for (let off = 0; off < data.length; off += chunk) await w.write(data.subarray(off, off + chunk));
  return w.commit();
}

describe("torrentFromPieces", () => {
  test.each([
    ["one partial piece", 1000, 4096],
    ["exact multiple of the piece length", 4 * 262_144, 65_536],
    ["many pieces, odd tail, odd chunking", 3 * 1024 * 1024 + 12_345, 70_001],
  ])("%s: identical to create-torrent over the stored blob", async (_name, size, chunk) => {
    const store = new ContentStore(await tmpDir("pt-pieces-"), (n) => choosePieceLength(n, "auto"));
    await store.init();
    const data = randomBytes(size);
    const blob = await storeInChunks(store, data, chunk, size);
    expect(blob.pieces).toBeDefined();
    const streamed = torrentFromPieces({ ...base, name: "file.bin", size, pieces: blob.pieces! });
    const reread = await createTorrentFile({
      ...base,
      name: "file.bin",
      size,
      path: blob.path,
      pieceSize: "auto",
    });
    expect(streamed.infohash).toBe(reread.infohash);
    expect(Buffer.from(streamed.torrent).equals(Buffer.from(reread.torrent))).toBe(true);
  });

  test("no piece hashes when the size was not announced, or turned out different", async () => {
    const store = new ContentStore(await tmpDir("pt-pieces-"), (n) => choosePieceLength(n, "auto"));
    await store.init();
    const data = randomBytes(50_000);
    expect((await storeInChunks(store, data, 8192, null)).pieces).toBeUndefined();
    expect((await storeInChunks(store, data, 8192, 60_000)).pieces).toBeUndefined();
  });
});
