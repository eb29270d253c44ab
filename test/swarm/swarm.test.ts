/**
 * Swarm's own contract: start/stop, seed/unseed bookkeeping, input checks, the incoming
 * connection cap, and announcing until the tracker accepts us (the node re-seeds before its HTTP
 * server, i.e. our tracker, listens).
 */
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { connect, createServer, type Socket } from "node:net";
import { Swarm } from "../../seeder/node/swarm/swarm";
import { freePort, libtorrentDownload, removeTmpDirs, sha256File, tmpDir } from "../support/clients";
import { until } from "../support/poll";
import { randomContent, saveTorrent, startNodeHttp } from "../support/seeder-fixture";

/** bun's default per-test limit is 5 s and bunfig's `[test] timeout` is ignored by bun 1.4.5. */
const TEST_LIMIT = 120_000;

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(removeTmpDirs);

async function startSwarm(maxConnections = 50, listenPort = 0): Promise<Swarm> {
  const swarm = new Swarm({ torrent: { listenPort, maxConnections, uploadRateLimit: 0 } });
  cleanups.push(() => swarm.stop());
  await swarm.start();
  return swarm;
}

describe("given a started swarm", () => {
  test("when a torrent is seeded and unseeded, then has/list/stats follow and the blob stays", async () => {
    const swarm = await startSwarm();
    expect(swarm.port).toBeGreaterThan(0);
    const content = await randomContent(300_000);
    const t = await saveTorrent(content, { file: "a.torrent" });
    await swarm.seed({ infohash: t.infohash.toUpperCase(), torrent: t.torrent, path: content.blob.path });
    expect(swarm.has(t.infohash)).toBe(true);
    expect(swarm.list()).toEqual([t.infohash]);
    expect(swarm.stats()).toEqual({ torrents: 1, uploaded: 0, peers: 0 });
    await swarm.unseed(t.infohash);
    expect(swarm.has(t.infohash)).toBe(false);
    expect(swarm.stats().torrents).toBe(0);
    expect(await Bun.file(content.blob.path).exists()).toBe(true);
    // And it can be seeded again afterwards.
    await swarm.seed({ infohash: t.infohash, torrent: t.torrent, path: content.blob.path });
    expect(swarm.has(t.infohash)).toBe(true);
  });

  test("when seed and unseed race, then the end state is the last call's", async () => {
    const swarm = await startSwarm();
    const content = await randomContent(100_000);
    const t = await saveTorrent(content, { file: "a.torrent" });
    const input = { infohash: t.infohash, torrent: t.torrent, path: content.blob.path };
    const first = swarm.seed(input);
    const gone = swarm.unseed(t.infohash);
    const again = swarm.seed(input);
    await Promise.allSettled([first, gone]);
    await again;
    expect(swarm.list()).toEqual([t.infohash]);
  });

  test("when the infohash does not match the torrent, or the blob has the wrong size, then seed rejects", async () => {
    const swarm = await startSwarm();
    const content = await randomContent(100_000);
    const t = await saveTorrent(content, { file: "a.torrent" });
    await expect(
      swarm.seed({ infohash: randomBytes(20).toString("hex"), torrent: t.torrent, path: content.blob.path }),
    ).rejects.toThrow(/infohash/);
    const other = await randomContent(100_001);
    await expect(
      swarm.seed({ infohash: t.infohash, torrent: t.torrent, path: other.blob.path }),
    ).rejects.toThrow(/bytes/);
    await expect(
      swarm.seed({ infohash: t.infohash, torrent: t.torrent, path: "/nonexistent" }),
    ).rejects.toThrow();
    expect(swarm.list()).toEqual([]);
    // A failed seed does not stick.
    await swarm.seed({ infohash: t.infohash, torrent: t.torrent, path: content.blob.path });
    expect(swarm.has(t.infohash)).toBe(true);
  });

  test("when stopped, then the port is free again and further seeds reject", async () => {
    const swarm = await startSwarm();
    const port = swarm.port;
    await swarm.stop();
    await swarm.stop(); // idempotent
    const content = await randomContent(1000);
    const t = await saveTorrent(content, { file: "a.torrent" });
    await expect(
      swarm.seed({ infohash: t.infohash, torrent: t.torrent, path: content.blob.path }),
    ).rejects.toThrow(/stopped/);
    const probe = createServer();
    await new Promise<void>((resolve, reject) => {
      probe.once("error", reject);
      probe.listen(port, "127.0.0.1", resolve);
    });
    await new Promise<void>((resolve) => probe.close(() => resolve()));
  });
});

