/**
 * The node's BitTorrent seeder: ONE webtorrent client that seeds CAS blobs.
 *
 * Every option that would send packets off the machine is off (DHT, LSD, UPnP, NAT-PMP, PEX) and
 * uTP is off (Bun panics in utp-native: `unsupported uv function: uv_udp_init`). Peers find us via
 * the torrents' trackers (our tracker.ts), web seeds (webseed.ts), or by dialing the listen port.
 *
 * Torrents are added from their .torrent bytes with the read-only CasBlobStore (store.ts) and
 * `skipVerify`: the blob is content-addressed, so it is what its hash says, and a restart re-seeds
 * everything without re-hashing. See docs/webtorrent.md for the sharp edges this works around.
 */
import { stat } from "node:fs/promises";
import WebTorrent, { type Torrent } from "webtorrent";
import { installFastMseDh } from "../../patches/bittorrent-protocol-mse-dh";
import { installFastPipes } from "../../patches/webtorrent-fast-pipes";
import { gateTorrent, installPeerGate, type PeerGatePolicy } from "../../patches/webtorrent-peer-gate";
import { decodeTorrent } from "./bencode";
import { CasBlobStore } from "./store";

/** The part of the service Config the swarm reads (the whole Config fits). */
export interface SwarmConfig {
  torrent: {
    /** TCP port peers connect to (0 = any free port; read it back from `port` after start()). */
    listenPort: number;
    /** Address that port binds to (TORRENT__LISTEN_HOST, default HOST); absent = all interfaces. */
    listenHost?: string;
    /** Peer connections per torrent (webtorrent's maxConns only caps outgoing; we cap incoming too). */
    maxConnections: number;
    /** Upload limit in bytes/s for the whole client; 0 = unlimited. */
    uploadRateLimit: number;
  };
}

export interface SwarmExtras {
  /**
   * Wire peer sockets straight to the protocol stream when there is no rate limit
   * (seeder/patches/webtorrent-fast-pipes.ts).
   * Default true; false gives webtorrent's stock stream path back when chasing a problem.
   */
  fastPipes?: boolean;
  /** Where non-fatal client/torrent problems go (default: dropped). */
  onWarning?: (message: string) => void;
  /**
   * Answer an incoming peer only if this says its address may have the torrent it asks for
   * (TORRENT__ACCESS=passkey; seeder/patches/webtorrent-peer-gate.ts). Absent: everyone is answered.
   */
  peerGate?: PeerGatePolicy;
}

export interface SeedInput {
  infohash: string;
  torrent: Uint8Array;
  /** The CAS blob holding the torrent's single file. */
  path: string;
}

export interface SwarmStats {
  torrents: number;
  /** Payload bytes sent to peers since start() (torrents removed meanwhile included). */
  uploaded: number;
  /** Connected peers, summed over torrents. */
  peers: number;
}

/** Retry delays for a torrent whose first tracker announce failed (ms). */
const ANNOUNCE_RETRY_MS = [1_000, 2_000, 4_000, 8_000, 15_000, 30_000, 60_000];

interface AnnounceClient {
  update(): void;
}

export class Swarm {
  private client: WebTorrent | null = null;
  /** Every seed() in progress or done, by infohash: what makes seed() idempotent. */
  private readonly seeding = new Map<string, Promise<Torrent>>();
  /** Torrents that are ready to serve. */
  private readonly ready = new Map<string, Torrent>();
  /** unseed() in progress, so a seed() right after it waits instead of colliding in webtorrent. */
  private readonly unseeding = new Map<string, Promise<void>>();
  private readonly timers = new Set<ReturnType<typeof setTimeout>>();
  private uploadedByRemoved = 0;
  private stopping: Promise<void> | null = null;

  constructor(
    private readonly config: SwarmConfig,
    private readonly extras: SwarmExtras = {},
  ) {}

  /** The TCP port peers connect to (valid after start()). */
  get port(): number {
    return this.client?.address()?.port ?? 0;
  }

  /** The address the BitTorrent port is bound to (valid after start()). */
  get address(): string | null {
    return this.client?.address()?.address ?? null;
  }

