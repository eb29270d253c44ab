/**
 * The node's registry heartbeat and seeding reconcile run on NODE__HEARTBEAT_INTERVAL_MS and
 * NODE__RESEED_INTERVAL_MS (5 s and 2 s by default), so tests can shorten them instead of sleeping
 * past them.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { eq } from "drizzle-orm";
import { startSeeder } from "../../seeder/process/start";
import { ConfigError, loadConfig } from "../../src/config";
import { nodes } from "../../src/db/schema";
import { silentLogger } from "../../src/log";
import { freePort, removeTmpDirs, tmpDir } from "../support/clients";

afterAll(removeTmpDirs);

describe("node timers", () => {
  test("default to a 5 s registry heartbeat and a 2 s reseed; out-of-range values are refused", () => {
    const c = loadConfig({});
    expect(c.node.heartbeatIntervalMs).toBe(5000);
    expect(c.node.reseedIntervalMs).toBe(2000);
    const bad = () => loadConfig({ NODE__HEARTBEAT_INTERVAL_MS: "30000", NODE__RESEED_INTERVAL_MS: "0" });
    expect(bad).toThrow(ConfigError);
    expect(bad).toThrow(/NODE__HEARTBEAT_INTERVAL_MS: must be at most 10000/);
    expect(bad).toThrow(/NODE__RESEED_INTERVAL_MS: must be at least 50/);
  });

  test("a node beats and reseeds at the configured intervals", async () => {
    const config = loadConfig({
      STORAGE__BASE_PATH: await tmpDir("pt-timers-"),
      NODE__HTTP_PORT: String(await freePort()),
      TORRENT__LISTEN_PORT: String(await freePort()),
      NODE__HEARTBEAT_INTERVAL_MS: "100",
      NODE__RESEED_INTERVAL_MS: "150",
    });
    // Record the periods the node asks for (the timers still run): the reseed has no other trace.
    const periods: number[] = [];
    const realSetInterval = globalThis.setInterval;
    globalThis.setInterval = ((fn: () => void, ms?: number) => {
      periods.push(ms ?? 0);
      return realSetInterval(fn, ms);
    }) as typeof setInterval;
    let running: Awaited<ReturnType<typeof startSeeder>>;
    try {
      running = await startSeeder(config, { log: silentLogger });
    } finally {
      globalThis.setInterval = realSetInterval;
    }
    try {
      expect(periods).toContain(100);
      expect(periods).toContain(150);
      // The registry row moves on every beat: three of them long before a 5 s beat could come.
      const seen = new Set<number>();
      const deadline = Date.now() + 4000;
      while (seen.size < 4 && Date.now() < deadline) {
        const [row] = await running.db.select().from(nodes).where(eq(nodes.name, config.node.name));
        if (row) seen.add(row.lastSeenAt);
        await Bun.sleep(20);
      }
      expect(seen.size).toBeGreaterThanOrEqual(4);
    } finally {
      await running.stop();
    }
  });
});
