/**
 * Content-addressed store. A blob is named by the full SHA-256 of its bytes:
 *   <base>/cas/sha256/ab/cd/<64 hex>
 * Bytes are streamed into a temp file under <base>/tmp while hashed (in a worker thread, see
 * BlobWriter), fsynced, then renamed into place; the directory is fsynced too, so a crash leaves
 * either no blob or a whole one, never a partial one under a content name.
 *
 * A job's body is written to <base>/tmp/<job id>.part. When the body can be resumed (the fetcher
 * says so by handing over what it needs to ask for the rest: URL, validator, length, in
 * <job id>.json), a fetch that stops part-way keeps the file (`keep`), and a later attempt at the
 * same job, also after a restart, continues from the bytes on disk (`openPartial`,
 * `resumeWriter`). The node removes a job's partial file when the job ends (`removePartial`). At
 * start-up every other temp file is removed, and so is a partial written before the machine's
 * last boot: only a process crash is sure to leave every written byte in place (the page cache
 * survives it, a power cut may not).
 *
 * Blobs are removed (`remove`) when nothing needs them any more. Whether something does is the
 * caller's question (the database, what it seeds); the store adds what the database cannot know:
 * a blob just committed by a fetch whose job has not recorded its hash yet. `commit` pins the hash
 * before the blob appears and the pin holds until the caller releases it, once its job's row
 * records the hash (or the job ends). A per-hash lock orders the rename of `commit` and the unlink
 * of `remove`, so a removal whose checks ran before a commit can never unlink the blob that
 * commit puts in place. One process owns a store (storage.ts holds an flock on the folder), so an
 * in-process lock and in-process pins cover every writer.
 *
 * Space: the store counts its blobs' bytes (at init, then on every commit and removal) and what
 * open writers claimed, and refuses a body that would cross STORAGE__MAX_BYTES or eat into
 * STORAGE__MIN_FREE_BYTES after letting the node free space (store-space.ts).
 */
import { createHash, randomUUID } from "node:crypto";
import { constants, createReadStream, readFileSync } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { openRemoteHash, type RemoteHash } from "./hashing/hash-workers";
import { type StreamDigest, StreamHasher } from "./hashing/stream-hasher";
import { diskSpace, InsufficientStorage, MARGIN_STEP, NO_LIMITS, type SpaceLimits } from "./store-space";

const HEX64 = /^[0-9a-f]{64}$/;
/** A job id that may name a temp file. */
const PARTIAL_KEY = /^[A-Za-z0-9-]{1,64}$/;

/** This boot of the machine (Linux), or null: partial files of another boot are not trusted. */
const BOOT_ID: string | null = (() => {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim() || null;
  } catch {
    return null;
  }
})();

/** A kept partial body: its bytes on disk and what the fetcher stored to ask for the rest. */
export interface PartialBody {
  key: string;
  size: number;
  meta: unknown;
}

export interface StoredBlob {
  sha256: string;
  size: number;
  path: string;
  /** BitTorrent v1 piece hashes computed while the bytes streamed in (see WriterOptions). */
  pieces?: { pieceLength: number; hashes: Uint8Array };
  /** Keeps `remove` away from the blob until released (see ContentStore.pin). */
  pin: BlobPin;
}

/**
 * The bytes written are not the ones the caller expected (`commit({ sha256 })`): nothing was
 * stored, the temp file is gone.
 */
export class ContentMismatch extends Error {
  constructor(
    readonly expected: string,
    readonly actual: string,
  ) {
    super(`content SHA-256 ${actual} is not the expected ${expected}`);
  }
}

/** A hold on a blob: `remove` leaves it alone until `release()` (idempotent). */
export interface BlobPin {
  release(): void;
}

export interface WriterOptions {
  /**
   * The body's size, when the origin announced it. With `pieceLengthFor` set on the store, the
   * writer then also computes the torrent's SHA-1 piece hashes as bytes arrive, so packaging need
   * not read the blob again. If the final size differs, the piece hashes are dropped.
   */
  expectedSize?: number | null;
  /**
   * Name the temp file after this job (`<key>.part`). With `resume`, the file is also kept when
   * the write stops part-way (BlobWriter.keep) and `resume` is stored next to it for the attempt
   * that continues it.
   */
  key?: string;
  resume?: unknown;
}

