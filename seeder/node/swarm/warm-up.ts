/**
 * Warm the seeding hot path up before the first real leecher arrives.
 *
 * Why: the first download from a fresh process was consistently the slowest (bench/seeding.ts,
 * docs/webtorrent.md "The first download"). Per-thread CPU of the seeder showed why: during the
 * first 384 MiB, JavaScriptCore's JIT threads spent 120–310 ms compiling the per-block path
 * (node:net writes, streamx, bittorrent-protocol's parser and message encoder, webtorrent's request
 * handler, CasBlobStore), and the event loop ran that path unoptimised meanwhile: 1.4–2.9 s of CPU
 * per GiB instead of 1.0–1.4 s in later downloads. A second torrent's first download in the same
 * process was as cheap as the later ones, so it is the process, not the torrent, that is cold.
 *
 * How: a throwaway 4 MiB torrent over a temp file is added to the real client the way Swarm
 * seeds (same store and options, but a two-piece cache so reads happen too), and a leecher over
 * loopback TCP (bittorrent-protocol's Wire, MSE handshake included, announcing pieces with `have`
 * like libtorrent does) asks it for `blocks` 16 KiB blocks, so the production per-block path runs
 * often enough to be optimised with the types real peers bring. Then the torrent, the connection
 * and the file go. Cost: ~0.4–0.7 s of CPU for 12,000 blocks (both ends), once per process, in
 * the background. Best effort: any failure only ends the warm-up early. It does not remove all
 * of it: JSC still re-optimises a few functions on the first real connection (measured in
 * docs/webtorrent.md).
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { torrentFromPieces } from "./torrent";

export interface WarmUpOptions {
  /** Blocks to request in total. */
  blocks: number;
  /** Bytes per block (real leechers ask for 16 KiB). */
  blockLength: number;
  /** Requests kept outstanding, like a leecher's request queue. */
  window: number;
  /** Give up after this long (ms). */
  timeoutMs: number;
}

export const DEFAULT_WARM_UP: WarmUpOptions = {
  blocks: 12_000,
  blockLength: 16 * 1024,
  window: 128,
  timeoutMs: 10_000,
};

const PIECE_LENGTH = 256 * 1024;
/** 16 pieces of 256 KiB: 256 distinct 16 KiB blocks, so requests in flight never repeat. */
const PIECES = 16;

export interface WarmUpTarget {
  /**
   * Seed `torrent` from `path` the way real torrents are seeded; resolves once it serves.
   * `cacheBytes` goes to CasBlobStore: the warm-up keeps it tiny so piece reads happen too.
   */
  add(torrent: Uint8Array, path: string, cacheBytes: number): Promise<{ destroy(): Promise<void> }>;
  /** Where a peer on this machine reaches the BitTorrent port. */
  host: string;
  port: number;
  /** True once the swarm is stopping: stop early. */
  cancelled(): boolean;
}

export interface WarmUpResult {
  blocks: number;
  ms: number;
}

export async function warmUpSeeding(
  target: WarmUpTarget,
  opts: WarmUpOptions = DEFAULT_WARM_UP,
): Promise<WarmUpResult> {
  const t0 = performance.now();
  const dir = await mkdtemp(join(tmpdir(), "proxytorrent-warm-up-"));
  let seeded: { destroy(): Promise<void> } | null = null;
  try {
    const path = join(dir, "warm-up.bin");
    const body = randomBytes(PIECE_LENGTH * PIECES);
    await writeFile(path, body);
    const hashes = new Uint8Array(20 * PIECES);
    for (let i = 0; i < PIECES; i++)
      hashes.set(
        createHash("sha1")
          .update(body.subarray(i * PIECE_LENGTH, (i + 1) * PIECE_LENGTH))
          .digest(),
        i * 20,
      );
    // A random name gives a fresh infohash, so it can never collide with a real torrent.
    const { torrent, infohash } = torrentFromPieces({
      name: `warm-up-${randomBytes(8).toString("hex")}.bin`,
      size: PIECE_LENGTH * PIECES,
      private: true,
      announce: [],
      urlList: [],
      pieces: { pieceLength: PIECE_LENGTH, hashes },
    });
    if (target.cancelled()) return { blocks: 0, ms: performance.now() - t0 };
    seeded = await target.add(torrent, path, 0);
    const blocks = await requestBlocks(target, infohash, opts);
    return { blocks, ms: performance.now() - t0 };
  } finally {
    await seeded?.destroy().catch(() => {});
    await rm(dir, { recursive: true, force: true }).catch(() => {});
  }
}