  /** Our peer id (hex), as sent in handshakes and announces. */
  get peerId(): string | null {
    return this.client?.peerId ?? null;
  }

  async start(): Promise<void> {
    if (this.client || this.stopping) throw new Error("swarm already started");
    const { listenPort, listenHost, maxConnections, uploadRateLimit } = this.config.torrent;
    const client = new WebTorrent({
      // webtorrent has no listen-address option, but it hands torrentPort to net.Server#listen as is
      // (lib/conn-pool.js), which takes { port, host } too. Without a host it binds every interface.
      torrentPort: listenHost ? { port: listenPort, host: listenHost } : listenPort,
      maxConns: maxConnections,
      // Nothing may leave the machine on its own: no DHT, no LSD multicast, no UPnP/NAT-PMP, no PEX.
      dht: false,
      lsd: false,
      natUpnp: false,
      natPmp: false,
      utPex: false,
      // Bun + utp-native = panic.
      utp: false,
      // Our torrents list our own web seed; the seeder must not open HTTP "peers" to itself.
      webSeeds: false,
      uploadLimit: uploadRateLimit > 0 ? uploadRateLimit : -1,
      // With the peer gate (TORRENT__ACCESS=passkey) the seeder never dials peers: a peer list
      // (from our tracker, or an opt-in TORRENT__ANNOUNCE_URL that knows nothing of passkeys) is
      // no proof of entitlement, and a revoked client stays listed by the tracker for a while.
      // Entitled leechers dial in; gateTorrent also refuses addPeer() for anyone not entitled.
      seedOutgoingConnections: !this.extras.peerGate,
    });
    this.client = client;
    try {
      // Both throw LibraryPatchError when they cannot apply; the client is destroyed below then.
      if (uploadRateLimit <= 0 && this.extras.fastPipes !== false) installFastPipes(client);
      installFastMseDh(); // BigInt DH for MSE handshakes: ~0.2 ms instead of ~50 ms each under Bun
      if (this.extras.peerGate) installPeerGate(client, this.extras.peerGate);
      await new Promise<void>((resolve, reject) => {
        const onListening = () => {
          client.removeListener("error", onError);
          resolve();
        };
        const onError = (err: Error) => {
          client.removeListener("listening", onListening);
          reject(err);
        };
        client.once("listening", onListening);
        client.once("error", onError);
      });
      const bound = client.address()?.address;
      if (listenHost && !isWildcard(listenHost) && (!bound || isWildcard(bound)))
        // A webtorrent upgrade that stops passing torrentPort through must not silently go public.
        throw new Error(
          `BitTorrent port bound to ${bound ?? "an unknown address"} instead of ${listenHost}; see docs/webtorrent.md`,
        );
    } catch (err) {
      this.client = null;
      await destroyClient(client);
      throw listenError(err, listenHost, listenPort);
    }
    // From now on an 'error' on the client (webtorrent re-emits torrent errors there when the
    // torrent has no listener) must not crash the process: EventEmitter throws on unhandled 'error'.
    client.on("error", (err: Error) => this.warn(`webtorrent: ${err.message}`));
  }

  /**
   * Seed the blob at `path` as `torrent`. Resolves once the torrent is ready to serve peers.
   * Idempotent: seeding an infohash again while it is seeded (or being added) shares that outcome.
   */
  seed(input: SeedInput): Promise<void> {
    const infohash = input.infohash.toLowerCase();
    let p = this.seeding.get(infohash);
    if (!p) {
      p = this.add(infohash, input);
      this.seeding.set(infohash, p);
      const added = p;
      // A failed seed must not stick: a later call may retry.
      added.catch(() => {
        if (this.seeding.get(infohash) === added) this.seeding.delete(infohash);
      });
    }
    return p.then(() => undefined);
  }

