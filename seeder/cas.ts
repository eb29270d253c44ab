/**
 * Content-addressed store. A blob is named by the full SHA-256 of its bytes:
 *   <base>/cas/sha256/ab/cd/<64 hex>
 * Bytes are streamed into a temp file under <base>/tmp while hashed, fsynced, then renamed into
 * place; the directory is fsynced too, so a crash leaves either no blob or a whole one, never a
 * partial one under a content name. Temp files of a crashed run are removed at start-up.
 */
import { createHash, randomUUID } from "node:crypto";
import { constants, createReadStream } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import { mkdir, open, readdir, rename, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";

const HEX64 = /^[0-9a-f]{64}$/;

export interface StoredBlob {
  sha256: string;
  size: number;
  path: string;
  /** BitTorrent v1 piece hashes computed while the bytes streamed in (see WriterOptions). */
  pieces?: { pieceLength: number; hashes: Uint8Array };
}

export interface WriterOptions {
  /**
   * The body's size, when the origin announced it. With `pieceLengthFor` set on the store, the
   * writer then also computes the torrent's SHA-1 piece hashes as bytes arrive, so packaging need
   * not read the blob again. If the final size differs, the piece hashes are dropped.
   */
  expectedSize?: number | null;
}

export class ContentStore {
  readonly casRoot: string;
  readonly tmpRoot: string;

  constructor(
    readonly basePath: string,
    /** The torrent piece length for a body of this size (enables hashing pieces while writing). */
    readonly pieceLengthFor?: (size: number) => number,
  ) {
    this.casRoot = join(basePath, "cas", "sha256");
    this.tmpRoot = join(basePath, "tmp");
  }

  async init(): Promise<void> {
    await mkdir(this.casRoot, { recursive: true });
    // Anything in tmp belongs to a run that died mid-write: it was never a blob, drop it.
    await rm(this.tmpRoot, { recursive: true, force: true });
    await mkdir(this.tmpRoot, { recursive: true });
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

  /** A fresh temp file to stream a body into. */
  async createWriter(opts: WriterOptions = {}): Promise<BlobWriter> {
    const path = join(this.tmpRoot, `${randomUUID()}.part`);
    const fh = await open(path, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o644);
    const size = opts.expectedSize;
    const pieceLength = size && size > 0 && this.pieceLengthFor ? this.pieceLengthFor(size) : null;
    return new BlobWriter(this, path, fh, pieceLength ? new PieceHasher(pieceLength, size!) : null);
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

export class BlobWriter {
  private readonly hash = createHash("sha256");
  private written = 0;
  private closed = false;

  constructor(
    private readonly store: ContentStore,
    readonly tempPath: string,
    private readonly fh: FileHandle,
    private readonly pieces: PieceHasher | null = null,
  ) {}

  get size(): number {
    return this.written;
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.closed) throw new Error("writer is closed");
    this.hash.update(chunk);
    this.pieces?.update(chunk);
    let off = 0;
    while (off < chunk.byteLength) {
      const { bytesWritten } = await this.fh.write(chunk, off, chunk.byteLength - off);
      off += bytesWritten;
    }
    this.written += chunk.byteLength;
  }

  /** fsync, rename into the store under the content's hash, fsync the directory. */
  async commit(): Promise<StoredBlob> {
    if (this.closed) throw new Error("writer is closed");
    this.closed = true;
    const sha256 = this.hash.digest("hex");
    await this.fh.sync();
    await this.fh.close();
    const dest = this.store.pathFor(sha256);
    await mkdir(dirname(dest), { recursive: true });
    // Same bytes, same name: if the blob exists already this rename replaces it with identical
    // content, which is atomic and harmless.
    await rename(this.tempPath, dest);
    await syncDir(dirname(dest));
    const pieces = this.pieces?.finish(this.written) ?? undefined;
    return { sha256, size: this.written, path: dest, ...(pieces ? { pieces } : {}) };
  }

  async abort(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      await this.fh.close().catch(() => {});
    }
    await rm(this.tempPath, { force: true });
  }
}

/** SHA-1 of each `pieceLength` slice of the stream (BitTorrent v1 `pieces`). */
class PieceHasher {
  private readonly digests: Buffer[] = [];
  private current = createHash("sha1");
  private fill = 0;
  private total = 0;

  constructor(
    readonly pieceLength: number,
    private readonly expectedSize: number,
  ) {}

  update(chunk: Uint8Array): void {
    let off = 0;
    this.total += chunk.byteLength;
    while (off < chunk.byteLength) {
      const take = Math.min(chunk.byteLength - off, this.pieceLength - this.fill);
      this.current.update(chunk.subarray(off, off + take));
      this.fill += take;
      off += take;
      if (this.fill === this.pieceLength) {
        this.digests.push(this.current.digest());
        this.current = createHash("sha1");
        this.fill = 0;
      }
    }
  }

  finish(size: number): { pieceLength: number; hashes: Uint8Array } | null {
    if (size !== this.expectedSize || this.total !== size) return null;
    if (this.fill > 0) this.digests.push(this.current.digest());
    return { pieceLength: this.pieceLength, hashes: Buffer.concat(this.digests) };
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
