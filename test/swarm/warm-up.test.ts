/**
 * The start-up warm-up (seeder/node/swarm/warm-up.ts): it really runs the serving path, leaves
 * nothing behind, can be switched off, does not hold stop() up, and real clients still get the
 * right bytes afterwards. No timing is asserted: what it buys is measured in bench/seeding.ts.
 */
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { Swarm, type SwarmExtras } from "../../seeder/node/swarm/swarm";
import { libtorrentDownload, removeTmpDirs, sha256File, tmpDir } from "../support/clients";
import { randomContent, saveTorrent } from "../support/seeder-fixture";

/** bun's default per-test limit is 5 s and bunfig's `[test] timeout` is ignored by bun 1.4.5. */
const TEST_LIMIT = 120_000;

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(removeTmpDirs);

async function startSwarm(extras: SwarmExtras): Promise<Swarm> {
  const swarm = new Swarm(
    { torrent: { listenPort: 0, listenHost: "127.0.0.1", maxConnections: 50, uploadRateLimit: 0 } },
    extras,
  );
  cleanups.push(() => swarm.stop());
  await swarm.start();
  return swarm;
}

/** The webtorrent client's torrents, warm-up one included (Swarm.list() never shows it). */
function clientTorrents(swarm: Swarm): number {
  return (swarm as unknown as { client: { torrents: unknown[] } }).client.torrents.length;
}

describe("given a swarm that warms up at start", () => {
  test(
    "when the warm-up is over, then every block was served over a real peer connection and its torrent is gone",
    async () => {
      const warnings: string[] = [];
      const swarm = await startSwarm({ warmUp: { blocks: 600 }, onWarning: (m) => warnings.push(m) });
      const result = await swarm.warmedUp();
      expect(result?.blocks).toBe(600);
      expect(swarm.list()).toEqual([]);
      expect(clientTorrents(swarm)).toBe(0);
      expect(swarm.stats()).toEqual({ torrents: 0, uploaded: 0, peers: 0 });
      expect(warnings).toEqual([]);
    },
    TEST_LIMIT,
  );

  test(
    "when libtorrent downloads a seeded blob afterwards, then it gets the right bytes",
    async () => {
      const swarm = await startSwarm({ warmUp: { blocks: 600 } });
      expect((await swarm.warmedUp())?.blocks).toBe(600);
      const content = await randomContent(3 * 1024 * 1024 + 12_345);
      const t = await saveTorrent(content, { file: "a.torrent" });
      await swarm.seed({ infohash: t.infohash, torrent: t.torrent, path: content.blob.path });
      const dir = await tmpDir();
      const file = await libtorrentDownload({
        torrentPath: t.path,
        dir: join(dir, "lt"),
        connect: { host: "127.0.0.1", port: swarm.port },
        timeoutMs: 60_000,
      });
      expect(await sha256File(file)).toBe(content.blob.sha256);
    },
    TEST_LIMIT,
  );

  test(
    "when the swarm stops while warming up, then stop() and warmedUp() both settle",
    async () => {
      const swarm = await startSwarm({ warmUp: { blocks: 10_000_000 } });
      // Wait until blocks are flowing, so stop() meets a warm-up in the middle of its transfer.
      const client = (swarm as unknown as { client: { torrents: { uploaded: number }[] } }).client;
      const deadline = Date.now() + 30_000;
      while (!((client.torrents[0]?.uploaded ?? 0) > 0)) {
        if (Date.now() > deadline) throw new Error("the warm-up never started sending");
        await Bun.sleep(5);
      }
      await swarm.stop();
      const result = await swarm.warmedUp();
      expect(result === null || result.blocks < 10_000_000).toBe(true);
    },
    TEST_LIMIT,
  );
});

describe("given an upload limit", () => {
  test("when the swarm starts, then no warm-up runs (its bytes would eat the limit)", async () => {
    const swarm = new Swarm(
      { torrent: { listenPort: 0, listenHost: "127.0.0.1", maxConnections: 50, uploadRateLimit: 100_000 } },
      {},
    );
    cleanups.push(() => swarm.stop());
    await swarm.start();
    expect(await swarm.warmedUp()).toBeNull();
    expect(clientTorrents(swarm)).toBe(0);
  });
});

describe("given warmUp: false", () => {
  test("when the swarm starts, then no warm-up runs", async () => {
    const swarm = await startSwarm({ warmUp: false });
    expect(await swarm.warmedUp()).toBeNull();
    expect(clientTorrents(swarm)).toBe(0);
  });
});