  private async add(infohash: string, input: SeedInput): Promise<Torrent> {
    await this.unseeding.get(infohash);
    const client = this.requireClient();
    const { info, infohash: actual } = decodeTorrent(input.torrent);
    if (actual !== infohash) throw new Error(`torrent infohash is ${actual}, expected ${infohash}`);
    const length = info["length"];
    if (typeof length !== "number" || info["files"] !== undefined) {
      throw new Error("only single-file torrents can be seeded from a CAS blob");
    }
    const st = await stat(input.path);
    if (!st.isFile() || st.size !== length) {
      throw new Error(`blob ${input.path} has ${st.size} bytes, the torrent says ${length}`);
    }
    this.requireClient();

    const maxConns = this.config.torrent.maxConnections;
    const torrent = client.add(input.torrent, {
      store: CasBlobStore,
      storeOpts: { blobPath: input.path },
      // CasBlobStore caches whole pieces and hands out views; webtorrent's LRU on top only adds work.
      storeCacheSlots: 0,
      // The blob is content-addressed: trust it instead of re-hashing on every (re)start.
      skipVerify: true,
      // Unchoke every interested peer (default: 10): serving callers is this node's whole job.
      uploads: maxConns,
    });
    // Before any incoming handshake can reach it: the pool looks the torrent up asynchronously.
    if (this.extras.peerGate) gateTorrent(torrent, this.extras.peerGate);
    torrent.on("warning", (err: Error) => this.warn(`torrent ${infohash}: ${err.message}`));
    // webtorrent's maxConns only limits connections it opens; cap incoming ones here.
    torrent.on("wire", (wire) => {
      if (torrent.wires.length > maxConns) wire.destroy();
    });
    this.retryFirstAnnounce(torrent);
    await new Promise<void>((resolve, reject) => {
      const settle = () => {
        torrent.removeListener("ready", onReady);
        torrent.removeListener("error", onError);
        torrent.removeListener("close", onClose);
      };
      const onReady = () => {
        settle();
        torrent.on("error", (err: Error) => this.warn(`torrent ${infohash}: ${err.message}`));
        resolve();
      };
      const onError = (err: Error) => {
        settle();
        reject(err);
      };
      // Destroyed without an error (the client stopped meanwhile): never leave the caller hanging.
      const onClose = () => {
        settle();
        reject(new Error("torrent closed before it was ready"));
      };
      torrent.once("ready", onReady);
      torrent.once("error", onError);
      torrent.once("close", onClose);
    });
    this.ready.set(infohash, torrent);
    return torrent;
  }

  /**
   * webtorrent announces once when a torrent starts and, if that fails, not again for 15-30 min.
   * The first announce often does fail: at start-up the node re-seeds before its HTTP server (our
   * tracker) listens, and a new torrent announces before the node marks it allowed. Until one
   * announce has succeeded, retry with backoff; after that the tracker's interval applies.
   */
  private retryFirstAnnounce(torrent: Torrent): void {
    let attempt = 0;
    let timer: ReturnType<typeof setTimeout> | null = null;
    let succeeded = false;
    const onAnnounced = () => {
      succeeded = true;
      if (timer) clearTimeout(timer);
      torrent.removeListener("warning", onWarning);
    };
    const onWarning = () => {
      if (succeeded || timer || torrent.destroyed) return;
      const delay = ANNOUNCE_RETRY_MS[Math.min(attempt, ANNOUNCE_RETRY_MS.length - 1)]!;
      attempt++;
      const t = setTimeout(() => {
        this.timers.delete(t);
        timer = null;
        if (succeeded || torrent.destroyed) return;
        const tracker = (torrent as unknown as { discovery?: { tracker?: AnnounceClient | null } | null })
          .discovery?.tracker;
        tracker?.update();
      }, delay);
      t.unref?.();
      this.timers.add(t);
      timer = t;
    };
    torrent.once("trackerAnnounce", onAnnounced);
    torrent.on("warning", onWarning);
    torrent.once("close", () => {
      if (timer) {
        clearTimeout(timer);
        this.timers.delete(timer);
      }
    });
  }