interface LeecherWire {
  pipe<T>(dest: T): T;
  once(ev: string, fn: (...args: unknown[]) => void): void;
  on(ev: string, fn: (...args: unknown[]) => void): void;
  startEncryption(infohash: string): void;
  handshake(infohash: string, peerId: string, extensions?: Record<string, boolean>): void;
  interested(): void;
  request(index: number, offset: number, length: number, cb: (err: Error | null) => void): void;
  have(index: number): void;
  destroy(): void;
}

/**
 * bittorrent-protocol's Wire, the copy webtorrent uses. The leecher side is that same Wire (a
 * webtorrent leecher, MSE handshake included, as libtorrent opens it), so the seeder's side sees
 * the same message and buffer types as from real clients: a hand-rolled plaintext peer left
 * JavaScriptCore re-optimising half the hot functions on the first real connection.
 */
async function loadWire(): Promise<new (type: string, peEnabled: number) => LeecherWire> {
  const peer = Bun.resolveSync("webtorrent/lib/peer.js", import.meta.dir);
  const protocol = Bun.resolveSync("bittorrent-protocol", dirname(peer));
  return (await import(protocol)).default;
}

/** Be a leecher on one TCP connection: MSE, handshake, interested, then `blocks` requests. */
async function requestBlocks(target: WarmUpTarget, infohash: string, opts: WarmUpOptions): Promise<number> {
  const Wire = await loadWire();
  const blockLength = Math.min(opts.blockLength, PIECE_LENGTH);
  const perPiece = Math.floor(PIECE_LENGTH / blockLength);
  // Requests in flight never repeat a block: bittorrent-protocol answers only the first of two
  // identical outstanding requests.
  const distinct = perPiece * PIECES;
  // Answers can come out of order (a cached piece overtakes a read), so keep the window well below
  // the number of distinct blocks.
  const window = Math.max(1, Math.min(opts.window, distinct / 2));
  return new Promise((resolve) => {
    const sock: Socket = connect({ host: target.host, port: target.port });
    const wire = new Wire("tcpOutgoing", 1);
    let sent = 0;
    let received = 0;
    let inFlight = 0;
    let settled = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      wire.destroy();
      sock.destroy();
      resolve(received);
    };
    const timer = setTimeout(finish, opts.timeoutMs);
    timer.unref?.();
    sock.on("error", finish);
    sock.on("close", finish);
    wire.on("error", finish);
    wire.on("close", finish);

    const pump = () => {
      while (!settled && inFlight < window && sent < opts.blocks) {
        const block = sent % distinct;
        sent++;
        inFlight++;
        wire.request(Math.floor(block / perPiece), (block % perPiece) * blockLength, blockLength, (err) => {
          inFlight--;
          if (err || target.cancelled()) return finish();
          received++;
          // Real leechers announce each piece they complete; never the last one here, or the seeder
          // would take us for a seeder and choke us (webtorrent's alwaysChokeSeeders).
          const piece = Math.floor(block / perPiece);
          if (received % perPiece === 0 && piece < PIECES - 1) wire.have(piece);
          if (received >= opts.blocks) finish();
          else pump();
        });
      }
    };
    // Interested once the seeder said what it has, as real leechers do (webtorrent only listens
    // for 'interested' from then on).
    wire.once("have-all", () => wire.interested());
    wire.once("bitfield", () => wire.interested());
    wire.once("unchoke", pump);
    wire.once("crypto-handshake", () =>
      wire.handshake(infohash, randomBytes(20).toString("hex"), { dht: false, fast: true }),
    );
    (sock.pipe(wire as unknown as NodeJS.WritableStream) as unknown as LeecherWire).pipe(sock);
    sock.once("connect", () => wire.startEncryption(infohash));
  });
}
