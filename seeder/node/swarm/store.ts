/**
 * A read-only abstract-chunk-store that serves a torrent's pieces straight from one CAS blob.
 *
 * Why a custom store: webtorrent's default fs store lays files out as <path>/<torrent name>, so
 * seeding a blob named by its sha256 under a human torrent name makes every block read fail
 * silently. This store ignores names and reads the blob by offset, so any torrent name works and a
 * restarted node can re-seed with `skipVerify` without re-hashing anything.
 *
 * Why it looks like this (throughput): webtorrent asks for 16 KiB blocks
 * (`get(index, {offset, length})`). Each miss reads the WHOLE piece with one pread into one
 * buffer, keeps it in a small per-store cache, and answers every block of that piece with a view
 * (`subarray`) into it: one kernel copy per piece, no user-space copies. Views are safe because a
 * buffer is reused only once it has left the cache and every view of it has been reported written
 * (`chunkWritten`, below); otherwise the GC frees it once nothing holds it. Pass `storeCacheSlots: 0` to webtorrent so its own CacheChunkStore (which would
 * add an LRU on top) stays out of the way.
 *
 * How webtorrent builds it (lib/torrent.js `_onMetadata`):
 *   new Store(pieceLength, { ...storeOpts, torrent, path, files, length, name, addUID, rootDir, max })
 * `path` is overwritten by webtorrent, so the blob location travels as `storeOpts.blobPath`.
 * Construction must not throw (it runs inside an un-awaited async function); failures to open the
 * blob are reported on the first read instead.
 */
import { close as fsClose, open as fsOpen, read as fsRead } from "node:fs";

type Callback<T = void> = (err: Error | null, value?: T) => void;

export interface CasBlobStoreOptions {
  /** The CAS blob holding the torrent's single file, byte for byte. */
  blobPath: string;
  /** Torrent length in bytes (webtorrent passes this). */
  length: number;
  /** Upper bound for cached piece bytes; at least two pieces are kept whatever this says. */
  cacheBytes?: number;
  /** Drop cached pieces after this long without reads, so idle torrents hold no memory. */
  cacheIdleMs?: number;
}

const DEFAULT_CACHE_BYTES = 16 * 1024 * 1024;
const DEFAULT_CACHE_IDLE_MS = 5_000;

/**
 * Recycled piece buffers. A fresh 1 MiB Buffer is fresh memory from the kernel: each of its 256
 * pages faults and is zeroed on the read, which was about half of the seeder's system time
 * (~75,000–88,000 faults per 384 MiB, measured with process.resourceUsage()). A buffer goes back
 * here only when it has left the cache AND every view handed out of it has been written to a
 * socket (`chunkWritten`, called by seeder/patches/webtorrent-fast-pipes.ts from the socket's write callback). Views that
 * never reach that point (other consumers, the stock throttled pipes, a peer gone meanwhile) keep
 * their piece out of the pool for good: the GC frees it as before. Never too early, at worst
 * never.
 */
interface Piece {
  buf: Buffer;
  /** Views handed out and not yet written, plus pins while a cache hit waits for its microtask. */
  refs: number;
  cached: boolean;
  /** Already given back: a piece is recycled at most once. */
  recycled: boolean;
}
const POOL_BYTES = 32 * 1024 * 1024;
const pool = new Map<number, Buffer[]>();
let pooledBytes = 0;
/** View handed out -> its piece. */
const lent = new WeakMap<object, Piece>();

function takeBuffer(length: number): Buffer {
  const free = pool.get(length);
  const buf = free?.pop();
  if (buf) {
    pooledBytes -= length;
    return buf;
  }
  return Buffer.allocUnsafe(length);
}

function maybeRecycle(p: Piece): void {
  if (p.refs > 0 || p.cached || p.recycled) return;
  p.recycled = true;
  const length = p.buf.length;
  if (pooledBytes + length > POOL_BYTES) return;
  const free = pool.get(length) ?? [];
  if (free.length === 0) pool.set(length, free);
  free.push(p.buf);
  pooledBytes += length;
}

/**
 * A chunk has been written to a socket (its write callback ran): if it is a view from a
 * CasBlobStore, that view is done with. Anything else is ignored.
 */
