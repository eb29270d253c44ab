/**
 * Row garbage collection (src/jobs/purge.ts) on a real libSQL file with a manual clock: for each
 * table, rows past their retention go and recent or live rows stay; a job is never deleted while
 * active or referenced; batches loop until the backlog is gone, and a time budget stops them.
 */
import { describe, expect, test } from "bun:test";
import { inArray } from "drizzle-orm";
import type { SQLiteTable } from "drizzle-orm/sqlite-core";
import { openDatabase } from "../../seeder/process/database";
import type { Database } from "../../src/db";
import {
  authNonces,
  fetchJobs,
  fetchRequests,
  type JobStatus,
  nodes,
  rateLimits,
  requestCallbacks,
  webhookAttempts,
  webhookDeliveries,
} from "../../src/db/schema";
import { purgeRows } from "../../src/jobs/purge";
import { claimJobs } from "../../src/jobs/queue";
import { createRequest } from "../../src/requests/service";
import { manualClock, requestInput, tempDatabase } from "../support/db";

const DAY = 86_400_000;
const RETENTION = { historyMs: 90 * DAY, webhookMs: 30 * DAY, nodeMs: 7 * DAY };

async function setup() {
  const t = await tempDatabase();
  const clock = manualClock(Date.UTC(2026, 5, 1));
  return { ...t, clock };
}

const ids = async (db: Database, table: SQLiteTable, col: "id" | "name" | "bucket" | "nonce") =>
  (await db.select().from(table)).map((r) => (r as Record<string, string>)[col]!).sort();

async function job(
  db: Database,
  id: string,
  status: JobStatus,
  at: number,
  extra: Partial<typeof fetchJobs.$inferInsert> = {},
) {
  await db.insert(fetchJobs).values({
    id,
    fingerprint: `fp-${id}`,
    status,
    url: `http://o.test/${id}`,
    method: "GET",
    createdAt: at,
    updatedAt: at,
    seeding: status === "ready",
    ...extra,
  });
}

async function request(
  db: Database,
  id: string,
  jobId: string,
  at: number,
  cancelledAt: number | null = null,
) {
  await db.insert(fetchRequests).values({
    id,
    jobId,
    url: `http://o.test/${jobId}`,
    method: "GET",
    ttl: 0,
    createdAt: at,
    cancelledAt,
  });
}

async function delivery(
  db: Database,
  id: string,
  requestId: string,
  status: string,
  at: number,
  attempts = 1,
) {
  await db.insert(webhookDeliveries).values({
    id,
    eventType: "request.ready",
    requestId,
    url: "http://hook.test/",
    payload: "{}",
    status: status as "delivered",
    nextAttemptAt: at,
    createdAt: at,
    updatedAt: at,
  });
  for (let i = 0; i < attempts; i++)
    await db.insert(webhookAttempts).values({
      deliveryId: id,
      outcome: status === "pending" ? "retry" : status,
      startedAt: at,
      finishedAt: at,
    });
}

