/**
 * HTTP BitTorrent tracker (announce + scrape) as a fetch-style handler, so the node's `Bun.serve`
 * can mount it next to the API and the web seed. It reuses bittorrent-tracker's Server for request
 * parsing, swarm bookkeeping and bencoded/compact replies, with every listener of its own switched
 * off (no http/udp/ws servers, no stats page): we only call its request entry point.
 *
 * Two deliberate differences from stock bittorrent-tracker:
 *  - Private: only infohashes the caller allows are answered (our own torrents). Everything else,
 *    and a scrape of "all torrents", gets a failure reason.
 *  - A peer is never handed its own address. Stock bittorrent-tracker filters self only for
 *    WebRTC peers (lib/server/swarm.js `_getPeers`), so an HTTP announcer gets itself back.
 *    libtorrent keeps one peer entry per IP by default: on loopback (or any shared IP) the echoed
 *    entry overwrites the seeder's port with the leecher's own, the leecher dials itself, sees its
 *    own peer id and bans the IP, real seeder included. Result: "sometimes libtorrent gets no data".
 *  - The node's own seeder is not a swarm entry that announces can write. A peer id is no secret
 *    (every BitTorrent handshake sends it), so an announce carrying the seeder's peer id could
 *    otherwise remove it (`event=stopped`) or send leechers to another port (`started&port=X`).
 *    Its announces are answered but never recorded; every reply lists it at the address `self()`
 *    names and the port the seeder really listens on. Non-compact replies show it under a random
 *    per-tracker peer id, never the real one.
 */
import { randomBytes } from "node:crypto";
import { networkInterfaces } from "node:os";
import { parse as parseQuery } from "node:querystring";
import Server, { type AnnounceParams, type SwarmPeer } from "bittorrent-tracker/server";
import { nodePath } from "../../../src/torrents/links";
import { requireTrackerSwarmPatch } from "../../patches/bittorrent-tracker-swarm";
import { bencode } from "./bencode";

export interface TrackerOptions {
  /** Is this infohash (lowercase hex) ours to track? Called on every request, keep it cheap. */
  isAllowed: (infohashHex: string) => boolean;
  /**
   * Passkey check (TORRENT__ACCESS=passkey), made before anything else is looked at: null lets the
   * request through, a string is the failure reason sent back. Give the same reason whatever
   * failed, so a refused announce does not tell whether this node holds the infohash.
   */
  authorize?: (q: {
    action: "announce" | "scrape";
    /** From `?passkey=`; null for a bare `/announce`. */
    passkey: string | null;
    /** The announce's `event` (started, completed, stopped…), if any. */
    event?: string | null;
    infohashes: string[];
    /** The announcer's address, as bittorrent-tracker records it. */
    remoteAddress: string;
  }) => Promise<string | null>;
  /** Re-announce interval we ask clients for, in seconds (default ANNOUNCE_INTERVAL_SECONDS). */
  intervalSeconds?: number;
  /**
   * This node's own seeder, listed in every reply at `ip`:`port` (its real listening port). The
   * seeder announces to its own public URL, often over loopback or a private interface; peers
   * elsewhere must be told where they can actually reach it. With `ip` null, the address its
   * announces come from is used, but only when that is an address of this machine.
   */
  self?: () => { peerIdHex: string | null; ip: string | null; port: number };
}

export interface Tracker {
  /** Answer `/announce`, `/scrape` and their `/<passkey>/…` forms (src/torrents/links.ts); 404 otherwise. */
  handle(req: Request, remoteAddress: string): Promise<Response>;
  close(): Promise<void>;
}

