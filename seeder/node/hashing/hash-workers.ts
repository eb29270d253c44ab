/**
 * Hash workers for the content store: the SHA-256 and SHA-1 piece hashes of a large body run on
 * another core than the event loop (which parses HTTP and writes the file meanwhile).
 *
 * One worker per spare core (at least one, at most four), created on first use; a stream sticks to
 * one worker, streams are spread round-robin. A worker holds the process open only while it has
 * streams to hash, and is terminated after a while without any. If a worker fails or exits, every
 * stream it had fails (its writers then refuse to commit) and the next stream gets a fresh worker.
 */
import { availableParallelism } from "node:os";
import type { FromWorker, ToWorker } from "./protocol";
import type { StreamDigest } from "./stream-hasher";

/** Bun's Worker has ref/unref (the DOM typings in tsconfig's lib win over bun-types here). */
type BunWorker = Worker & { ref(): void; unref(): void };

const IDLE_TERMINATE_MS = 30_000;
const WORKERS = Math.max(1, Math.min(4, availableParallelism() - 1));

export interface RemoteHashEvents {
  /** Block `seq` was hashed; its buffer may be reused. Acks come in order. */
  ack(seq: number): void;
  /** The stream cannot produce a digest (worker error or exit). Called at most once. */
  fail(err: Error): void;
}

/** One stream being hashed in a worker. */
export class RemoteHash {
  private seq = 0;
  private done = false;
  private result: { resolve: (d: StreamDigest) => void; reject: (e: Error) => void } | null = null;

  constructor(
    private readonly slot: WorkerSlot,
    private readonly worker: Worker,
    readonly id: number,
    private readonly events: RemoteHashEvents,
  ) {}

  /** Hash `len` bytes at the start of `buf` next. Not to be modified until acked. */
  send(buf: SharedArrayBuffer, len: number): void {
    if (this.done) throw new Error("hash stream is closed");
    this.slot.post(this.worker, { op: "data", id: this.id, seq: this.seq++, buf, len });
  }

  /** The digests, once every block sent so far is hashed; rejects if the worker fails. */
  finish(size: number): Promise<StreamDigest> {
    if (this.done) return Promise.reject(new Error("hash stream is closed"));
    return new Promise<StreamDigest>((resolve, reject) => {
      this.result = { resolve, reject };
      this.slot.post(this.worker, { op: "finish", id: this.id, size });
    });
  }

  /** Forget the stream (abort). */
  drop(): void {
    if (this.done) return;
    this.settle();
    this.slot.post(this.worker, { op: "drop", id: this.id });
  }

  /** @internal from WorkerSlot */
  onMessage(m: FromWorker): void {
    if (this.done) return;
    if (m.op === "ack") this.events.ack(m.seq);
    else if (m.op === "result") {
      const r = this.result;
      this.settle();
      const pieces = m.pieces
        ? {
            pieceLength: m.pieces.pieceLength,
            hashes: Buffer.from(
              m.pieces.hashes.buffer,
              m.pieces.hashes.byteOffset,
              m.pieces.hashes.byteLength,
            ),
          }
        : null;
      r?.resolve({ sha256: m.sha256, size: m.size, pieces });
    } else this.onFailure(new Error(`hash worker: ${m.message}`));
  }

  /** @internal from WorkerSlot */
  onFailure(err: Error): void {
    if (this.done) return;
    const r = this.result;
    this.settle();
    this.events.fail(err);
    r?.reject(err);
  }

  private settle(): void {
    this.done = true;
    this.result = null;
    this.slot.release(this.id);
  }
}

class WorkerSlot {
  private worker: BunWorker | null = null;
  private readonly streams = new Map<number, RemoteHash>();
  private idleTimer: ReturnType<typeof setTimeout> | null = null;

  open(id: number, pieceLength: number, expectedSize: number, events: RemoteHashEvents): RemoteHash {
    const w = this.worker ?? this.start();
    const stream = new RemoteHash(this, w, id, events);
    if (this.streams.size === 0) {
      w.ref();
      if (this.idleTimer) clearTimeout(this.idleTimer);
      this.idleTimer = null;
    }
    this.streams.set(id, stream);
    this.post(w, { op: "open", id, pieceLength, expectedSize });
    return stream;
  }

  post(w: Worker, m: ToWorker): void {
    // A stream of a worker that failed was failed with it; nothing more to send.
    if (w === this.worker) w.postMessage(m);
  }

  release(id: number): void {
    if (!this.streams.delete(id) || this.streams.size > 0) return;
    const w = this.worker;
    if (!w) return;
    w.unref();
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      if (this.worker === w && this.streams.size === 0) {
        this.worker = null;
        void w.terminate();
      }
    }, IDLE_TERMINATE_MS);
    this.idleTimer.unref?.();
  }

  private start(): BunWorker {
    const w = new Worker(new URL("./hash-worker.ts", import.meta.url)) as BunWorker;
    w.onmessage = (e: MessageEvent<FromWorker>) => {
      if (this.worker === w) this.streams.get(e.data.id)?.onMessage(e.data);
    };
    w.onerror = (e: ErrorEvent) => this.crash(w, new Error(`hash worker failed: ${e.message}`));
    w.onmessageerror = () => this.crash(w, new Error("hash worker: a message could not be read"));
    w.addEventListener("close", () => this.crash(w, new Error("hash worker exited")));
    this.worker = w;
    return w;
  }

  /** Terminate the worker now; its streams fail. */
  stop(err: Error): void {
    if (this.worker) this.crash(this.worker, err);
  }

  private crash(w: Worker, err: Error): void {
    if (this.worker !== w) return;
    this.worker = null;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    void w.terminate();
    const streams = [...this.streams.values()];
    this.streams.clear();
    for (const s of streams) s.onFailure(err);
  }
}

const slots: WorkerSlot[] = [];
let nextSlot = 0;
let nextId = 1;

/** Start hashing a stream in a worker. `pieceLength` 0: SHA-256 only. */
export function openRemoteHash(
  pieceLength: number,
  expectedSize: number,
  events: RemoteHashEvents,
): RemoteHash {
  if (slots.length === 0) for (let i = 0; i < WORKERS; i++) slots.push(new WorkerSlot());
  const slot = slots[nextSlot++ % slots.length]!;
  return slot.open(nextId++, pieceLength, expectedSize, events);
}

/**
 * Terminate every hash worker now. Streams still being hashed fail (their writers refuse to
 * commit); the next stream starts a fresh worker. Workers never hold the process open when idle,
 * so calling this at shutdown is optional.
 */
export function terminateHashWorkers(): void {
  for (const s of slots) s.stop(new Error("hash workers terminated"));
}