export class ContentStore {
  readonly casRoot: string;
  readonly tmpRoot: string;
  /** Hash -> holds taken by `pin` and not released yet. */
  private readonly pins = new Map<string, number>();
  /** Hash -> the tail of its lock queue (see withLock). */
  private readonly locks = new Map<string, Promise<void>>();
  /** Bytes of the blobs in the store: counted at init, then kept by commit and remove. */
  private blobBytes = 0;
  /** Writers not committed or discarded yet; their claims count as used. */
  private readonly writers = new Set<BlobWriter>();
  /**
   * Frees space when a claim does not fit (the node removes content no live job needs); set by
   * the node. One run at a time: claims that come short meanwhile wait for the same run.
   */
  reclaim: (() => Promise<void>) | null = null;
  private reclaiming: Promise<void> | null = null;
  /** Job id -> bytes of its kept partial file (no writer has it open). */
  private readonly kept = new Map<string, number>();
  /** Job ids whose temp file a writer has open. */
  private readonly busy = new Set<string>();

  constructor(
    readonly basePath: string,
    /** The torrent piece length for a body of this size (enables hashing pieces while writing). */
    readonly pieceLengthFor?: (size: number) => number,
    readonly limits: SpaceLimits = NO_LIMITS,
  ) {
    this.casRoot = join(basePath, "cas", "sha256");
    this.tmpRoot = join(basePath, "tmp");
  }

  async init(): Promise<void> {
    await mkdir(this.casRoot, { recursive: true, mode: 0o700 });
    await mkdir(this.tmpRoot, { recursive: true, mode: 0o700 });
    // Anything in tmp belongs to a run that died mid-write: it was never a blob. Only a resumable
    // job's partial body of this boot stays, for the job to continue (the node removes those of
    // jobs that ended meanwhile).
    const names = await readdir(this.tmpRoot);
    const keep = new Set<string>();
    for (const name of names) {
      const key = name.endsWith(".part") ? name.slice(0, -5) : null;
      if (!key || !PARTIAL_KEY.test(key) || !names.includes(`${key}.json`)) continue;
      if ((await this.readResume(key)) === undefined) continue;
      const size = await stat(join(this.tmpRoot, name)).then((st) => st.size);
      this.kept.set(key, size);
      keep.add(name).add(`${key}.json`);
    }
    for (const name of names)
      if (!keep.has(name)) await rm(join(this.tmpRoot, name), { recursive: true, force: true });
    let bytes = 0;
    for await (const hash of this.blobs()) bytes += (await this.size(hash)) ?? 0;
    this.blobBytes = bytes;
  }

  /** Bytes the store holds or has promised: its blobs plus what open writers claimed. */
  usedBytes(): number {
    let n = this.blobBytes;
    for (const size of this.kept.values()) n += size;
    for (const w of this.writers) n += w.claimed;
    return n;
  }

  /**
   * Free space on the store's disk when it is below STORAGE__MIN_FREE_BYTES (counting what open
   * writers announced but have not written yet), else null; always null without a margin.
   */
  async belowMargin(): Promise<{ free: number; minFree: number } | null> {
    const minFree = this.limits.minFreeBytes;
    if (minFree <= 0) return null;
    const free = (await diskSpace(this.casRoot)).free - this.promised(null);
    return free < minFree ? { free, minFree } : null;
  }

  /** Bytes open writers (but `except`) claimed and that are not in their files yet. */
  private promised(except: BlobWriter | null): number {
    let n = 0;
    for (const w of this.writers) if (w !== except) n += Math.max(0, w.claimed - w.flushed);
    return n;
  }