export function chunkWritten(chunk: unknown): void {
  if (typeof chunk !== "object" || chunk === null) return;
  const p = lent.get(chunk);
  if (!p) return;
  lent.delete(chunk);
  p.refs--;
  maybeRecycle(p);
}

/** Drop the pooled buffers (idle node: give the memory back). */
export function drainBufferPool(): void {
  pool.clear();
  pooledBytes = 0;
}

export class CasBlobStore {
  readonly chunkLength: number;
  readonly length: number;
  private readonly blobPath: string;
  private readonly lastIndex: number;
  private readonly lastLength: number;
  private readonly maxCached: number;
  private readonly idleMs: number;

  private fd: number | null = null;
  private opening: Callback<number>[] | null = null;
  private closed = false;

  /** Whole pieces by index, in least-recently-used order (Map keeps insertion order). */
  private readonly cache = new Map<number, Piece>();
  /** Reads in flight, so concurrent block requests for one piece share one pread. */
  private readonly pending = new Map<number, Callback<Piece>[]>();
  private lastUse = 0;
  private idleTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(chunkLength: number, opts: CasBlobStoreOptions) {
    this.chunkLength = Number(chunkLength);
    this.length = Number(opts?.length);
    this.blobPath = String(opts?.blobPath ?? "");
    this.lastIndex = Math.max(0, Math.ceil(this.length / this.chunkLength) - 1);
    this.lastLength = this.length - this.lastIndex * this.chunkLength;
    const budget = opts?.cacheBytes ?? DEFAULT_CACHE_BYTES;
    this.maxCached = Math.max(2, Math.floor(budget / this.chunkLength));
    this.idleMs = opts?.cacheIdleMs ?? DEFAULT_CACHE_IDLE_MS;
  }

  /** Length of piece `index` (the last one is usually shorter). */
  pieceLength(index: number): number {
    return index === this.lastIndex ? this.lastLength : this.chunkLength;
  }

  get(
    index: number,
    opts: { offset?: number; length?: number } | null | Callback<Buffer>,
    cb?: Callback<Buffer>,
  ): void {
    if (typeof opts === "function") {
      this.get(index, null, opts);
      return;
    }
    const done = cb ?? (() => {});
    if (this.closed) {
      fail(done, new Error("store is closed"));
      return;
    }
    if (!Number.isInteger(index) || index < 0 || index > this.lastIndex || !(this.length > 0)) {
      fail(done, new Error(`piece ${index} out of range`));
      return;
    }
    const pieceLen = this.pieceLength(index);
    const offset = opts?.offset ?? 0;
    const length = opts?.length ?? pieceLen - offset;
    if (offset < 0 || length < 0 || offset + length > pieceLen) {
      fail(done, new Error(`bad range ${offset}+${length} in piece ${index} of ${pieceLen}`));
      return;
    }
    this.lastUse = performance.now();
    this.piece(index, (err, p) => {
      if (err || !p) return done(err ?? new Error("no data"));
      // Always a new view, even for the whole piece: each one is counted until it is written.
      const view = p.buf.subarray(offset, offset + length);
      p.refs++;
      lent.set(view, p);
      done(null, view);
    });
  }

  put(index: number, _buf: Uint8Array, cb?: Callback): void {
    // We only ever seed complete blobs; a write means webtorrent thinks a piece is missing.
    fail(cb ?? (() => {}), new Error(`read-only store: refusing to write piece ${index}`));
  }

  close(cb?: Callback): void {
    this.shutdown(cb ?? (() => {}));
  }

  /** Same as close: destroying a torrent must never delete the CAS blob, which other torrents may share. */
  destroy(cb?: Callback): void {
    this.shutdown(cb ?? (() => {}));
  }

  private shutdown(cb: Callback): void {
    if (this.closed) {
      queueMicrotask(() => cb(null));
      return;
    }
    this.closed = true;
    this.dropCache();
    const err = new Error("store is closed");
    for (const waiters of this.pending.values()) for (const w of waiters) w(err);
    this.pending.clear();
    const fd = this.fd;
    this.fd = null;
    if (fd === null) {
      queueMicrotask(() => cb(null));
      return;
    }
    fsClose(fd, (e) => cb(e ?? null));
  }

