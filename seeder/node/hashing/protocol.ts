/** Messages between the event loop (hash-workers.ts) and a hash worker (hash-worker.ts). */
import type { PieceHashes } from "./stream-hasher";

export type ToWorker =
  /** A new stream to hash; `pieceLength` 0: no piece hashes. */
  | { op: "open"; id: number; pieceLength: number; expectedSize: number }
  /** The next `len` bytes of stream `id`, at the start of `buf`; `seq` counts 0, 1, 2, … per stream. */
  | { op: "data"; id: number; seq: number; buf: SharedArrayBuffer; len: number }
  /** The stream is complete at `size` bytes: reply with its digests. */
  | { op: "finish"; id: number; size: number }
  /** Forget the stream (the writer was aborted). */
  | { op: "drop"; id: number };

export type FromWorker =
  /** Block `seq` of stream `id` is hashed: its buffer may be reused. */
  | { op: "ack"; id: number; seq: number }
  | { op: "result"; id: number; sha256: string; size: number; pieces: PieceHashes | null }
  | { op: "error"; id: number; message: string };
