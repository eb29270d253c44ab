/**
 * CasBlobStore's piece-buffer recycling (store.ts, `chunkWritten`): a piece buffer is reused only
 * after it left the cache AND every view handed out of it was reported written; a view that was
 * not reported keeps its bytes whatever is read later. And leechers still get the right bytes
 * through the fast pipes (wire-pipes.ts reports the writes) while pieces are recycled. Note: the
 * end-to-end tests stayed green even with the refcount check removed, because Bun's socket takes
 * each chunk in the tick it is written, long before its piece can be evicted; the unit tests above
 * are what pin the rules.
 */
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { connect } from "node:net";
import { dirname, join } from "node:path";
import { CasBlobStore, chunkWritten } from "../../seeder/node/swarm/store";
import { Swarm } from "../../seeder/node/swarm/swarm";
import { aria2Download, libtorrentDownload, removeTmpDirs, sha256File, tmpDir } from "../support/clients";
import { randomContent, saveTorrent, startNodeHttp, writeCasBlob } from "../support/seeder-fixture";

const PIECE = 64 * 1024;
const TEST_LIMIT = 120_000;
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(removeTmpDirs);

async function setup(size: number) {
  const bytes = randomBytes(size);
  const blob = await writeCasBlob(await tmpDir("pt-recycle-"), bytes);
  // A cache of two pieces: every third piece read evicts one.
  const store = new CasBlobStore(PIECE, { blobPath: blob.path, length: size, cacheBytes: 0 });
  cleanups.push(() => new Promise<void>((r) => store.close(() => r())));
  return { bytes, store };
}

function get(store: CasBlobStore, index: number, offset = 0, length = 16 * 1024): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    store.get(index, { offset, length }, (err, buf) => (err ? reject(err) : resolve(buf!))),
  );
}

describe("given a store whose cache holds two pieces", () => {
  test("when views are not reported written, then their bytes survive evictions and later reads", async () => {
    const { bytes, store } = await setup(8 * PIECE);
    const kept = await get(store, 0, 16 * 1024);
    for (let i = 1; i < 8; i++) await get(store, i); // evicts piece 0 long before the end
    expect(Buffer.compare(kept, bytes.subarray(16 * 1024, 32 * 1024))).toBe(0);
  });

  test("when every view of an evicted piece is reported written, then its buffer is reused and new reads are right", async () => {
    const { bytes, store } = await setup(8 * PIECE);
    const a = await get(store, 0);
    const b = await get(store, 0, 16 * 1024);
    chunkWritten(a);
    chunkWritten(b);
    chunkWritten(b); // reported twice: must not release anything twice
    await get(store, 1);
    await get(store, 2); // piece 0 leaves the cache now
    const next = await get(store, 3);
    expect(next.buffer).toBe(a.buffer); // recycled
    expect(Buffer.compare(next, bytes.subarray(3 * PIECE, 3 * PIECE + 16 * 1024))).toBe(0);
    // Not reused twice at once: the next read gets another buffer.
    const other = await get(store, 4);
    expect(other.buffer).not.toBe(next.buffer);
    expect(Buffer.compare(other, bytes.subarray(4 * PIECE, 4 * PIECE + 16 * 1024))).toBe(0);
  });

  test("when only some views of an evicted piece are reported written, then its buffer is not reused", async () => {
    const { store } = await setup(8 * PIECE);
    const a = await get(store, 0);
    await get(store, 0, 16 * 1024); // never reported
    chunkWritten(a);
    await get(store, 1);
    await get(store, 2);
    const next = await get(store, 3);
    expect(next.buffer).not.toBe(a.buffer);
  });
});

/** bittorrent-protocol's Wire, the copy webtorrent uses (resolved from webtorrent's lib/peer.js). */
async function loadWire(): Promise<any> {
  const peer = Bun.resolveSync("webtorrent/lib/peer.js", import.meta.dir);
  return (await import(Bun.resolveSync("bittorrent-protocol", dirname(peer)))).default;
}

/**
 * A leecher that checks every block against the blob as it arrives (real clients would silently
 * re-fetch a bad piece): asks for all blocks of `pieces` pieces, `window` at a time, over plain TCP.
 */
