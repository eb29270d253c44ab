/**
 * The hashes a blob needs while its bytes stream in: SHA-256 of the whole stream (the blob's
 * content name) and, when the final size is announced, BitTorrent v1 piece hashes (SHA-1 of each
 * `pieceLength` slice). Used on the event loop for bodies that fit in one block, and in the hash
 * worker (hash-worker.ts) for everything larger.
 *
 * Bun.CryptoHasher rather than node:crypto: same BoringSSL speed, and a worker that does not load
 * node:crypto is ~3 MiB smaller.
 */

export interface PieceHashes {
  pieceLength: number;
  hashes: Uint8Array;
}

export interface StreamDigest {
  sha256: string;
  /** Bytes hashed. */
  size: number;
  pieces: PieceHashes | null;
}

export class StreamHasher {
  private readonly sha256 = new Bun.CryptoHasher("sha256");
  private readonly pieces: PieceHasher | null;
  private total = 0;

  /** `pieceLength` null or 0: no piece hashes. */
  constructor(pieceLength: number | null, expectedSize: number | null) {
    this.pieces =
      pieceLength && pieceLength > 0 && expectedSize && expectedSize > 0
        ? new PieceHasher(pieceLength, expectedSize)
        : null;
  }

  update(chunk: Uint8Array): void {
    this.sha256.update(chunk);
    this.pieces?.update(chunk);
    this.total += chunk.byteLength;
  }

  /** `size`: the bytes the writer took; piece hashes are dropped unless it is the announced size. */
  digest(size: number): StreamDigest {
    if (size !== this.total) throw new Error(`hashed ${this.total} bytes, but ${size} were written`);
    return { sha256: this.sha256.digest("hex"), size: this.total, pieces: this.pieces?.finish(size) ?? null };
  }
}

/** SHA-1 of each `pieceLength` slice of the stream (BitTorrent v1 `pieces`). */
export class PieceHasher {
  private readonly digests: Uint8Array[] = [];
  private current = new Bun.CryptoHasher("sha1");
  private fill = 0;
  private total = 0;

  constructor(
    readonly pieceLength: number,
    private readonly expectedSize: number,
  ) {}

  update(chunk: Uint8Array): void {
    let off = 0;
    this.total += chunk.byteLength;
    // Past the announced size the hashes are dropped at the end anyway; don't spend SHA-1 on it.
    if (this.total > this.expectedSize) return;
    while (off < chunk.byteLength) {
      const take = Math.min(chunk.byteLength - off, this.pieceLength - this.fill);
      this.current.update(chunk.subarray(off, off + take));
      this.fill += take;
      off += take;
      if (this.fill === this.pieceLength) {
        this.digests.push(this.current.digest());
        this.current = new Bun.CryptoHasher("sha1");
        this.fill = 0;
      }
    }
  }

  finish(size: number): PieceHashes | null {
    if (size !== this.expectedSize || this.total !== size) return null;
    if (this.fill > 0) this.digests.push(this.current.digest());
    return { pieceLength: this.pieceLength, hashes: Buffer.concat(this.digests) };
  }
}