  /** Stop seeding one torrent (the blob stays). No-op for an unknown infohash. */
  unseed(infohash: string): Promise<void> {
    const key = infohash.toLowerCase();
    const p = this.seeding.get(key);
    if (!p) return this.unseeding.get(key) ?? Promise.resolve();
    this.seeding.delete(key);
    this.ready.delete(key);
    const done = (async () => {
      const torrent = await p.catch(() => null);
      if (!torrent) return;
      // It may have become ready while we waited.
      if (this.ready.get(key) === torrent) this.ready.delete(key);
      if (torrent.destroyed) return;
      this.uploadedByRemoved += torrent.uploaded;
      await new Promise<void>((resolve) => torrent.destroy({ destroyStore: false }, () => resolve()));
    })().finally(() => {
      if (this.unseeding.get(key) === done) this.unseeding.delete(key);
    });
    this.unseeding.set(key, done);
    return done;
  }

  /**
   * Close every peer connection (incoming or outgoing) whose address the peer gate no longer
   * allows for its torrent, e.g. after its passkey was revoked. Returns how many were closed.
   */
  dropUnentitled(): number {
    const gate = this.extras.peerGate;
    if (!gate) return 0;
    let closed = 0;
    for (const [infohash, torrent] of this.ready) {
      for (const wire of [...torrent.wires]) {
        if (wire.type === "webSeed") continue;
        if (wire.remoteAddress && gate.allows(wire.remoteAddress, infohash)) continue;
        wire.destroy();
        closed++;
      }
    }
    return closed;
  }

  /** True once seed() for this infohash has succeeded, until unseed() or stop(). */
  has(infohash: string): boolean {
    return this.ready.has(infohash.toLowerCase());
  }

  /** Infohashes being served (lowercase hex). */
  list(): string[] {
    return [...this.ready.keys()];
  }

  stats(): SwarmStats {
    let uploaded = this.uploadedByRemoved;
    let peers = 0;
    for (const t of this.ready.values()) {
      uploaded += t.uploaded;
      peers += t.numPeers;
    }
    return { torrents: this.ready.size, uploaded, peers };
  }

  /** Destroy the client: every torrent, every peer connection and the listening socket. */
  stop(): Promise<void> {
    if (!this.stopping) {
      const client = this.client;
      this.stopping = (async () => {
        for (const t of this.timers) clearTimeout(t);
        this.timers.clear();
        for (const t of this.ready.values()) this.uploadedByRemoved += t.uploaded;
        this.ready.clear();
        // Destroying the client destroys its torrents (each sends a 'stopped' announce and waits
        // up to 1 s for it); seeds still in progress then reject via their 'close'.
        if (client) await destroyClient(client);
        await Promise.allSettled(this.seeding.values());
        this.seeding.clear();
      })();
    }
    return this.stopping;
  }

  private requireClient(): WebTorrent {
    if (this.stopping || this.client?.destroyed) throw new Error("swarm stopped");
    if (!this.client) throw new Error("swarm not started");
    return this.client;
  }

  private warn(message: string): void {
    try {
      this.extras.onWarning?.(message);
    } catch {
      /* a logger failure must not break seeding */
    }
  }
}

function isWildcard(host: string): boolean {
  return host === "0.0.0.0" || host === "::" || host === "";
}

/** EADDRINUSE and friends, saying which setting to change. */
function listenError(err: unknown, host: string | undefined, port: number): unknown {
  const code = (err as { code?: string } | null)?.code;
  const where = `${host?.includes(":") ? `[${host}]` : (host ?? "*")}:${port}`;
  if (code === "EADDRINUSE")
    return new Error(
      `BitTorrent port ${where} is already in use: stop the other process or set TORRENT__LISTEN_PORT ` +
        "to a free port (0 picks one)",
    );
  if (code === "EADDRNOTAVAIL")
    return new Error(
      `cannot bind the BitTorrent port to ${where}: no such address on this machine (TORRENT__LISTEN_HOST, default HOST)`,
    );
  if (code === "EACCES")
    return new Error(
      `not allowed to bind the BitTorrent port ${where}: choose TORRENT__LISTEN_PORT above 1023 or grant the capability`,
    );
  return err;
}

function destroyClient(client: WebTorrent): Promise<void> {
  if (client.destroyed) return Promise.resolve();
  return new Promise<void>((resolve) => client.destroy(() => resolve()));
}