describe("purging rows past their retention", () => {
  test("expired nonces and ended rate-limit windows go; current ones stay", async () => {
    const { db, clock, client } = await setup();
    const now = clock.now();
    await db.insert(authNonces).values([
      { keyId: "k", nonce: "old", expiresAt: now - 1 },
      { keyId: "k", nonce: "current", expiresAt: now + 60_000 },
    ]);
    await db.insert(rateLimits).values([
      { bucket: "ended", windowStart: now - 120_000, count: 5, expiresAt: now - 60_000 },
      { bucket: "open", windowStart: now - 10_000, count: 1, expiresAt: now + 50_000 },
    ]);
    const { counts, done } = await purgeRows(db, clock, RETENTION);
    expect(done).toBe(true);
    expect(counts).toEqual({ auth_nonces: 1, rate_limits: 1 });
    expect(await ids(db, authNonces, "nonce")).toEqual(["current"]);
    expect(await ids(db, rateLimits, "bucket")).toEqual(["open"]);
    client.close();
  });

  test("nodes not seen for longer than the retention go, stopped or not; recently seen ones stay", async () => {
    const { db, clock, client } = await setup();
    const now = clock.now();
    const node = (name: string, status: "running" | "stopped", lastSeenAt: number) => ({
      name,
      publicUrl: `http://${name}.test`,
      version: "0",
      status,
      startedAt: lastSeenAt - DAY,
      lastSeenAt,
    });
    await db
      .insert(nodes)
      .values([
        node("gone", "running", now - 8 * DAY),
        node("stopped-long-ago", "stopped", now - 8 * DAY),
        node("stopped-yesterday", "stopped", now - DAY),
        node("alive", "running", now - 1000),
      ]);
    expect((await purgeRows(db, clock, RETENTION)).counts).toEqual({ nodes: 2 });
    expect(await ids(db, nodes, "name")).toEqual(["alive", "stopped-yesterday"]);
    client.close();
  });

  test("webhook deliveries that ended before the retention go with their attempts; pending and recent ones stay", async () => {
    const { db, clock, client } = await setup();
    const now = clock.now();
    await job(db, "j", "ready", now);
    await request(db, "r", "j", now);
    await delivery(db, "old-delivered", "r", "delivered", now - 31 * DAY, 2);
    await delivery(db, "old-failed", "r", "failed", now - 31 * DAY, 3);
    await delivery(db, "old-pending", "r", "pending", now - 31 * DAY);
    await delivery(db, "recent-delivered", "r", "delivered", now - 29 * DAY);
    const { counts } = await purgeRows(db, clock, RETENTION);
    expect(counts).toEqual({ webhook_deliveries: 2, webhook_attempts: 5 });
    expect(await ids(db, webhookDeliveries, "id")).toEqual(["old-pending", "recent-delivered"]);
    const left = await db.select({ d: webhookAttempts.deliveryId }).from(webhookAttempts);
    expect(left.map((a) => a.d).sort()).toEqual(["old-pending", "recent-delivered"]);
    // 0 = keep them (as long as their request)
    await delivery(db, "old-again", "r", "delivered", now - 400 * DAY);
    expect((await purgeRows(db, clock, { ...RETENTION, webhookMs: 0 })).counts).toEqual({});
    client.close();
  });

  test("request history older than the retention goes once it is not live, with its callback and ended deliveries; its job goes once unreferenced, never an active one", async () => {
    const { db, clock, client } = await setup();
    const now = clock.now();
    const old = now - 91 * DAY;
    // Old and over: cancelled; job failed; job ready but no longer seeded (nobody wants it).
    await job(db, "j-cancelled", "cancelled", old);
    await request(db, "r-cancelled", "j-cancelled", old, old + 1000);
    await db
      .insert(requestCallbacks)
      .values({ requestId: "r-cancelled", url: "http://hook.test/", createdAt: old });
    await delivery(db, "d-cancelled", "r-cancelled", "delivered", old, 2);
    await delivery(db, "d-still-pending", "r-cancelled", "pending", old);
    await job(db, "j-error", "error", old);
    await request(db, "r-error", "j-error", old);
    await job(db, "j-unwanted", "ready", old, { seeding: false });
    await request(db, "r-unwanted", "j-unwanted", old);
    // Old but live: ready and seeded; a job still running (a retry) — both stay, with their jobs.
    await job(db, "j-live", "ready", old);
    await request(db, "r-live", "j-live", old);
    await job(db, "j-running", "fetching", old);
    await request(db, "r-running", "j-running", old);
    // A job shared by an old cancelled request and a recent one: the old request goes, the job stays.
    await job(db, "j-shared", "ready", old);
    await request(db, "r-shared-old", "j-shared", old, old);
    await request(db, "r-shared-new", "j-shared", now - DAY);
    // Recent history stays.
    await job(db, "j-recent", "error", now - DAY);
    await request(db, "r-recent", "j-recent", now - DAY);
    // Jobs with no request at all: ended ones go; an active one (a request is being linked) stays.
    await job(db, "j-orphan-ready", "ready", old);
    await job(db, "j-orphan-queued", "queued", old);
    await job(db, "j-orphan-seeding", "seeding", old);

    const { counts, done } = await purgeRows(db, clock, RETENTION);
    expect(done).toBe(true);
    expect(counts).toEqual({
      fetch_requests: 4,
      request_callbacks: 1,
      webhook_deliveries: 1,
      webhook_attempts: 2,
      fetch_jobs: 4,
    });
    expect(await ids(db, fetchRequests, "id")).toEqual(["r-live", "r-recent", "r-running", "r-shared-new"]);
    expect(await ids(db, fetchJobs, "id")).toEqual([
      "j-live",
      "j-orphan-queued",
      "j-orphan-seeding",
      "j-recent",
      "j-running",
      "j-shared",
    ]);
    expect(await db.select().from(requestCallbacks)).toEqual([]);
    expect(await ids(db, webhookDeliveries, "id")).toEqual(["d-still-pending"]);
    // A second run finds nothing more.
    expect((await purgeRows(db, clock, RETENTION)).counts).toEqual({});
    client.close();
  });

  test("an old expired request is history even while its job still seeds for a live one; an expired job with no request goes", async () => {
    const { db, clock, client } = await setup();
    const now = clock.now();
    const old = now - 91 * DAY;
    await job(db, "j-seeding", "ready", old);
    await request(db, "r-expired", "j-seeding", old);
    await db
      .update(fetchRequests)
      .set({ expiresAt: old + DAY })
      .where(inArray(fetchRequests.id, ["r-expired"]));
    await request(db, "r-live", "j-seeding", old);
    await job(db, "j-expired", "expired", old, { seeding: false });

    const { counts } = await purgeRows(db, clock, RETENTION);
    expect(counts).toEqual({ fetch_requests: 1, fetch_jobs: 1 });
    expect(await ids(db, fetchRequests, "id")).toEqual(["r-live"]);
    expect(await ids(db, fetchJobs, "id")).toEqual(["j-seeding"]);
    client.close();
  });

  test("history retention 0 keeps every request; a request made through the service stays while its job is queued or claimed", async () => {
    const { db, clock, client } = await setup();
    const old = clock.now() - 400 * DAY;
    await job(db, "j", "cancelled", old);
    await request(db, "r", "j", old, old);
    expect((await purgeRows(db, clock, { ...RETENTION, historyMs: 0 })).counts).toEqual({});
    expect(await ids(db, fetchRequests, "id")).toEqual(["r"]);

    const made = await createRequest(
      db,
      clock,
      requestInput({
        url: "http://o.test/fresh",
        userId: "t",
      }),
    );
    clock.advance(100 * DAY);
    await purgeRows(db, clock, RETENTION);
    await claimJobs(db, clock, { nodeName: "n", limit: 1, leaseMs: 60_000 });
    await purgeRows(db, clock, RETENTION);
    const left = await db
      .select()
      .from(fetchJobs)
      .where(inArray(fetchJobs.id, [made.jobId]));
    expect(left.map((j) => j.status)).toEqual(["fetching"]);
    expect(await ids(db, fetchRequests, "id")).toEqual([made.id]);
    client.close();
  });

  test("a backlog larger than a batch is deleted batch after batch; the time budget stops it and the next run continues", async () => {
    const { db, clock, client } = await setup();
    const now = clock.now();
    await db
      .insert(authNonces)
      .values(Array.from({ length: 7 }, (_, i) => ({ keyId: "k", nonce: `n${i}`, expiresAt: now - 1 })));
    expect(await purgeRows(db, clock, RETENTION, { batch: 2 })).toEqual({
      counts: { auth_nonces: 7 },
      done: true,
    });

    await db
      .insert(authNonces)
      .values(Array.from({ length: 7 }, (_, i) => ({ keyId: "k", nonce: `m${i}`, expiresAt: now - 1 })));
    // A wall clock that moves 10 ms per look: a 25 ms budget allows two batches.
    let wall = 0;
    const ticking = () => (wall += 10);
    const partial = await purgeRows(db, clock, RETENTION, { batch: 2, budgetMs: 25, now: ticking });
    expect(partial).toEqual({ counts: { auth_nonces: 4 }, done: false });
    expect((await db.select().from(authNonces)).length).toBe(3);
    // A process shutting down starts no batch.
    expect(await purgeRows(db, clock, RETENTION, { stopped: () => true })).toEqual({
      counts: {},
      done: false,
    });
    expect((await purgeRows(db, clock, RETENTION, { batch: 2 })).counts).toEqual({ auth_nonces: 3 });
    client.close();
  });

  test("two connections purging one database at once, as two nodes would (no leader): every old row goes exactly once, no error", async () => {
    const { db, clock, client, config } = await setup();
    const now = clock.now();
    const old = now - 91 * DAY;
    for (let i = 0; i < 40; i++) {
      await job(db, `j${i}`, "cancelled", old);
      await request(db, `r${i}`, `j${i}`, old, old);
      await delivery(db, `d${i}`, `r${i}`, "delivered", old);
    }
    await db
      .insert(authNonces)
      .values(Array.from({ length: 100 }, (_, i) => ({ keyId: "k", nonce: `n${i}`, expiresAt: now - 1 })));
    const other = await openDatabase(config);
    const [a, b] = await Promise.all([
      purgeRows(db, clock, RETENTION, { batch: 7 }),
      purgeRows(other.db, clock, RETENTION, { batch: 7 }),
    ]);
    const sum = (table: keyof typeof a.counts) => (a.counts[table] ?? 0) + (b.counts[table] ?? 0);
    expect([sum("auth_nonces"), sum("fetch_requests"), sum("fetch_jobs"), sum("webhook_deliveries")]).toEqual(
      [100, 40, 40, 40],
    );
    for (const table of [authNonces, fetchRequests, fetchJobs, webhookDeliveries, webhookAttempts])
      expect(await db.select().from(table)).toEqual([]);
    other.client.close();
    client.close();
  });
});