  /**
   * @internal (BlobWriter) Extend `w`'s claim to `total` bytes. Throws InsufficientStorage when
   * it does not fit even after a reclaim run. Synchronous (no await) when it fits in the cap and
   * needs no look at the disk, which is every chunk of most bodies.
   */
  claim(w: BlobWriter, total: number, sizeKnown: boolean): Promise<void> | undefined {
    const { maxBytes, minFreeBytes } = this.limits;
    const askDisk = minFreeBytes > 0 && total > w.marginTo;
    if (
      !askDisk &&
      (maxBytes <= 0 || total <= w.claimed || this.usedBytes() - w.claimed + total <= maxBytes)
    ) {
      w.claimed = Math.max(w.claimed, total);
      return undefined;
    }
    return (async () => {
      let problem = await this.shortfall(w, total, askDisk, sizeKnown);
      // Larger than the whole cap: freeing space cannot help.
      if (problem && !(maxBytes > 0 && total > maxBytes)) {
        this.reclaiming ??= (this.reclaim?.() ?? Promise.resolve()).finally(() => {
          this.reclaiming = null;
        });
        await this.reclaiming;
        problem = await this.shortfall(w, total, askDisk, sizeKnown);
      }
      if (problem) throw new InsufficientStorage(problem);
      w.claimed = Math.max(w.claimed, total);
      // A body of unknown size asks the disk again only after MARGIN_STEP more bytes: the margin
      // may be undershot by that much per such writer, which the default margin easily absorbs.
      if (askDisk) w.marginTo = sizeKnown ? total : total + MARGIN_STEP;
    })();
  }

  /** Why `w` cannot grow to `total` bytes (a message naming figures and setting), or null. */
  private async shortfall(
    w: BlobWriter,
    total: number,
    askDisk: boolean,
    sizeKnown: boolean,
  ): Promise<string | null> {
    const { maxBytes, minFreeBytes } = this.limits;
    const body = sizeKnown
      ? `The body (${total} bytes)`
      : `The body (${total} bytes so far, size not announced)`;
    const after = "even after removing content no live request needs";
    if (maxBytes > 0) {
      if (total > maxBytes)
        return `${body} is larger than this node's store may hold in all (STORAGE__MAX_BYTES=${maxBytes} bytes)`;
      const used = this.usedBytes() - w.claimed + total;
      if (used > maxBytes)
        return `${body} does not fit: this node's store would hold ${used} bytes, over STORAGE__MAX_BYTES=${maxBytes} bytes, ${after}`;
    }
    if (askDisk) {
      const free = (await diskSpace(this.casRoot)).free - this.promised(w) - Math.max(0, total - w.flushed);
      if (free < minFreeBytes)
        return `${body} does not fit: it would leave ${Math.max(0, free)} bytes free on the storage disk, under STORAGE__MIN_FREE_BYTES=${minFreeBytes} bytes, ${after}`;
    }
    return null;
  }

  /**
   * @internal (BlobWriter) `w` is done: committed (adding `added` new blob bytes), discarded, or
   * kept with `keptBytes` on disk.
   */
  closeWriter(w: BlobWriter, added = 0, keptBytes: number | null = null): void {
    this.writers.delete(w);
    this.blobBytes += added;
    if (w.key) {
      this.busy.delete(w.key);
      if (keptBytes !== null) this.kept.set(w.key, keptBytes);
    }
  }

  private resumePath(key: string): string {
    return join(this.tmpRoot, `${key}.json`);
  }

  /** What was stored to resume `key`, or undefined when there is none of this boot. */
  private async readResume(key: string): Promise<unknown> {
    try {
      const saved = JSON.parse(await readFile(this.resumePath(key), "utf8")) as {
        boot?: unknown;
        resume?: unknown;
      };
      return BOOT_ID !== null && saved.boot === BOOT_ID ? saved.resume : undefined;
    } catch {
      return undefined;
    }
  }

  /** Remove a kept partial body and its resume data (no writer has it open). */
  private async dropKept(key: string): Promise<void> {
    this.kept.delete(key);
    await rm(join(this.tmpRoot, `${key}.part`), { force: true });
    await rm(this.resumePath(key), { force: true });
  }

  /** Jobs with a kept partial body (no writer has it open). */
  partials(): string[] {
    return [...this.kept.keys()];
  }

  /** Remove job `key`'s partial body, unless a writer has it open. True if one was removed. */
  async removePartial(key: string): Promise<boolean> {
    if (!this.kept.has(key) || this.busy.has(key)) return false;
    await this.dropKept(key);
    return true;
  }

