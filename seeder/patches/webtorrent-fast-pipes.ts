/**
 * A shorter socket <-> wire path for webtorrent peers when no rate limit is set.
 *
 * webtorrent (lib/peer.js `setThrottlePipes`) pipes every peer as
 *   socket -> throttle(down) -> counter -> wire -> throttle(up) -> counter -> socket
 * with four streamx Transforms that do nothing when limits are off except pass each chunk along
 * (a piece message is two chunks: 13-byte header + block) and count bytes. At hundreds of MB/s that
 * bookkeeping is a large share of the seeder's CPU. Here, for clients registered with
 * `installFastPipes`, peers are wired directly (socket.pipe(wire), and wire -> socket by a write
 * loop that reports each written chunk to CasBlobStore) and the byte counters come from the
 * wire's own 'upload'/'download' events (payload bytes of piece messages).
 *
 * Teardown is unchanged: Peer.onConnect already destroys the peer (socket and wire) on 'end',
 * 'close', 'finish' or 'error' of either side, which is all pipeline() added there.
 *
 * The patch is on the shared Peer prototype (webtorrent has no hook for it), installed once, and
 * falls back to the original method for any client not registered here (e.g. one with limits).
 * Written against webtorrent 3.0.21; `installFastPipes` throws LibraryPatchError when the method it
 * replaces is gone (docs/patches.md).
 */
import Peer from "webtorrent/lib/peer.js";
import { chunkWritten } from "../node/swarm/store";
import { type LibraryPatch, packageVersion, requirePatch } from "./patch";

export const fastPipesPatch: LibraryPatch = {
  name: "webtorrent-fast-pipes",
  why: "peers wired socket -> wire -> socket, without webtorrent's four pass-through throttle streams",
  writtenFor: { webtorrent: "3.0.21" },
  installedVersion: (pkg) => packageVersion(pkg, import.meta.dir),
  check() {
    const proto = (Peer as unknown as { prototype: Record<string, unknown> }).prototype;
    if (typeof proto.setThrottlePipes !== "function") return "lib/peer.js has no Peer#setThrottlePipes";
    // A replaced method nobody calls would be a silent no-op: onConnect must still call it.
    if (typeof proto.onConnect !== "function" || !String(proto.onConnect).includes("setThrottlePipes"))
      return "Peer#onConnect no longer calls setThrottlePipes";
    return null;
  },
};

interface Pipeable {
  pipe<T>(dest: T): T;
  write(chunk: unknown, cb: () => void): boolean;
  end(): void;
  on(ev: string, fn: (...args: never[]) => void): void;
  pause(): void;
  resume(): void;
}
interface PeerLike {
  conn: Pipeable | null;
  wire: Pipeable | null;
  throttleGroups: object;
  destroyed: boolean;
  emit(ev: string, n: number): boolean;
}

const fastGroups = new WeakSet<object>();
let installed = false;

export function installFastPipes(client: { throttleGroups: object }): void {
  if (!installed) requirePatch(fastPipesPatch);
  fastGroups.add(client.throttleGroups);
  if (installed) return;
  installed = true;
  const proto = (Peer as unknown as { prototype: { setThrottlePipes(this: PeerLike): void } }).prototype;
  const original = proto.setThrottlePipes;
  proto.setThrottlePipes = function setThrottlePipes(this: PeerLike): void {
    const conn = this.conn;
    const wire = this.wire;
    if (!fastGroups.has(this.throttleGroups) || !conn || !wire) {
      original.call(this);
      return;
    }
    wire.on("upload", (n: number) => {
      if (!this.destroyed) this.emit("upload", n);
    });
    wire.on("download", (n: number) => {
      if (!this.destroyed) this.emit("download", n);
    });
    conn.pipe(wire);
    // wire -> socket by hand rather than pipe(): each chunk's own write callback tells
    // CasBlobStore that the view is written, so its piece buffer can be reused (store.ts).
    wire.on("data", (chunk: unknown) => {
      if (!conn.write(chunk, () => chunkWritten(chunk))) wire.pause();
    });
    conn.on("drain", () => wire.resume());
    wire.on("end", () => conn.end()); // what pipe() did when the wire ends
  };
}