describe("given the listen port is taken", () => {
  test("when the swarm starts, then start() rejects instead of crashing", async () => {
    const port = await freePort();
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(port, "127.0.0.1", resolve));
    cleanups.push(() => new Promise<void>((resolve) => blocker.close(() => resolve())));
    const swarm = new Swarm({ torrent: { listenPort: port, maxConnections: 5, uploadRateLimit: 0 } });
    cleanups.push(() => swarm.stop());
    await expect(swarm.start()).rejects.toThrow(/EADDRINUSE|in use/i);
  });
});

/** A BitTorrent handshake (plaintext) for `infohash` from a random peer id. */
function handshake(infohash: string): Buffer {
  return Buffer.concat([
    Buffer.from([19]),
    Buffer.from("BitTorrent protocol"),
    Buffer.from([0, 0, 0, 0, 0, 0x10, 0, 0x04]),
    Buffer.from(infohash, "hex"),
    randomBytes(20),
  ]);
}

/** Connect, handshake, and resolve once the seeder answered with its handshake. */
function handshakeWith(port: number, infohash: string): Promise<{ sock: Socket; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, "127.0.0.1");
    const closed = new Promise<void>((r) => sock.once("close", () => r()));
    let got = 0;
    sock.on("error", () => {});
    sock.on("data", (b: Buffer) => {
      got += b.length;
      if (got >= 68) resolve({ sock, closed });
    });
    sock.once("close", () => {
      if (got < 68) reject(new Error("closed before the handshake reply"));
    });
    sock.write(handshake(infohash));
  });
}

describe("given maxConnections = 1", () => {
  test("when a second peer connects to the torrent, then it is disconnected and the first stays", async () => {
    const swarm = await startSwarm(1);
    const content = await randomContent(50_000);
    const t = await saveTorrent(content, { file: "a.torrent" });
    await swarm.seed({ infohash: t.infohash, torrent: t.torrent, path: content.blob.path });
    const first = await handshakeWith(swarm.port, t.infohash);
    cleanups.push(() => {
      first.sock.destroy();
    });
    expect(swarm.stats().peers).toBe(1);
    const second = await handshakeWith(swarm.port, t.infohash).catch(() => null);
    if (second) await second.closed; // answered the handshake, then cut
    expect(first.sock.destroyed).toBe(false);
    expect(swarm.stats().peers).toBe(1);
  });
});

describe("given the tracker is not reachable yet when the torrent is seeded (node start-up order)", () => {
  test(
    "when the tracker comes up a moment later, then a leecher that only knows the tracker still finds the seeder",
    async () => {
      const swarm = await startSwarm();
      const content = await randomContent(2 * 1024 * 1024 + 1);
      // Announce URL on a port nothing listens on yet.
      const trackerPort = await freePort();
      const announce = `http://127.0.0.1:${trackerPort}/announce`;
      const t = await saveTorrent(content, { file: "late.torrent", announce: [announce] });
      await swarm.seed({ infohash: t.infohash, torrent: t.torrent, path: content.blob.path });

      // Now the node's HTTP server starts, and initially does not know the torrent either.
      const node = startNodeHttp({ port: trackerPort });
      cleanups.push(() => node.close());
      // the seeder's retry reaches it and is refused (unknown torrent) before the node allows it
      await until(() => node.hits.announce! > 0, "a retried announce from the seeder", 10_000);
      node.allowed.add(t.infohash);

      const file = await libtorrentDownload({
        torrentPath: t.path,
        dir: await tmpDir("pt-late-"),
        timeoutMs: 60_000,
      });
      expect(await sha256File(file)).toBe(content.blob.sha256);
    },
    TEST_LIMIT,
  );
});