  /**
   * The kept partial body of job `key`, held for the caller, who then either continues it
   * (`resumeWriter`) or lets it go (`dropPartial`). Null when there is none.
   */
  async openPartial(key: string): Promise<PartialBody | null> {
    if (!this.kept.has(key) || this.busy.has(key)) return null;
    this.busy.add(key);
    const meta = await this.readResume(key);
    const size = await stat(join(this.tmpRoot, `${key}.part`)).then(
      (st) => st.size,
      () => null,
    );
    if (meta === undefined || size === null || size === 0) {
      await this.dropPartial({ key, size: 0, meta });
      return null;
    }
    return { key, size, meta };
  }

  /** Let go of a partial body from openPartial without continuing it: it is removed. */
  async dropPartial(partial: PartialBody): Promise<void> {
    await this.dropKept(partial.key);
    this.busy.delete(partial.key);
  }

  /**
   * A writer that continues `partial` (from openPartial): the bytes on disk are read back through
   * the hashes (not written again), so the digest and piece hashes cover the whole body.
   */
  async resumeWriter(partial: PartialBody, opts: WriterOptions = {}): Promise<BlobWriter> {
    const { key } = partial;
    this.kept.delete(key);
    const path = join(this.tmpRoot, `${key}.part`);
    let fh: FileHandle;
    try {
      fh = await open(path, constants.O_WRONLY, 0o600);
      // Bytes past what we read back (a write that raced the crash) are dropped, not trusted.
      await fh.truncate(partial.size);
    } catch (e) {
      await this.dropPartial(partial);
      throw e;
    }
    const size = opts.expectedSize;
    const pieceLength = size && size > 0 && this.pieceLengthFor ? this.pieceLengthFor(size) : null;
    const w = new BlobWriter(this, path, fh, pieceLength, size ?? null, key, true, partial.size);
    this.writers.add(w);
    try {
      if (size && size > 0) await this.claim(w, size, true);
      for await (const chunk of createReadStream(path, { start: 0, end: partial.size - 1 }))
        await w.write(chunk as Buffer);
      if (w.size !== partial.size) throw new Error(`read back ${w.size} of ${partial.size} bytes`);
    } catch (e) {
      await w.abort();
      throw e;
    }
    return w;
  }

  pathFor(sha256: string): string {
    if (!HEX64.test(sha256)) throw new Error(`not a sha256 hex digest: ${sha256}`);
    return join(this.casRoot, sha256.slice(0, 2), sha256.slice(2, 4), sha256);
  }

  async has(sha256: string): Promise<boolean> {
    return (await this.size(sha256)) !== null;
  }

  async size(sha256: string): Promise<number | null> {
    try {
      const st = await stat(this.pathFor(sha256));
      return st.isFile() ? st.size : null;
    } catch {
      return null;
    }
  }

  /**
   * Hold the blob `sha256` against `remove` (counted: each pin needs its own release). Taken
   * synchronously, so a pin taken before an await is seen by any removal that checks after it.
   */
  pin(sha256: string): BlobPin {
    this.pins.set(sha256, (this.pins.get(sha256) ?? 0) + 1);
    let held = true;
    return {
      release: () => {
        if (!held) return;
        held = false;
        const n = (this.pins.get(sha256) ?? 1) - 1;
        if (n > 0) this.pins.set(sha256, n);
        else this.pins.delete(sha256);
      },
    };
  }

  isPinned(sha256: string): boolean {
    return this.pins.has(sha256);
  }

  /**
   * Run `fn` while holding the lock of one hash (FIFO; other hashes are not held up). Used by
   * commit's rename, by `remove`, and by whoever starts serving a blob and must not have it
   * removed between its check and its start (the node's re-seeding).
   */
  async withLock<T>(sha256: string, fn: () => Promise<T>): Promise<T> {
    const before = this.locks.get(sha256);
    let unlock!: () => void;
    const mine = new Promise<void>((resolve) => {
      unlock = resolve;
    });
    this.locks.set(sha256, mine);
    try {
      await before;
      return await fn();
    } finally {
      unlock();
      if (this.locks.get(sha256) === mine) this.locks.delete(sha256);
    }
  }