  /** The whole piece, from the cache or one read. */
  private piece(index: number, cb: Callback<Piece>): void {
    const hit = this.cache.get(index);
    if (hit) {
      // Move to the most-recently-used end.
      this.cache.delete(index);
      this.cache.set(index, hit);
      // Pinned until the callback has taken its view: an eviction meanwhile must not recycle it.
      hit.refs++;
      queueMicrotask(() => {
        cb(null, hit);
        hit.refs--;
        maybeRecycle(hit);
      });
      return;
    }
    const waiting = this.pending.get(index);
    if (waiting) {
      waiting.push(cb);
      return;
    }
    const waiters: Callback<Piece>[] = [cb];
    this.pending.set(index, waiters);
    this.withFd((err, fd) => {
      if (err || fd === undefined) {
        this.settle(index, err ?? new Error("no file"));
        return;
      }
      const len = this.pieceLength(index);
      const p: Piece = { buf: takeBuffer(len), refs: 1, cached: false, recycled: false };
      readFully(fd, p.buf, index * this.chunkLength, (rerr) => {
        if (rerr) {
          this.settle(index, rerr);
          return;
        }
        if (!this.closed) this.remember(index, p);
        this.settle(index, null, p);
        // The read's own pin: the waiters hold their views by now.
        p.refs--;
        maybeRecycle(p);
      });
    });
  }

  private settle(index: number, err: Error | null, buf?: Piece): void {
    const waiters = this.pending.get(index);
    if (!waiters) return;
    this.pending.delete(index);
    for (const w of waiters) w(err, buf);
  }

  private remember(index: number, p: Piece): void {
    p.cached = true;
    this.cache.set(index, p);
    while (this.cache.size > this.maxCached) {
      const oldest = this.cache.keys().next().value as number;
      this.evict(oldest);
    }
    this.armIdleTimer();
  }

  private evict(index: number): void {
    const p = this.cache.get(index);
    if (!p) return;
    this.cache.delete(index);
    p.cached = false;
    maybeRecycle(p);
  }

  private clearCache(): void {
    for (const index of [...this.cache.keys()]) this.evict(index);
  }

  /** One timer per store, only while it holds cached pieces. */
  private armIdleTimer(): void {
    if (this.idleTimer) return;
    const check = () => {
      this.idleTimer = null;
      if (this.closed || this.cache.size === 0) return;
      const idle = performance.now() - this.lastUse;
      if (idle >= this.idleMs) {
        this.clearCache();
        drainBufferPool();
      } else {
        this.idleTimer = setTimeout(check, this.idleMs - idle + 1);
        this.idleTimer.unref?.();
      }
    };
    this.idleTimer = setTimeout(check, this.idleMs);
    this.idleTimer.unref?.();
  }

  private dropCache(): void {
    this.clearCache();
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }

  /** Open the blob once, on first use, and share the descriptor between all reads. */
  private withFd(cb: Callback<number>): void {
    if (this.fd !== null) {
      cb(null, this.fd);
      return;
    }
    if (this.opening) {
      this.opening.push(cb);
      return;
    }
    this.opening = [cb];
    fsOpen(this.blobPath, "r", (err, fd) => {
      const waiters = this.opening ?? [];
      this.opening = null;
      if (!err && this.closed) {
        fsClose(fd, () => {});
        for (const w of waiters) w(new Error("store is closed"));
        return;
      }
      if (!err) this.fd = fd;
      for (const w of waiters) w(err ?? null, err ? undefined : fd);
    });
  }
}

/** pread until `buf` is full; a short file is an error (the blob is not what the torrent says). */
function readFully(fd: number, buf: Buffer, position: number, cb: (err: Error | null) => void): void {
  let done = 0;
  const step = () => {
    fsRead(fd, buf, done, buf.length - done, position + done, (err, n) => {
      if (err) {
        cb(err);
        return;
      }
      if (n === 0) {
        cb(new Error(`blob is shorter than the torrent (EOF at ${position + done})`));
        return;
      }
      done += n;
      if (done < buf.length) step();
      else cb(null);
    });
  };
  step();
}

function fail<T>(cb: Callback<T>, err: Error): void {
  queueMicrotask(() => cb(err));
}
