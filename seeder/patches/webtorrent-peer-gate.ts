/**
 * The BitTorrent port's entitlement check (TORRENT__ACCESS=passkey): an incoming peer gets nothing
 * (no handshake, no bitfield, no metadata) unless its address may have the torrent it asks for.
 *
 * webtorrent has no hook that runs before it answers an incoming peer: its 'wire' event fires
 * after the handshake was parsed but before, and in the encrypted case after, webtorrent sends its
 * own handshake, and a blocklist is per address, not per torrent. So the gate sits at the two
 * places lib/conn-pool.js routes an incoming connection, both replaced per instance (other
 * webtorrent clients in the process keep the stock path):
 *  - `ConnPool#_onConnection` on the client's pool (its bound 'connection' listener looks the
 *    method up on each call): a socket from an address with no entitlement at all is closed
 *    before a byte is read or written. That matters for MSE, which answers with its DH key
 *    before the peer's handshake names a torrent.
 *  - `Torrent#_addIncomingPeer` on each torrent: the pool calls it as soon as the peer's
 *    handshake (plain) or its MSE infohash hash (encrypted) named this torrent, right before it
 *    calls `peer.onHandshake` (which replies) or `wire.setInfoHash` (which resumes MSE). A peer
 *    that may not have this torrent is destroyed there; `Peer#onHandshake` returns early for a
 *    destroyed peer, and destroying it closes the socket, so nothing else goes out.
 * Outgoing: a peer list is no proof of entitlement (an opt-in TORRENT__ANNOUNCE_URL knows nothing
 * of passkeys, and our tracker keeps listing a revoked client for a while), so the seeder does not
 * dial out while seeding (`seedOutgoingConnections: false`, swarm.ts), and `Torrent#addPeer`, which
 * every tracker reply goes through, drops an address with no entitlement for that torrent.
 *
 * Written against webtorrent 3.0.21; `installPeerGate` throws LibraryPatchError when a method it
 * relies on is gone or no longer called that way (docs/patches.md).
 */
import ConnPool from "webtorrent/lib/conn-pool.js";
import Peer from "webtorrent/lib/peer.js";
import Torrent from "webtorrent/lib/torrent.js";
import { type LibraryPatch, LibraryPatchError, packageVersion, requirePatch } from "./patch";

/** What the gate asks; addresses are the socket's `remoteAddress` as the runtime reports it. */
export interface PeerGatePolicy {
  /** Any entitlement at all for this address (asked when the connection opens). */
  admitsAddress(address: string): boolean;
  /** May this address have this torrent (asked once the handshake named it)? */
  allows(address: string, infohash: string): boolean;
}

const src = (f: unknown) => (typeof f === "function" ? String(f) : "");
const count = (text: string, needle: string) => text.split(needle).length - 1;