  /**
   * Delete a blob unless it is pinned or `needed()` says it is still used, both asked under the
   * hash's lock. A commit that pins while `needed()` runs is not looked at again: its rename waits
   * for this lock and puts the blob back after the unlink, before that commit returns (and before
   * anyone can rely on its pin). Returns the bytes removed, or null when it was kept or absent.
   * The unlink is atomic and the directory is fsynced: a crash leaves the whole blob or none; a
   * blob a crash left behind is found by the node's start-up sweep.
   */
  async remove(sha256: string, needed: () => Promise<boolean>): Promise<number | null> {
    const path = this.pathFor(sha256);
    return this.withLock(sha256, async () => {
      if (this.isPinned(sha256) || (await needed())) return null;
      const size = await this.size(sha256);
      if (size === null) return null;
      await rm(path, { force: true });
      this.blobBytes = Math.max(0, this.blobBytes - size);
      await syncDir(dirname(path));
      return size;
    });
  }

  /** Hashes of every blob in the store (the start-up sweep), read one fan-out folder at a time. */
  async *blobs(): AsyncGenerator<string> {
    for (const a of await readdirOrEmpty(this.casRoot))
      for (const b of await readdirOrEmpty(join(this.casRoot, a)))
        for (const name of await readdirOrEmpty(join(this.casRoot, a, b)))
          if (HEX64.test(name) && name.startsWith(a + b)) yield name;
  }

  /** A fresh temp file to stream a body into. */
  async createWriter(opts: WriterOptions = {}): Promise<BlobWriter> {
    // A job whose file is open already (its previous run still winding down) gets an unnamed one.
    const key = opts.key && PARTIAL_KEY.test(opts.key) && !this.busy.has(opts.key) ? opts.key : null;
    if (key) {
      this.busy.add(key);
      await this.dropKept(key);
    }
    const path = join(this.tmpRoot, `${key ?? randomUUID()}.part`);
    let fh: FileHandle;
    try {
      // 0600 like everything under the storage folder (a blob is this node's, served by it alone).
      // A job's own name: anything left under it is of an earlier attempt, replaced.
      const flags = constants.O_CREAT | constants.O_WRONLY | (key ? constants.O_TRUNC : constants.O_EXCL);
      fh = await open(path, flags, 0o600);
      if (key && opts.resume !== undefined)
        await writeFile(this.resumePath(key), JSON.stringify({ boot: BOOT_ID, resume: opts.resume }), {
          mode: 0o600,
        });
    } catch (e) {
      if (key) {
        await rm(path, { force: true });
        this.busy.delete(key);
      }
      throw e;
    }
    const size = opts.expectedSize;
    const pieceLength = size && size > 0 && this.pieceLengthFor ? this.pieceLengthFor(size) : null;
    const w = new BlobWriter(this, path, fh, pieceLength, size ?? null, key, opts.resume !== undefined);
    this.writers.add(w);
    // An announced size is claimed whole before any byte is written.
    if (size && size > 0)
      try {
        await this.claim(w, size, true);
      } catch (e) {
        await w.abort();
        throw e;
      }
    return w;
  }

  /** Re-hash a stored blob (used by verification and tests; the hot path never re-reads). */
  async verify(sha256: string): Promise<boolean> {
    const h = createHash("sha256");
    for await (const chunk of createReadStream(this.pathFor(sha256))) h.update(chunk as Buffer);
    return h.digest("hex") === sha256;
  }

  /** Can we still write? (health check: creates and removes a tiny file) */
  async probe(): Promise<{ ok: boolean; error?: string }> {
    const path = join(this.tmpRoot, `probe-${randomUUID()}`);
    try {
      const fh = await open(path, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600);
      await fh.close();
      await rm(path, { force: true });
      return { ok: true };
    } catch (e) {
      return { ok: false, error: `storage not writable: ${(e as NodeJS.ErrnoException).code ?? String(e)}` };
    }
  }

