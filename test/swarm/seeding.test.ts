/**
 * The seeder with real BitTorrent clients on loopback: a few MiB of random bytes stored as a CAS
 * blob, seeded by Swarm under a human torrent name, found via our tracker, a direct dial, or the
 * web seed. Every download is checked by sha256.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { Swarm } from "../../seeder/node/swarm/swarm";
import {
  aria2Download,
  freePort,
  libtorrentDownload,
  removeTmpDirs,
  sha256File,
  tmpDir,
} from "../support/clients";
import {
  type Content,
  type NodeHttp,
  randomContent,
  saveTorrent,
  startNodeHttp,
  webSeedUrl,
} from "../support/seeder-fixture";

const MiB = 1024 * 1024;
/** Per client run; a hung client is killed with its output in the error. */
const TIMEOUT = 60_000;
/**
 * bun test's own limit per test/hook. Set on each one: bun's default is 5 s and bunfig.toml's
 * `[test] timeout` is not read by bun 1.4.5 (checked: a 6 s test fails at 5 s).
 */
const TEST_LIMIT = 180_000;

let node: NodeHttp;
let content: Content;
let swarm: Swarm | null = null;
let torrentPort: number;
/** The torrent as the service hands it out: private, our tracker, our web seed. */
let full: { path: string; torrent: Uint8Array; infohash: string };
/** Same infohash, but only our tracker: whatever downloads it got the bytes from the swarm. */
let trackerOnly: { path: string; torrent: Uint8Array; infohash: string };

beforeAll(async () => {
  node = startNodeHttp();
  // 4 MiB + a ragged tail, so the last piece is short; 1 MiB pieces as in production for big files.
  content = await randomContent(4 * MiB + 12_345, "report 2024 (final).json");
  full = await saveTorrent(content, {
    file: "full.torrent",
    pieceSize: MiB,
    announce: [node.announceUrl],
    urlList: [webSeedUrl(node.url, content.blob.sha256)],
  });
  trackerOnly = await saveTorrent(content, {
    file: "tracker-only.torrent",
    pieceSize: MiB,
    announce: [node.announceUrl],
  });
  expect(trackerOnly.infohash).toBe(full.infohash); // trackers and web seeds live outside the info dict
  node.allowed.add(full.infohash);
  node.webseeds.set(content.blob.sha256, {
    path: content.blob.path,
    size: content.blob.size,
    name: content.name,
  });
  torrentPort = await freePort();
  swarm = new Swarm({ torrent: { listenPort: torrentPort, maxConnections: 50, uploadRateLimit: 0 } });
  await swarm.start();
  await swarm.seed({ infohash: full.infohash, torrent: full.torrent, path: content.blob.path });
}, TEST_LIMIT);

afterAll(async () => {
  await swarm?.stop();
  await node?.close();
  await removeTmpDirs();
}, TEST_LIMIT);

describe("given a blob seeded under a torrent name that differs from its CAS file name", () => {
  test("then the swarm reports it seeded and listening on the configured port", () => {
    expect(swarm!.has(full.infohash)).toBe(true);
    expect(swarm!.list()).toEqual([full.infohash]);
    expect(swarm!.port).toBe(torrentPort);
    expect(swarm!.stats().torrents).toBe(1);
  });

  test(
    "when seed() is called again for the same infohash, then it resolves without a second torrent",
    async () => {
      await swarm!.seed({ infohash: full.infohash, torrent: full.torrent, path: content.blob.path });
      expect(swarm!.list()).toEqual([full.infohash]);
    },
    TEST_LIMIT,
  );

  test(
    "when aria2c downloads through our tracker, then it gets the exact bytes",
    async () => {
      const before = swarm!.stats().uploaded;
      const file = await aria2Download({
        torrentPath: trackerOnly.path,
        dir: await tmpDir("pt-aria2-"),
        timeoutMs: TIMEOUT,
      });
      expect(await sha256File(file)).toBe(content.blob.sha256);
      expect(file.endsWith(content.name)).toBe(true);
      expect(swarm!.stats().uploaded - before).toBeGreaterThanOrEqual(content.blob.size);
    },
    TEST_LIMIT,
  );

  test(
    "when libtorrent dials the seeder's port directly (torrent without trackers or web seeds), then it gets the exact bytes",
    async () => {
      const bare = await saveTorrent(content, { file: "bare.torrent", pieceSize: 1024 * 1024 });
      expect(bare.infohash).toBe(full.infohash);
      const file = await libtorrentDownload({
        torrentPath: bare.path,
        dir: await tmpDir("pt-lt-direct-"),
        connect: { host: "127.0.0.1", port: torrentPort },
        timeoutMs: TIMEOUT,
      });
      expect(await sha256File(file)).toBe(content.blob.sha256);
    },
    TEST_LIMIT,
  );

  test(
    "when five fresh libtorrent leechers in a row find the seeder only via our tracker, then each gets the exact bytes",
    async () => {
      for (let i = 0; i < 5; i++) {
        const file = await libtorrentDownload({
          torrentPath: trackerOnly.path,
          dir: await tmpDir(`pt-lt-tracker-${i}-`),
          timeoutMs: TIMEOUT,
        });
        expect(await sha256File(file)).toBe(content.blob.sha256);
      }
    },
    TEST_LIMIT,
  );

  test(
    "when a torrent lists no tracker, only our web seed, then aria2c downloads it over HTTP",
    async () => {
      const webOnly = await saveTorrent(content, {
        file: "webseed-only.torrent",
        pieceSize: MiB,
        urlList: [webSeedUrl(node.url, content.blob.sha256)],
      });
      const before = node.hits.webseed!;
      const file = await aria2Download({
        torrentPath: webOnly.path,
        dir: await tmpDir("pt-ws-"),
        timeoutMs: TIMEOUT,
      });
      expect(await sha256File(file)).toBe(content.blob.sha256);
      expect(node.hits.webseed!).toBeGreaterThan(before);
    },
    TEST_LIMIT,
  );
});

describe("given a seeder that is stopped and replaced by a new Swarm on the same port", () => {
  test(
    "when the new swarm seeds the same torrent with skipVerify, then aria2c gets the exact bytes again",
    async () => {
      await swarm!.stop();
      expect(swarm!.list()).toEqual([]);
      swarm = new Swarm({ torrent: { listenPort: torrentPort, maxConnections: 50, uploadRateLimit: 0 } });
      await swarm.start();
      expect(swarm.port).toBe(torrentPort);
      await swarm.seed({ infohash: full.infohash, torrent: full.torrent, path: content.blob.path });
      const dir = join(await tmpDir("pt-restart-"), "not-yet-created");
      const file = await aria2Download({ torrentPath: trackerOnly.path, dir, timeoutMs: TIMEOUT });
      expect(await sha256File(file)).toBe(content.blob.sha256);
    },
    TEST_LIMIT,
  );
});
