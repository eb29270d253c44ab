/**
 * Garbage collection through the real service, ticking every second (STORAGE__GC_INTERVAL_SECONDS=1):
 * a blob no live job needs leaves the store while the node runs (not only at its next start), the
 * `proxytorrent_store_*` gauges follow the store, and request history past
 * STORAGE__HISTORY_RETENTION leaves the database with its job.
 */
import { describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, rename, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { eq } from "drizzle-orm";
import { ContentStore } from "../../seeder/node/cas";
import { openDatabase } from "../../seeder/process/database";
import { loadConfig } from "../../src/config";
import { fetchJobs, fetchRequests } from "../../src/db/schema";
import { bytesRoute } from "../support/origin";
import { until } from "../support/poll";
import { metricValue } from "../support/prometheus";
import { fileExists as exists, testScope } from "../support/scope";
import type { Service } from "../support/service";

const { origin, service } = testScope({ env: { STORAGE__GC_INTERVAL_SECONDS: "1" } });

const metric = (svc: Service, name: string, labels: Record<string, string> = {}) =>
  metricValue(svc.url, name, labels);

const store = async (svc: Service) => ({
  blobs: await metric(svc, "proxytorrent_store_blobs"),
  bytes: await metric(svc, "proxytorrent_store_bytes"),
});

async function storeIs(svc: Service, want: { blobs: number; bytes: number }, what: string) {
  let last = {};
  await until(
    async () => {
      last = await store(svc);
      return Bun.deepEquals(last, want);
    },
    what,
    15_000,
    50,
  ).catch((e: Error) => {
    throw new Error(`${e.message} (want ${JSON.stringify(want)}; last ${JSON.stringify(last)})`);
  });
}

async function withDb<T>(
  svc: Service,
  fn: (db: Awaited<ReturnType<typeof openDatabase>>["db"]) => Promise<T>,
) {
  const { client, db } = await openDatabase(loadConfig({ STORAGE__BASE_PATH: svc.basePath }));
  try {
    return await fn(db);
  } finally {
    client.close();
  }
}

describe("garbage collection on a running node", () => {
  test("content whose request is cancelled and which the node never seeded leaves the store at the next tick; the store gauges fall with it", async () => {
    const data = bytesRoute({ size: 300_000, seed: 81, contentType: "text/plain" });
    const o = await origin({ "/kept.txt": data });
    const svc = await service();
    const kept = await svc.waitFor(await svc.create({ url: o.url("/kept.txt") }));
    expect(kept.status).toBe("ready");
    await storeIs(svc, { blobs: 1, bytes: 300_000 }, "the gauges to count the ready content");

    // Content this node holds for a live job of its own that it does not seed, written straight
    // into the database and the store: no unseed or job end will ever release it, so this checks
    // the sweep alone (what it catches in real life, a removal that failed or a blob a crash left,
    // cannot be provoked on demand). Written as a commit writes: whole file renamed into place.
    const bytes = randomBytes(123_456);
    const hash = createHash("sha256").update(bytes).digest("hex");
    const path = new ContentStore(svc.basePath).pathFor(hash);
    await mkdir(dirname(path), { recursive: true });
    await writeFile(`${path}.writing`, bytes);
    const { userId } = await withDb(svc, async (db) => {
      const [r] = await db.select().from(fetchRequests).where(eq(fetchRequests.id, kept.id));
      const now = Date.now();
      await db.insert(fetchJobs).values({
        id: "job-unseeded",
        fingerprint: "fp-unseeded",
        status: "ready",
        url: "http://origin.test/unseeded",
        method: "GET",
        nodeName: "node-1",
        seedNode: "node-1",
        // Seeding is wanted, but with no torrent made yet the node has nothing to seed.
        seeding: true,
        contentHash: hash,
        contentSize: bytes.length,
        createdAt: now,
        updatedAt: now,
        completedAt: now,
      });
      await db.insert(fetchRequests).values({
        id: "req-unseeded",
        jobId: "job-unseeded",
        userId: r!.userId,
        url: "http://origin.test/unseeded",
        method: "GET",
        ttl: 0,
        createdAt: now,
      });
      return r!;
    });
    await rename(`${path}.writing`, path);
    // A live job of the node records it: kept, and counted.
    await storeIs(svc, { blobs: 2, bytes: 300_000 + bytes.length }, "the gauges to count the new blob");
    expect(await exists(path)).toBe(true);

    // Its request is cancelled (DELETE): no live job needs the content any more.
    expect(userId).toBeTruthy();
    expect((await svc.api("/v1/requests/req-unseeded", { method: "DELETE" })).status).toBe(204);
    await until(async () => !(await exists(path)), "the GC tick to remove the blob", 15_000, 50);
    await storeIs(svc, { blobs: 1, bytes: 300_000 }, "the gauges to fall back");
    const line = await svc.waitForLog(
      (l) => l.msg === "garbage collected" && l.blobs_removed === 1,
      "the tick's log line",
    );
    expect(line.bytes_freed).toBe(bytes.length);
    expect(await metric(svc, "proxytorrent_gc_runs_total")).toBeGreaterThan(1);
    // The live request's content is untouched.
    expect((await svc.status(kept.id)).status).toBe("ready");
    expect(await new ContentStore(svc.basePath).has(kept.content_hash)).toBe(true);
  });

  test("request history older than STORAGE__HISTORY_RETENTION goes with its job once it is not live; a live request stays", async () => {
    const a = bytesRoute({ size: 50_000, seed: 82, contentType: "text/plain" });
    const b = bytesRoute({ size: 60_000, seed: 83, contentType: "text/plain" });
    const o = await origin({ "/live.txt": a, "/over.txt": b });
    const svc = await service({ STORAGE__HISTORY_RETENTION: "1" });
    const live = await svc.waitFor(await svc.create({ url: o.url("/live.txt") }));
    const over = await svc.waitFor(await svc.create({ url: o.url("/over.txt") }));
    const jobOf = (id: string) =>
      withDb(svc, async (db) => {
        const [r] = await db.select().from(fetchRequests).where(eq(fetchRequests.id, id));
        return r!.jobId;
      });
    const overJob = await jobOf(over.id);
    const liveJob = await jobOf(live.id);
    expect((await svc.api(`/v1/requests/${over.id}`, { method: "DELETE" })).status).toBe(204);
    const purged = async () => ({
      requests: await metric(svc, "proxytorrent_gc_purged_rows_total", { table: "fetch_requests" }),
      jobs: await metric(svc, "proxytorrent_gc_purged_rows_total", { table: "fetch_jobs" }),
    });
    await until(
      async () => (await purged()).jobs > 0,
      "the cancelled request and its job to leave the history",
      15_000,
      50,
    );
    expect(await purged()).toEqual({ requests: 1, jobs: 1 });
    expect((await svc.api(`/v1/requests/${over.id}`)).status).toBe(404);
    await withDb(svc, async (db) => {
      const jobs = await db.select({ id: fetchJobs.id }).from(fetchJobs);
      expect(jobs.map((j) => j.id)).toEqual([liveJob]);
      expect(overJob).not.toBe(liveJob);
    });
    // Older than the retention too, but live: it stays, and keeps its content.
    expect((await svc.status(live.id)).status).toBe("ready");
    await storeIs(svc, { blobs: 1, bytes: 50_000 }, "the store to hold the live content only");
  });
});