  /** Names of temp files currently present (for tests and health). */
  async tempFiles(): Promise<string[]> {
    try {
      return await readdir(this.tmpRoot);
    } catch {
      return [];
    }
  }
}

/**
 * Bytes per block handed to the hash worker and to the file, and blocks a writer may have in flight
 * (being hashed or written): 768 KiB per writer. Measured on 1 GiB through the service (2 cores,
 * 6 runs each): 3 × 256 KiB is as fast as 4 × 1 MiB and its peak RSS ~10 MiB lower, 8 × 1 MiB
 * ~20 MiB higher. More than the blocks themselves: most of the peak is the fetcher's garbage
 * chunks awaiting collection, and a tighter window evidently lets the collector keep up better.
 */
const BLOCK = 256 * 1024;
const MAX_BLOCKS = 3;
/** The first block of a body whose size was not announced (most such bodies are small). */
const FIRST_BLOCK_UNSIZED = 64 * 1024;
/** Ask the kernel to write back this much at a time while streaming, so the final fsync is short. */
const SYNC_EVERY = 64 * 1024 * 1024;
/** Idle blocks kept for the next writer. */
const SPARE_MAX = MAX_BLOCKS;
const spare: SharedArrayBuffer[] = [];

interface Block {
  buf: SharedArrayBuffer;
  view: Uint8Array;
  /** Users not done with it: the hash worker and the file write. */
  users: number;
}

/**
 * Streams a body into a temp file. Bytes are copied into blocks; a full block goes to the file
 * and, at the same time, to a hash worker (seeder/node/hashing) for SHA-256 and the piece hashes, so
 * the event loop only copies. At most MAX_BLOCKS are in flight: `write` waits for one to come back
 * (backpressure). A body that fits in one block never leaves the event loop. A failed file write,
 * datasync or hash worker fails the writer: later writes and `commit` throw, nothing is committed.
 */
export class BlobWriter {
  private written = 0;
  private closed = false;
  private aborted = false;
  private fhClosed = false;
  private failure: unknown = null;
  /** write() calls in order, whether or not the caller awaits each. */
  private queue: Promise<void> = Promise.resolve();
  private cur: Block | null = null;
  private fill = 0;
  private readonly free: Block[] = [];
  private blocks = 0;
  private wake: (() => void) | null = null;
  private remote: RemoteHash | null = null;
  /** Blocks sent to the worker, oldest first (acks come in order). */
  private readonly hashing: Block[] = [];
  private fileOffset = 0;
  private fileWrites: Promise<void> = Promise.resolve();
  private syncing: Promise<void> | null = null;
  private syncedTo = 0;
  private fileFailed = false;
  /** Bytes claimed from the store's space (ContentStore.claim): at least `size` once written. */
  claimed = 0;
  /** Bytes up to which the free-space margin was checked. */
  marginTo = 0;
  /** Bytes the file holds (blocks are written in order). */
  flushed = 0;

  constructor(
    private readonly store: ContentStore,
    readonly tempPath: string,
    private readonly fh: FileHandle,
    private readonly pieceLength: number | null = null,
    private readonly expectedSize: number | null = null,
    /** The job whose body this is (the temp file is named after it). */
    readonly key: string | null = null,
    /** The file may be kept when the write stops part-way (`keep`). */
    readonly resumable = false,
    /** Bytes already in the file (a resumed body): hashed again, not written again. */
    private readonly resumedFrom = 0,
  ) {}