export const peerGatePatch: LibraryPatch = {
  name: "webtorrent-peer-gate",
  why: "an incoming peer is answered only if its address announced with a live passkey for the torrent it asks for",
  writtenFor: { webtorrent: "3.0.21" },
  installedVersion: (pkg) => packageVersion(pkg, import.meta.dir),
  check() {
    const pool = (ConnPool as unknown as { prototype: Record<string, unknown> }).prototype;
    if (typeof pool._onConnection !== "function") return "lib/conn-pool.js has no ConnPool#_onConnection";
    // The bound listener must look the method up on the instance, or an override is never called.
    // (Sources are read as the runtime prints them: Bun normalises quotes and spacing.)
    if (!/this\._onConnection\(\s*conn\s*,\s*["']tcp["']\s*\)/.test(src(ConnPool)))
      return "ConnPool's connection listener no longer calls this._onConnection";
    const onConnection = src(pool._onConnection);
    // Both routes (plain handshake, MSE infohash hash) must hand the peer to the torrent first.
    if (count(onConnection, "torrent._addIncomingPeer(peer)") < 2)
      return "ConnPool#_onConnection no longer hands both plain and encrypted peers to Torrent#_addIncomingPeer";
    const plain = onConnection.indexOf("async function onHandshake");
    if (
      plain < 0 ||
      onConnection.indexOf("torrent._addIncomingPeer(peer)", plain) >
        onConnection.indexOf("peer.onHandshake(", plain)
    )
      return "ConnPool#_onConnection no longer adds the peer to the torrent before replying to its handshake";
    const torrent = (Torrent as unknown as { prototype: Record<string, unknown> }).prototype;
    if (typeof torrent._addIncomingPeer !== "function")
      return "lib/torrent.js has no Torrent#_addIncomingPeer";
    if (!/if \(this\.destroyed\)\s*return/.test(src(Peer.prototype.onHandshake)))
      return "Peer#onHandshake no longer returns early for a destroyed peer";
    if (typeof torrent.addPeer !== "function") return "lib/torrent.js has no Torrent#addPeer";
    if (!/seedOutgoingConnections/.test(src(Torrent)))
      return "lib/torrent.js no longer honours the client's seedOutgoingConnections option";
    return null;
  },
};

interface SocketLike {
  remoteAddress?: string;
  on(ev: string, fn: () => void): void;
  destroy(): void;
}
interface PoolLike {
  _onConnection(conn: SocketLike, type: string): void;
}
interface PeerLike {
  conn: { remoteAddress?: string } | null;
  destroy(err?: Error): void;
}
interface TorrentLike {
  infoHash: string;
  _addIncomingPeer(peer: PeerLike): void;
  /** Outgoing: an "ip:port" from a tracker reply (or a connected peer object). */
  addPeer(peer: string | PeerLike, source?: string): boolean;
}

/** Gate the client's incoming connections by address. Call once, right after `new WebTorrent()`. */
export function installPeerGate(client: object, policy: PeerGatePolicy): void {
  requirePatch(peerGatePatch);
  const pool = (client as { _connPool?: PoolLike | null })._connPool;
  if (!pool || typeof pool._onConnection !== "function")
    throw new LibraryPatchError(peerGatePatch.name, "the client has no connection pool", "webtorrent");
  const original = pool._onConnection;
  pool._onConnection = function gatedConnection(this: PoolLike, conn: SocketLike, type: string): void {
    if (conn.remoteAddress && !policy.admitsAddress(conn.remoteAddress)) {
      conn.on("error", () => {});
      conn.destroy();
      return;
    }
    original.call(this, conn, type);
  };
}

/** Gate one torrent's incoming peers by (address, infohash). Call right after `client.add()`. */
export function gateTorrent(torrent: object, policy: PeerGatePolicy): void {
  const t = torrent as TorrentLike;
  const original = t._addIncomingPeer;
  if (typeof original !== "function")
    throw new LibraryPatchError(peerGatePatch.name, "the torrent has no _addIncomingPeer", "webtorrent");
  t._addIncomingPeer = function gatedIncomingPeer(this: TorrentLike, peer: PeerLike): void {
    const address = peer.conn?.remoteAddress;
    if (!address || !policy.allows(address, this.infoHash)) {
      peer.destroy();
      return;
    }
    original.call(this, peer);
  };
  // Outgoing too: the client does not dial out while seeding (seedOutgoingConnections: false in
  // swarm.ts), but a tracker reply before the torrent is `done`, or any other caller, goes through
  // addPeer: an address with no entitlement for this torrent is never dialled.
  const addPeer = t.addPeer;
  if (typeof addPeer !== "function")
    throw new LibraryPatchError(peerGatePatch.name, "the torrent has no addPeer", "webtorrent");
  t.addPeer = function gatedAddPeer(this: TorrentLike, peer: string | PeerLike, source?: string): boolean {
    if (typeof peer === "string") {
      const host = peer.replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
      if (!policy.allows(host, this.infoHash)) return false;
    }
    return addPeer.call(this, peer, source);
  };
}