const TEXT_HEADERS = { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" };

function failure(reason: string, status = 200): Response {
  // Trackers report errors in-band: clients read `failure reason` from a 200 reply.
  return new Response(bencode({ "failure reason": reason }), { status, headers: TEXT_HEADERS });
}

/** The node's seeder as the swarm sees it. */
interface SelfPeer {
  /** Its real peer id (hex): announces carrying it are never recorded. */
  peerIdHex: string | null;
  /** How it is handed out (its peer id replaced); null until its address and port are known. */
  entry: SwarmPeer | null;
}

/**
 * bittorrent-tracker's swarm, minus the self-echo and plus the node's own seeder. Same event
 * handling as the original `announce()` (which we cannot hook into: it picks peers with the
 * announcer's peer id only; how this plugs in: seeder/patches/bittorrent-tracker-swarm.ts), but
 * peers are chosen by `peersFor`, which skips the announcer by peer
 * id AND by ip:port, and the node's seeder is never stored: `selfPeer()` supplies it on each reply.
 */
class NoSelfSwarm extends Server.Swarm {
  constructor(
    infoHash: string,
    server: Server,
    private readonly selfPeer: () => SelfPeer,
  ) {
    super(infoHash, server);
  }

  override announce(params: AnnounceParams, cb?: (err: Error | null, res?: unknown) => void): void {
    const self = this.selfPeer();
    const bonus = self.entry ? 1 : 0;
    if (self.peerIdHex && params.peer_id === self.peerIdHex) {
      // The seeder itself or someone using its peer id: answered, never written.
      if (params.event === "stopped" && !cb) return;
      cb?.(null, {
        complete: this.complete + bonus,
        incomplete: this.incomplete,
        peers: this.peersFor(params, self),
      });
      return;
    }
    const id = params.type === "ws" ? params.peer_id : params.addr;
    const peer = this.peers.get(id);
    switch (params.event) {
      case "started":
      case "completed":
      case "update":
      case "paused":
        this.record(params, peer, id);
        break;
      case "stopped":
        this.forget(peer, id);
        if (!cb) return;
        break;
      default:
        cb?.(new Error("invalid event"));
        return;
    }
    cb?.(null, {
      complete: this.complete + bonus,
      incomplete: this.incomplete,
      peers: this.peersFor(params, self),
    });
  }

  /**
   * The stock swarm's bookkeeping for started/completed/update/paused (lib/server/swarm.js
   * `_onAnnounce*`, which are private): they all come down to "store the peer, and count it as
   * complete once it says so". A `completed` from a peer already complete changes nothing.
   */
  private record(params: AnnounceParams, peer: SwarmPeer | undefined, id: string): void {
    if (!peer) {
      if (params.left === 0) this.complete += 1;
      else this.incomplete += 1;
      this.peers.set(id, {
        type: params.type,
        complete: params.left === 0,
        peerId: params.peer_id,
        ip: params.ip,
        port: params.port,
      });
      return;
    }
    if (!peer.complete && (params.left === 0 || params.event === "completed")) {
      this.complete += 1;
      this.incomplete -= 1;
      peer.complete = true;
    }
    this.peers.set(id, peer);
  }

  /** `stopped`: the stock `_onAnnounceStopped` for HTTP peers (no WebSocket bookkeeping: ws is off). */
  private forget(peer: SwarmPeer | undefined, id: string): void {
    if (!peer) return;
    if (peer.complete) this.complete -= 1;
    else this.incomplete -= 1;
    this.peers.remove(id);
  }

  override scrape(_params: unknown, cb: (err: Error | null, res?: unknown) => void): void {
    cb(null, { complete: this.complete + (this.selfPeer().entry ? 1 : 0), incomplete: this.incomplete });
  }

  private peersFor(params: AnnounceParams, self: SelfPeer): SwarmPeer[] {
    const out: SwarmPeer[] = [];
    const me = self.entry;
    const announcerIsSelf =
      params.peer_id === self.peerIdHex || (params.ip === me?.ip && params.port === me?.port);
    if (me && !announcerIsSelf && params.numwant > 0) out.push(me);
    // Random order like the original, so big swarms spread load.
    const keys = [...this.peers.keys];
    for (let i = keys.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [keys[i], keys[j]] = [keys[j]!, keys[i]!];
    }
    for (const key of keys) {
      if (out.length >= params.numwant) break;
      const p = this.peers.peek(key); // peek: do not refresh other peers' LRU age
      if (!p || p.type === "ws") continue;
      if (p.peerId === params.peer_id) continue;
      if (p.ip === params.ip && p.port === params.port) continue;
      // Someone announced the seeder's own address: it is listed once, from selfPeer().
      if (me && p.ip === me.ip && p.port === me.port) continue;
      out.push(p);
    }
    return out;
  }
}

/** The announcer's binary `peer_id` as lowercase hex (null when absent or malformed). */
function peerIdIn(search: string): string | null {
  const raw = parseQuery(search, "&", "=", { decodeURIComponent: unescape })["peer_id"];
  return typeof raw === "string" && raw.length === 20 ? Buffer.from(raw, "latin1").toString("hex") : null;
}

/** Binary `info_hash` values (latin1 strings after unescape) as lowercase hex. */
function infohashesIn(search: string): string[] | null {
  // Same decoding as bittorrent-tracker (lib/common-node.js): `unescape`, not decodeURIComponent,
  // because info_hash is raw binary, percent-encoded byte by byte, and rarely valid UTF-8.
  const raw = parseQuery(search, "&", "=", { decodeURIComponent: unescape })["info_hash"];
  const list = raw === undefined ? [] : Array.isArray(raw) ? raw : [raw];
  const out: string[] = [];
  for (const s of list) {
    if (s.length !== 20) return null;
    out.push(Buffer.from(s, "latin1").toString("hex"));
  }
  return out;
}

/** Addresses of this machine's interfaces (loopback included), as Bun reports a peer's address. */
function isLocalAddress(address: string): boolean {
  const a = address.replace(/^::ffff:(?=\d+\.)/i, "");
  if (a.startsWith("127.") || a === "::1") return true;
  return Object.values(networkInterfaces()).some((list) => list?.some((i) => i.address === a));
}

/** How often clients are asked to re-announce, unless `intervalSeconds` says otherwise. */
export const ANNOUNCE_INTERVAL_SECONDS = 300;

export function createTracker(opts: TrackerOptions): Tracker {
  requireTrackerSwarmPatch();
  const intervalMs = (opts.intervalSeconds ?? ANNOUNCE_INTERVAL_SECONDS) * 1000;
  const server = new Server({
    http: false,
    udp: false,
    ws: false,
    stats: false,
    interval: intervalMs,
    // Second line of defence; handle() already refused disallowed infohashes.
    filter: (infoHash, _params, cb) => cb(opts.isAllowed(infoHash) ? null : new Error("unknown torrent")),
  });
  // The server emits 'warning' for every client mistake; they are not our errors.
  server.on("warning", () => {});
  server.on("error", () => {});
  // Per-instance override (not the shared static Server.Swarm), so other users of the package are
  // unaffected.
  const publicPeerIdHex = randomBytes(20).toString("hex");
  /** The seeder's address learned from its own announces, when `self().ip` is null. */
  let learnedIp: string | null = null;
  const selfPeer = (): SelfPeer => {
    const self = opts.self?.();
    const ip = self?.ip ?? learnedIp;
    if (!self || !ip || !(self.port > 0)) return { peerIdHex: self?.peerIdHex ?? null, entry: null };
    return {
      peerIdHex: self.peerIdHex,
      entry: { type: "http", complete: true, peerId: publicPeerIdHex, ip, port: self.port },
    };
  };
  server.createSwarm = (infoHash, cb) => {
    const swarm = new NoSelfSwarm(infoHash, server, selfPeer);
    server.torrents[infoHash] = swarm;
    queueMicrotask(() => cb(null, swarm));
  };
  let closed = false;

  function forgetDisallowed(hashes: string[]): void {
    // A torrent we stopped seeding: drop its peer list instead of keeping it forever.
    for (const h of hashes) delete server.torrents[h];
  }

  async function handle(req: Request, remoteAddress: string): Promise<Response> {
    if (closed) return failure("tracker is shutting down", 503);
    if (req.method !== "GET")
      return new Response("method not allowed", { status: 405, headers: TEXT_HEADERS });
    const url = new URL(req.url);
    const path = nodePath(url);
    if (path?.kind !== "tracker") return new Response("not found", { status: 404, headers: TEXT_HEADERS });
    const { action } = path;
    const hashes = infohashesIn(url.search.slice(1));
    if (hashes === null) return failure("invalid info_hash");
    if (hashes.length === 0) {
      // An announce needs one; a bare scrape would list every torrent we track: private, refuse.
      return failure(action === "scrape" ? "scrape needs info_hash" : "invalid info_hash");
    }
    const denied = await opts.authorize?.({
      action,
      passkey: path.passkey,
      event: url.searchParams.get("event"),
      infohashes: hashes,
      remoteAddress,
    });
    if (denied) return failure(denied);
    const refused = hashes.filter((h) => !opts.isAllowed(h));
    if (refused.length) {
      forgetDisallowed(refused);
      return failure("unknown torrent");
    }

    const self = opts.self?.();
    if (
      action === "announce" &&
      self &&
      !self.ip &&
      self.peerIdHex &&
      peerIdIn(url.search.slice(1)) === self.peerIdHex &&
      isLocalAddress(remoteAddress)
    )
      // Only this machine may tell us where the seeder is; a peer id alone proves nothing.
      learnedIp = remoteAddress.replace(/^::ffff:(?=\d+\.)/i, "");

    const body = await new Promise<Uint8Array<ArrayBuffer> | string>((resolve) => {
      // Just the parts of node's IncomingMessage/ServerResponse that onHttpRequest and
      // lib/server/parse-http.js touch.
      const fakeReq = {
        url: `/${action}${url.search}`,
        headers: Object.fromEntries(req.headers),
        connection: { remoteAddress },
        socket: { remoteAddress },
      };
      const fakeRes = {
        end: (b?: Uint8Array | string) =>
          resolve(typeof b === "string" || !b ? (b ?? "") : new Uint8Array(b)),
      };
      server.onHttpRequest(fakeReq, fakeRes, { action, trustProxy: false });
    });
    return new Response(body, { status: 200, headers: TEXT_HEADERS });
  }

  async function close(): Promise<void> {
    if (closed) return;
    closed = true;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    server.torrents = {};
  }

  return { handle, close };
}
