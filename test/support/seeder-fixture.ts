/**
 * A seeding node in miniature for tests: random content stored as a real CAS blob, our tracker and
 * web seed served by one `Bun.serve` on 127.0.0.1, and a helper to write .torrent variants to disk.
 * The Swarm itself is left to the test (it is what most tests exercise).
 */
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Server } from "bun";
import { ContentStore, type StoredBlob } from "../../seeder/node/cas";
import { type CreateTorrentFileOptions, createTorrentFile } from "../../seeder/node/swarm/torrent";
import { createTracker, type Tracker } from "../../seeder/node/swarm/tracker";
import { webSeedResponse } from "../../seeder/node/swarm/webseed";
import { nodePath, webSeedUrl } from "../../src/torrents/links";
import { tmpDir } from "./clients";

/** Store `bytes` in a fresh CAS under `base` (as the fetcher would) and return the blob. */
export async function writeCasBlob(base: string, bytes: Uint8Array): Promise<StoredBlob> {
  const store = new ContentStore(base);
  await store.init();
  const w = await store.createWriter();
  await w.write(bytes);
  return w.commit();
}

export interface WebSeedEntry {
  path: string;
  size: number;
  name: string;
}

export interface NodeHttp {
  readonly url: string;
  readonly announceUrl: string;
  readonly tracker: Tracker;
  /** Infohashes the tracker answers for. */
  readonly allowed: Set<string>;
  /** Blobs served at /webseed/<sha256>/... */
  readonly webseeds: Map<string, WebSeedEntry>;
  /** Requests seen, by route ("announce", "scrape", "webseed", "other"). */
  readonly hits: Record<string, number>;
  close(): Promise<void>;
}

/** Tracker + web seed on one loopback Bun.serve, routed the way the node mounts them. */
export function startNodeHttp(opts: { port?: number } = {}): NodeHttp {
  const allowed = new Set<string>();
  const webseeds = new Map<string, WebSeedEntry>();
  const hits: Record<string, number> = { announce: 0, scrape: 0, webseed: 0, other: 0 };
  const tracker = createTracker({ isAllowed: (h) => allowed.has(h) });
  const server: Server<unknown> = Bun.serve({
    hostname: "127.0.0.1",
    port: opts.port ?? 0,
    async fetch(req, srv) {
      const path = new URL(req.url).pathname;
      if (path === "/announce" || path === "/scrape") {
        hits[path.slice(1)]!++;
        return tracker.handle(req, srv.requestIP(req)?.address ?? "");
      }
      const seed = nodePath(new URL(req.url));
      const hash = seed?.kind === "webseed" ? seed.hash : null;
      if (hash) {
        hits.webseed!++;
        const e = webseeds.get(hash);
        if (!e) return new Response("not seeded here", { status: 404 });
        return webSeedResponse(req, e.path, e.size, e.name);
      }
      hits.other!++;
      return new Response("not found", { status: 404 });
    },
  });
  const url = `http://127.0.0.1:${server.port}`;
  return {
    url,
    announceUrl: `${url}/announce`,
    tracker,
    allowed,
    webseeds,
    hits,
    async close() {
      server.stop(true);
      await tracker.close();
    },
  };
}

export interface Content {
  base: string;
  blob: StoredBlob;
  name: string;
}

/** `size` random bytes as a CAS blob under a fresh temp dir. */
export async function randomContent(size: number, name = "payload.bin"): Promise<Content> {
  const base = await tmpDir("pt-swarm-");
  const blob = await writeCasBlob(base, randomBytes(size));
  return { base, blob, name };
}

/** Build a torrent for `content` and save it next to it; returns path, bytes and infohash. */
export async function saveTorrent(
  content: Content,
  opts: Partial<CreateTorrentFileOptions> & { file: string },
): Promise<{ path: string; torrent: Uint8Array; infohash: string }> {
  const made = await createTorrentFile({
    path: content.blob.path,
    name: content.name,
    size: content.blob.size,
    pieceSize: "auto",
    private: true,
    announce: [],
    urlList: [],
    creationDate: new Date(0),
    ...opts,
  });
  const path = join(content.base, opts.file);
  await writeFile(path, made.torrent);
  return { path, torrent: made.torrent, infohash: made.infohash };
}

export { webSeedUrl };
