/**
 * Hash worker: SHA-256 and SHA-1 piece hashes of the streams the content store writes, on a core
 * other than the event loop's. Blocks arrive as SharedArrayBuffers that the writer does not touch
 * again until this worker acknowledges them. Any inconsistency (unknown stream, a block out of
 * order, a size that does not match) is reported as an error for that stream, which fails its write.
 */
import type { FromWorker, ToWorker } from "./protocol";
import { StreamHasher } from "./stream-hasher";

declare const self: Worker;

interface Stream {
  hasher: StreamHasher;
  nextSeq: number;
}

const streams = new Map<number, Stream>();
const reply = (m: FromWorker) => self.postMessage(m);

self.onmessage = (e: MessageEvent<ToWorker>) => {
  const m = e.data;
  try {
    switch (m.op) {
      case "open":
        if (streams.has(m.id)) throw new Error(`stream ${m.id} opened twice`);
        streams.set(m.id, { hasher: new StreamHasher(m.pieceLength || null, m.expectedSize), nextSeq: 0 });
        return;
      case "data": {
        const s = streams.get(m.id);
        if (!s) throw new Error(`data for unknown stream ${m.id}`);
        if (m.seq !== s.nextSeq) throw new Error(`stream ${m.id}: block ${m.seq} where ${s.nextSeq} was due`);
        s.nextSeq++;
        s.hasher.update(new Uint8Array(m.buf, 0, m.len));
        reply({ op: "ack", id: m.id, seq: m.seq });
        return;
      }
      case "finish": {
        const s = streams.get(m.id);
        if (!s) throw new Error(`finish for unknown stream ${m.id}`);
        streams.delete(m.id);
        const d = s.hasher.digest(m.size);
        // Copied, not transferred: 20 bytes per piece, and Buffer.concat may hand out a pooled slab.
        reply({ op: "result", id: m.id, ...d });
        return;
      }
      case "drop":
        streams.delete(m.id);
        return;
    }
  } catch (err) {
    streams.delete(m.id);
    reply({ op: "error", id: m.id, message: String((err as Error)?.message ?? err) });
  }
};