async function fetchAndCompare(
  port: number,
  infohash: string,
  bytes: Uint8Array,
  pieceLength: number,
  window: number,
  opts: { reverse?: boolean; slow?: boolean } = {},
): Promise<{ blocks: number; wrong: number }> {
  const Wire = await loadWire();
  const BLOCK = 16 * 1024;
  const todo: [number, number, number][] = [];
  for (let at = 0; at < bytes.length; at += BLOCK) {
    const index = Math.floor(at / pieceLength);
    todo.push([index, at - index * pieceLength, Math.min(BLOCK, bytes.length - at)]);
  }
  if (opts.reverse) todo.reverse();
  return new Promise((resolve, reject) => {
    const sock = connect({ host: "127.0.0.1", port });
    const wire = new Wire("tcpOutgoing", 0);
    let next = 0;
    let done = 0;
    let wrong = 0;
    const pump = () => {
      while (next < todo.length && next - done < window) {
        const [index, offset, length] = todo[next++]!;
        wire.request(index, offset, length, (err: Error | null, buf: Uint8Array) => {
          if (err) return reject(err);
          const at = index * pieceLength + offset;
          if (Buffer.compare(Buffer.from(buf), bytes.subarray(at, at + length)) !== 0) wrong++;
          if (++done === todo.length) {
            clearInterval(stall);
            wire.destroy();
            sock.destroy();
            resolve({ blocks: done, wrong });
          } else pump();
        });
      }
    };
    sock.on("error", reject);
    // A slow reader: its socket backs up, so chunks wait in the seeder's write queue while the
    // other leecher makes the store evict and reuse piece buffers.
    const stall = setInterval(() => {
      if (!opts.slow) return;
      sock.pause();
      setTimeout(() => sock.resume(), 3);
    }, 6);
    wire.once("have-all", () => wire.interested());
    wire.once("bitfield", () => wire.interested());
    wire.once("unchoke", pump);
    sock.pipe(wire).pipe(sock);
    sock.once("connect", () => wire.handshake(infohash, randomBytes(20).toString("hex"), { fast: true }));
  });
}

describe("given a swarm seeding more pieces than its store caches", () => {
  test(
    "when two leechers fetch every block at once, then every block they get equals the blob",
    async () => {
      const swarm = new Swarm({
        torrent: { listenPort: 0, listenHost: "127.0.0.1", maxConnections: 50, uploadRateLimit: 0 },
      });
      cleanups.push(() => swarm.stop());
      await swarm.start();
      // 4 MiB pieces: the store caches 4 of them (16 MiB), the leechers walk the file in opposite
      // directions and one reads slowly, so pieces are evicted and their buffers reused while
      // blocks of them still wait to be written.
      const PIECE_LEN = 4 * 1024 * 1024;
      const bytes = randomBytes(10 * PIECE_LEN);
      const blob = await writeCasBlob(await tmpDir("pt-recycle-"), bytes);
      const t = await saveTorrent(
        { base: dirname(blob.path), blob, name: "payload.bin" },
        { file: "t.torrent", pieceSize: PIECE_LEN },
      );
      await swarm.seed({ infohash: t.infohash, torrent: t.torrent, path: blob.path });
      const results = await Promise.all([
        fetchAndCompare(swarm.port, t.infohash, bytes, PIECE_LEN, 400),
        fetchAndCompare(swarm.port, t.infohash, bytes, PIECE_LEN, 400, { reverse: true, slow: true }),
      ]);
      expect(results).toEqual([
        { blocks: 2560, wrong: 0 },
        { blocks: 2560, wrong: 0 },
      ]);
    },
    TEST_LIMIT,
  );

  test(
    "when libtorrent and aria2c download at the same time, then both get the right bytes",
    async () => {
      const http = startNodeHttp();
      cleanups.push(() => http.close());
      const swarm = new Swarm({
        torrent: { listenPort: 0, listenHost: "127.0.0.1", maxConnections: 50, uploadRateLimit: 0 },
      });
      cleanups.push(() => swarm.stop());
      await swarm.start();
      // 32 KiB pieces: 768 of them against a 512-piece cache, so pieces are evicted and their
      // buffers recycled while both clients are still being served.
      const content = await randomContent(24 * 1024 * 1024 + 7_777);
      const t = await saveTorrent(content, {
        file: "tracker.torrent",
        pieceSize: 32 * 1024,
        announce: [http.announceUrl],
      });
      const direct = await saveTorrent(content, { file: "direct.torrent", pieceSize: 32 * 1024 });
      expect(direct.infohash).toBe(t.infohash);
      http.allowed.add(t.infohash);
      await swarm.seed({ infohash: t.infohash, torrent: t.torrent, path: content.blob.path });
      const dir = await tmpDir();
      const [lt, aria] = await Promise.all([
        libtorrentDownload({
          torrentPath: direct.path,
          dir: join(dir, "lt"),
          connect: { host: "127.0.0.1", port: swarm.port },
          timeoutMs: 90_000,
        }),
        aria2Download({ torrentPath: t.path, dir: join(dir, "aria"), timeoutMs: 90_000 }),
      ]);
      // Both clients check piece hashes and would re-fetch a bad piece; the unit tests above are
      // what pins the recycling rules, this pins that real downloads end with the right bytes.
      expect(await sha256File(lt)).toBe(content.blob.sha256);
      expect(await sha256File(aria)).toBe(content.blob.sha256);
    },
    TEST_LIMIT,
  );
});