  /** Bytes taken so far (all of them reach the file and the hashes, or the writer fails). */
  get size(): number {
    return this.written;
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.closed) throw new Error("writer is closed");
    const p = this.queue.then(() => this.put(chunk));
    this.queue = p.catch(() => {});
    return p;
  }

  /**
   * fsync, rename into the store under the content's hash, fsync the directory. With `sha256`,
   * only bytes of that hash are stored: others are discarded (ContentMismatch) before they get a
   * name in the store.
   */
  async commit(expect: { sha256?: string } = {}): Promise<StoredBlob> {
    if (this.closed) throw new Error("writer is closed");
    this.closed = true;
    try {
      await this.queue;
      this.check();
      let digest: StreamDigest | Promise<StreamDigest>;
      if (!this.remote) {
        // Never more than one block: hash it here, a worker round trip would cost more.
        const h = new StreamHasher(this.pieceLength, this.expectedSize);
        if (this.cur && this.fill > 0) {
          h.update(this.cur.view.subarray(0, this.fill));
          this.writeBlock(this.cur, this.fill, 1);
        }
        this.cur = null;
        digest = h.digest(this.written);
      } else {
        if (this.cur && this.fill > 0) this.dispatch();
        digest = this.remote.finish(this.written);
        // Don't leave it unhandled while the file writes are awaited; awaited below.
        digest.catch(() => {});
      }
      await this.fileWrites;
      await this.syncing;
      const d = await digest;
      this.check();
      if (d.size !== this.written) throw new Error(`hashed ${d.size} bytes of ${this.written}`);
      if (expect.sha256 !== undefined && d.sha256 !== expect.sha256)
        throw new ContentMismatch(expect.sha256, d.sha256);
      await this.fh.sync();
      this.fhClosed = true;
      await this.fh.close();
      const dest = this.store.pathFor(d.sha256);
      let added = 0;
      // Pinned before it appears, renamed under the hash's lock: a removal of the same hash
      // either finished before the rename (which then puts the blob back) or sees the pin.
      const pin = this.store.pin(d.sha256);
      try {
        await this.store.withLock(d.sha256, async () => {
          await mkdir(dirname(dest), { recursive: true, mode: 0o700 });
          added = (await this.store.size(d.sha256)) === null ? this.written : 0;
          // Same bytes, same name: if the blob exists already this rename replaces it with
          // identical content, which is atomic and harmless.
          await rename(this.tempPath, dest);
          await syncDir(dirname(dest));
        });
        if (this.resumable) await rm(this.resumePath, { force: true }).catch(() => {});
      } catch (e) {
        pin.release();
        throw e;
      }
      this.store.closeWriter(this, added);
      for (const b of this.free)
        if (b.buf.byteLength === BLOCK && spare.length < SPARE_MAX) spare.push(b.buf);
      this.free.length = 0;
      return {
        sha256: d.sha256,
        size: this.written,
        path: dest,
        pin,
        ...(d.pieces ? { pieces: { pieceLength: d.pieces.pieceLength, hashes: d.pieces.hashes } } : {}),
      };
    } catch (e) {
      await this.discard(e);
      throw e;
    }
  }

  async abort(): Promise<void> {
    this.closed = true;
    await this.discard(new Error("writer aborted"));
  }

  /**
   * Stop, and keep what reached the file for a later attempt of the same job (resumable writers
   * only; otherwise, or when a file write failed, this is `abort`). Returns the bytes kept.
   */
  async keep(): Promise<number> {
    if (!this.resumable || this.fileFailed || this.closed) {
      await this.abort();
      return 0;
    }
    this.closed = true;
    this.aborted = true;
    this.fail(new Error("writer kept for resume"));
    this.remote?.drop();
    await this.queue;
    await this.fileWrites;
    await this.syncing?.catch(() => {});
    if (this.fileFailed) {
      await this.discard(new Error("a file write failed"));
      return 0;
    }
    this.fhClosed = true;
    await this.fh.close().catch(() => {});
    // The file holds every block written in order (writes are chained): its size is the prefix.
    const size = await stat(this.tempPath).then((st) => st.size);
    this.store.closeWriter(this, 0, size);
    return size;
  }

  /** Stop everything in flight, close the file, remove it. Safe to call more than once. */
  private async discard(reason: unknown): Promise<void> {
    this.aborted = true;
    this.fail(reason);
    this.remote?.drop();
    await this.queue;
    // The fd must outlive every operation still using it.
    await this.fileWrites;
    await this.syncing?.catch(() => {});
    if (!this.fhClosed) {
      this.fhClosed = true;
      await this.fh.close().catch(() => {});
    }
    await rm(this.tempPath, { force: true });
    if (this.resumable) await rm(this.resumePath, { force: true });
    this.store.closeWriter(this);
  }

  /** Where the store keeps what is needed to resume this body (ContentStore.resumePath). */
  private get resumePath(): string {
    return this.tempPath.replace(/\.part$/, ".json");
  }

  private async put(chunk: Uint8Array): Promise<void> {
    this.check();
    const total = this.written + chunk.byteLength;
    if (total > this.claimed || total > this.marginTo) {
      // Most chunks fit without a look at the disk: no await for them (see ContentStore.claim).
      const pending = this.store.claim(this, total, this.expectedSize !== null);
      if (pending)
        await pending.catch((e) => {
          this.fail(e);
          throw e;
        });
    }
    let off = 0;
    while (off < chunk.byteLength) {
      this.check();
      // A full block goes out only when more bytes come: the last one may still be hashed here.
      if (this.cur && this.fill === this.cur.view.byteLength) this.dispatch();
      if (!this.cur) {
        this.cur = this.takeBlock() ?? (await this.waitForBlock());
        this.fill = 0;
      }
      const take = Math.min(chunk.byteLength - off, this.cur.view.byteLength - this.fill);
      this.cur.view.set(chunk.subarray(off, off + take), this.fill);
      this.fill += take;
      off += take;
      this.written += take;
    }
  }

  private check(): void {
    if (this.failure !== null) throw this.failure;
  }

  private fail(e: unknown): void {
    this.failure ??= e ?? new Error("writer failed");
    this.wake?.();
  }

  private takeBlock(): Block | null {
    const b = this.free.pop();
    if (b) return b;
    if (this.blocks >= MAX_BLOCKS) return null;
    this.blocks++;
    // The first block of a small body is small: a 16 KiB body announced as such takes 16 KiB, one
    // of unknown size 64 KiB. Such a block is not reused (see release): full blocks follow.
    const exp = this.expectedSize;
    const first = this.written === 0 ? (exp == null ? FIRST_BLOCK_UNSIZED : exp > 0 ? exp : BLOCK) : BLOCK;
    const buf = first < BLOCK ? new SharedArrayBuffer(first) : (spare.pop() ?? new SharedArrayBuffer(BLOCK));
    return { buf, view: new Uint8Array(buf), users: 0 };
  }

  private async waitForBlock(): Promise<Block> {
    for (;;) {
      this.check();
      const b = this.takeBlock();
      if (b) return b;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      this.wake = null;
    }
  }

  private release(b: Block): void {
    if (--b.users > 0) return;
    if (b.view.byteLength < BLOCK) this.blocks--;
    else if (!this.aborted) this.free.push(b);
    this.wake?.();
  }

  /** The current block to the hash worker and to the file. */
  private dispatch(): void {
    const b = this.cur!;
    const len = this.fill;
    this.cur = null;
    this.fill = 0;
    this.remote ??= openRemoteHash(this.pieceLength ?? 0, this.expectedSize ?? 0, {
      ack: () => this.release(this.hashing.shift()!),
      fail: (e) => this.fail(e),
    });
    this.writeBlock(b, len, 2);
    this.hashing.push(b);
    this.remote.send(b.buf, len);
  }

  private writeBlock(b: Block, len: number, users: number): void {
    b.users = users;
    const pos = this.fileOffset;
    this.fileOffset += len;
    this.fileWrites = this.fileWrites
      .then(async () => {
        if (this.failure !== null) return;
        // A resumed body's first bytes are read back from the file only to be hashed.
        let off = Math.max(0, Math.min(len, this.resumedFrom - pos));
        while (off < len) {
          const { bytesWritten } = await this.fh.write(b.view, off, len - off, pos + off);
          off += bytesWritten;
        }
        this.flushed = pos + len;
        // Start write-back now and then, without waiting for it: the final fsync has less to do.
        if (pos + len - this.syncedTo >= SYNC_EVERY && !this.syncing && !this.closed) {
          this.syncedTo = pos + len;
          this.syncing = this.fh
            .datasync()
            .catch((e) => this.fail(e))
            .finally(() => {
              this.syncing = null;
            });
        }
      })
      .catch((e) => {
        this.fileFailed = true;
        this.fail(e);
      })
      .finally(() => this.release(b));
  }
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch {
    return [];
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
