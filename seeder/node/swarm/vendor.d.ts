/**
 * Minimal types for the untyped BitTorrent packages, limited to what seeder/node/swarm uses. They
 * describe webtorrent 3.0.21, create-torrent 6.1.3 and bittorrent-tracker 11.2.3 (pinned in
 * package.json); re-check against their sources when bumping those versions.
 */

declare module "create-torrent" {
  export interface CreateTorrentOptions {
    name?: string;
    creationDate?: Date | number;
    comment?: string;
    createdBy?: string;
    private?: boolean;
    pieceLength?: number;
    /** Tiers of tracker URLs. Must be given (even `[]`) or create-torrent adds public trackers. */
    announceList?: string[][];
    urlList?: string[];
    info?: Record<string, unknown>;
  }
  type Input = string | Uint8Array | Blob | (string | Uint8Array | Blob)[];
  export default function createTorrent(
    input: Input,
    opts: CreateTorrentOptions,
    cb: (err: Error | null, torrent: Uint8Array) => void,
  ): void;
}

declare module "webtorrent" {
  import type { EventEmitter } from "node:events";

  export type ChunkStoreCallback<T = void> = (err: Error | null, value?: T) => void;

  export interface WebTorrentOptions {
    peerId?: string | Uint8Array;
    /**
     * Passed unchanged to `net.Server#listen` (lib/conn-pool.js), so `{ port, host }` also works and
     * is how the listen address is chosen; after 'listening' webtorrent replaces it by the port.
     */
    torrentPort?: number | { port: number; host: string };
    maxConns?: number;
    dht?: boolean | object;
    lsd?: boolean;
    utPex?: boolean;
    natUpnp?: boolean | "permanent";
    natPmp?: boolean;
    utp?: boolean;
    webSeeds?: boolean;
    tracker?: false | object;
    uploadLimit?: number;
    downloadLimit?: number;
    secure?: number;
    seedOutgoingConnections?: boolean;
  }

  export interface TorrentOptions {
    store?: new (chunkLength: number, opts: any) => unknown;
    storeOpts?: Record<string, unknown>;
    preloadedStore?: unknown;
    storeCacheSlots?: number;
    skipVerify?: boolean;
    path?: string;
    announce?: string[];
    urlList?: string[];
    private?: boolean;
    uploads?: number | false;
    destroyStoreOnDestroy?: boolean;
  }

  export interface Wire extends EventEmitter {
    peerId: string | null;
    remoteAddress?: string;
    remotePort?: number;
    type: string;
    destroy(): void;
  }

  export interface Torrent extends EventEmitter {
    infoHash: string;
    name: string;
    length: number;
    pieceLength: number;
    ready: boolean;
    done: boolean;
    destroyed: boolean;
    uploaded: number;
    numPeers: number;
    wires: Wire[];
    destroy(opts?: { destroyStore?: boolean } | null, cb?: (err?: Error | null) => void): void;
  }

  export default class WebTorrent extends EventEmitter {
    constructor(opts?: WebTorrentOptions);
    static UTP_SUPPORT: boolean;
    static VERSION: string;
    peerId: string;
    torrentPort: number;
    listening: boolean;
    destroyed: boolean;
    torrents: Torrent[];
    maxConns: number;
    throttleGroups: { up: unknown; down: unknown };
    add(torrentId: Uint8Array | string, opts?: TorrentOptions, ontorrent?: (t: Torrent) => void): Torrent;
    address(): { address: string; family: string; port: number } | null;
    destroy(cb?: (err?: Error | null) => void): void;
  }
}

declare module "bittorrent-tracker/server" {
  import type { EventEmitter } from "node:events";

  export interface ServerOptions {
    interval?: number;
    trustProxy?: boolean;
    http?: boolean | object;
    udp?: boolean | object;
    ws?: boolean | object;
    stats?: boolean;
    filter?: (infoHash: string, params: unknown, cb: (err?: Error | null) => void) => void;
    peersCacheLength?: number;
    peersCacheTtl?: number;
  }

  /** A peer as stored by the tracker's swarm (`lib/server/swarm.js`). */
  export interface SwarmPeer {
    type: string;
    complete: boolean;
    peerId: string;
    ip: string;
    port: number;
  }

  export interface AnnounceParams {
    type: string;
    event?: string;
    info_hash: string;
    peer_id: string;
    ip: string;
    port: number;
    addr: string;
    left: number;
    numwant: number;
    socket?: unknown;
  }

  /** Only reachable as `Server.Swarm` at runtime (server.js has no named export). */
  export class Swarm {
    constructor(infoHash: string, server: Server);
    infoHash: string;
    complete: number;
    incomplete: number;
    peers: {
      keys: string[];
      peek(key: string): SwarmPeer | undefined;
      get(key: string): SwarmPeer | undefined;
      set(key: string, peer: SwarmPeer): void;
      remove(key: string): void;
    };
    announce(params: AnnounceParams, cb?: (err: Error | null, res?: any) => void): void;
    scrape(params: unknown, cb: (err: Error | null, res?: any) => void): void;
  }

  export default class Server extends EventEmitter {
    constructor(opts?: ServerOptions);
    static Swarm: typeof Swarm;
    torrents: Record<string, Swarm>;
    intervalMs: number;
    destroyed: boolean;
    createSwarm(infoHash: string, cb: (err: Error | null, swarm: Swarm) => void): void;
    onHttpRequest(
      req: unknown,
      res: unknown,
      opts?: { action?: "announce" | "scrape"; trustProxy?: boolean },
    ): void;
    close(cb?: (err?: Error | null) => void): void;
  }
}

declare module "webtorrent/lib/peer.js" {
  /** webtorrent's Peer class; only its prototype is touched (seeder/patches/webtorrent-fast-pipes.ts). */
  const Peer: { prototype: Record<string, unknown> };
  export default Peer;
}

declare module "webtorrent/lib/conn-pool.js" {
  /** webtorrent's connection pool; only looked at by seeder/patches/webtorrent-peer-gate.ts. */
  const ConnPool: { prototype: Record<string, unknown> };
  export default ConnPool;
}

declare module "webtorrent/lib/torrent.js" {
  /** webtorrent's Torrent class; only looked at by seeder/patches/webtorrent-peer-gate.ts. */
  const Torrent: { prototype: Record<string, unknown> };
  export default Torrent;
}
