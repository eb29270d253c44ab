/**
 * Retention (POST `retention`, STORAGE__DEFAULT_RETENTION / STORAGE__MAX_RETENTION) through the
 * in-process API with a manual clock over a real libSQL file, jobs made ready by the real queue
 * (claimJobs, advance, completeJob): a request reads `expired` the instant its retention has passed
 * since its content was ready, its torrent and magnet answer 410, its passkey stops opening
 * anything, quotas stop counting it; the sweep (expireDue) records it and writes `request.expired`
 * exactly once however many nodes run it, and lets the job go only when no live request is left.
 */
import { describe, expect, test } from "bun:test";
import { and, eq, sql } from "drizzle-orm";
import { openDatabase } from "../../seeder/process/database";
import { type Env, loadConfig } from "../../src/config";
import type { Database } from "../../src/db";
import { fetchJobs, fetchRequests, webhookDeliveries } from "../../src/db/schema";
import { advance, claimJobs, completeJob, contentNeeded, listSeedable } from "../../src/jobs/queue";
import { cancelRequest, createRequest, expireDue } from "../../src/requests/service";
import { liveGrantHashes, passkeyGrant, requestPasskey } from "../../src/torrents/access";
import { bencode } from "../../src/torrents/bencode";
import { magnetFor } from "../../src/torrents/links";
import { passkeyHash } from "../../src/torrents/passkey";
import { BASE, bearer } from "../auth/helpers";
import { testApp } from "../support/app";
import { manualClock, requestInput, tempDatabase } from "../support/db";

const TOKEN = "static-token-0123456789";
const NODE = "node-1";
const CONTENT = "cd".repeat(32);
const SIZE = 1234;

async function setup(env: Env = {}) {
  const t = await tempDatabase({
    SECURITY__BEARER_TOKENS: TOKEN,
    RATE_LIMIT__REQUESTS_PER_MINUTE: "1000",
    RATE_LIMIT__REQUESTS_PER_IP_MINUTE: "1000",
    ...env,
  });
  const clock = manualClock(Date.now());
  const app = testApp({ db: t.db, config: t.config, clock });
  const post = (body: Record<string, unknown>) =>
    app.request(`${BASE}/v1/requests`, bearer(TOKEN, { method: "POST", body: JSON.stringify(body) }));
  const created = async (body: Record<string, unknown>) => {
    const res = await post(body);
    expect(res.status).toBe(201);
    return ((await res.json()) as { id: string }).id;
  };
  const get = (path: string) => app.request(`${BASE}/v1/requests/${path}`, bearer(TOKEN));
  const status = async (id: string) => {
    const res = await get(id);
    expect(res.status).toBe(200);
    return (await res.json()) as Record<string, any>;
  };
  /** A node takes the oldest queued job and makes it ready with `contentHash`, as the daemon does. */
  const makeReady = async (contentHash = CONTENT) => {
    const [claimed] = await claimJobs(t.db, clock, { nodeName: NODE, limit: 1, leaseMs: 60_000 });
    const job = { id: claimed!.id, leaseToken: claimed!.leaseToken! };
    const infohash = contentHash.slice(0, 40);
    const torrent = bencode({
      announce: "http://127.0.0.1:9/announce",
      info: { name: "a.bin", length: SIZE, "piece length": 16384, pieces: new Uint8Array(20) },
    });
    const magnetLink = magnetFor({ infohash, name: "a.bin", size: SIZE, trackers: [] });
    expect(
      await advance(t.db, clock, job, {
        contentHash,
        contentSize: SIZE,
        infohash,
        torrent,
        magnetLink,
        torrentName: "a.bin",
      }),
    ).toBe(true);
    expect(await completeJob(t.db, clock, job, NODE)).toBe("ready");
    return job.id;
  };
  const job = async (id: string) => (await t.db.select().from(fetchJobs).where(eq(fetchJobs.id, id)))[0]!;
  return { ...t, clock, app, post, created, get, status, makeReady, job };
}

const base = requestInput({ url: "http://o.test/a", ttl: 3600 });

const expiredRows = async (db: Database, requestId: string) =>
  (
    await db
      .select({ n: sql<number>`count(*)` })
      .from(webhookDeliveries)
      .where(
        and(eq(webhookDeliveries.requestId, requestId), eq(webhookDeliveries.eventType, "request.expired")),
      )
  )[0]!.n;

describe("POST retention", () => {
  test("defaults to STORAGE__DEFAULT_RETENTION, counted from when the content is ready", async () => {
    const t = await setup({ STORAGE__DEFAULT_RETENTION: "100", STORAGE__MAX_RETENTION: "1000" });
    const id = await t.created({ url: "http://o.test/default" });
    expect((await t.status(id)).expires_at).toBeNull(); // not ready yet: the clock has not started
    t.clock.advance(7000);
    await t.makeReady();
    const s = await t.status(id);
    expect(s.status).toBe("ready");
    expect(s.expires_at).toBe(new Date(t.clock.now() + 100_000).toISOString());
    const [row] = await t.db.select().from(fetchRequests).where(eq(fetchRequests.id, id));
    expect(row!.retention).toBe(100);
  });

  test("1 and STORAGE__MAX_RETENTION are accepted; 0, fractions and more than the cap are 422", async () => {
    const t = await setup({ STORAGE__DEFAULT_RETENTION: "60", STORAGE__MAX_RETENTION: "1000" });
    await t.created({ url: "http://o.test/1", retention: 1 });
    await t.created({ url: "http://o.test/2", retention: 1000 });
    for (const retention of [1001, 0, -5, 1.5, "60"]) {
      const res = await t.post({ url: "http://o.test/3", retention });
      expect(res.status).toBe(422);
      const body = (await res.json()) as { detail: { loc: string[]; msg: string }[] };
      expect(body.detail[0]!.loc).toEqual(["body", "retention"]);
    }
    const over = await t.post({ url: "http://o.test/3", retention: 1001 });
    expect(JSON.stringify(await over.json())).toContain(
      "retention must be at most 1000 (STORAGE__MAX_RETENTION)",
    );
  });

  test("STORAGE__MAX_RETENTION=0 means no cap; a default above a cap is a configuration error", async () => {
    const t = await setup({ STORAGE__MAX_RETENTION: "0" });
    await t.created({ url: "http://o.test/long", retention: 10 * 365 * 86400 });
    expect(() => loadConfig({ STORAGE__DEFAULT_RETENTION: "61", STORAGE__MAX_RETENTION: "60" })).toThrow(
      "STORAGE__DEFAULT_RETENTION: must not exceed STORAGE__MAX_RETENTION",
    );
  });
});

describe("expiry at read", () => {
  test("the status reads expired the instant the retention passes (no sweep); torrent and magnet 410", async () => {
    const t = await setup();
    const id = await t.created({ url: "http://o.test/short", retention: 5 });
    t.clock.advance(2000); // content ready 2 s after the POST: retention counts from here
    await t.makeReady();
    const readyAt = t.clock.now();
    expect((await t.get(`${id}/torrent`)).status).toBe(200);
    expect((await t.get(`${id}/magnet`)).status).toBe(200);
    t.clock.advance(4999);
    expect((await t.status(id)).status).toBe("ready");
    t.clock.advance(1);
    const s = await t.status(id);
    expect(s.status).toBe("expired");
    expect(s.expires_at).toBe(new Date(readyAt + 5000).toISOString());
    expect(s.updated_at).toBe(new Date(readyAt + 5000).toISOString());
    expect(s.completed_at).toBe(new Date(readyAt).toISOString());
    for (const path of ["torrent", "magnet"]) {
      const res = await t.get(`${id}/${path}`);
      expect(res.status).toBe(410);
      const body = (await res.json()) as { detail: string };
      expect(body.detail).toContain("expired");
    }
    // DELETE does not turn it into `cancelled`: it ended already.
    expect(
      (await t.app.request(`${BASE}/v1/requests/${id}`, bearer(TOKEN, { method: "DELETE" }))).status,
    ).toBe(204);
    expect((await t.status(id)).status).toBe("expired");
  });

  test("a passkey stops opening the content the instant its request expires", async () => {
    const t = await setup();
    const id = await t.created({ url: "http://o.test/pk", retention: 5 });
    await t.makeReady();
    const passkey = await requestPasskey(t.db, id);
    const hash = await passkeyHash(passkey);
    expect((await passkeyGrant(t.db, passkey, t.clock.now(), 0))?.requestId).toBe(id);
    expect(await liveGrantHashes(t.db, [hash], t.clock.now(), 0)).toEqual(new Set([hash]));
    t.clock.advance(5000);
    expect(await passkeyGrant(t.db, passkey, t.clock.now(), 0)).toBeNull();
    expect(await liveGrantHashes(t.db, [hash], t.clock.now(), 0)).toEqual(new Set());
    await expireDue(t.db, t.clock);
    expect(await passkeyGrant(t.db, passkey, t.clock.now(), 0)).toBeNull();
  });

  test("stored bytes in /v1/usage stop counting an expired request at once", async () => {
    const t = await setup();
    await t.created({ url: "http://o.test/q", retention: 5 });
    await t.makeReady();
    const usage = async () =>
      ((await (await t.app.request(`${BASE}/v1/usage`, bearer(TOKEN))).json()) as { stored_bytes: number })
        .stored_bytes;
    expect(await usage()).toBe(SIZE);
    t.clock.advance(5000);
    expect(await usage()).toBe(0);
  });
});

describe("expiry sweep", () => {
  test("two concurrent sweepers: each request expires once, with exactly one request.expired", async () => {
    const t = await setup();
    // A second connection to the same file, as another node would have.
    const other = (await openDatabase(t.config)).db;
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      const r = await createRequest(t.db, t.clock, {
        ...base,
        url: `http://o.test/sweep-${i}`,
        retention: 5,
        callbackUrl: "https://hooks.example.test/in",
      });
      await t.makeReady();
      ids.push(r.id);
    }
    expect(await expireDue(t.db, t.clock)).toEqual([]); // nothing due yet
    t.clock.advance(5000);
    const [a, b] = await Promise.all([expireDue(t.db, t.clock), expireDue(other, t.clock)]);
    expect([...a, ...b].map((r) => r.id).sort()).toEqual([...ids].sort());
    for (const id of ids) expect(await expiredRows(t.db, id)).toBe(1);
    expect(await expireDue(other, t.clock)).toEqual([]);
    for (const id of ids) expect(await expiredRows(t.db, id)).toBe(1);
    const [payload] = await t.db
      .select({ p: webhookDeliveries.payload })
      .from(webhookDeliveries)
      .where(
        and(eq(webhookDeliveries.requestId, ids[0]!), eq(webhookDeliveries.eventType, "request.expired")),
      );
    const body = JSON.parse(payload!.p) as { type: string; data: Record<string, unknown> };
    expect(body.type).toBe("request.expired");
    expect(body.data).toMatchObject({
      id: ids[0],
      status: "expired",
      magnet_link: null,
      content_hash: CONTENT,
    });
    // Their jobs are let go: not seeded, their content no longer needed on the node.
    expect(await listSeedable(t.db, NODE)).toEqual([]);
    expect(await contentNeeded(t.db, NODE, CONTENT)).toBe(false);
  });

  test("a second live request keeps the job seeded and its content needed until it too expires", async () => {
    const t = await setup();
    const short = await createRequest(t.db, t.clock, { ...base, retention: 5 });
    const jobId = await t.makeReady();
    t.clock.advance(1000);
    const long = await createRequest(t.db, t.clock, { ...base, retention: 60 });
    expect(long.source).toBe("cache");
    expect(long.jobId).toBe(jobId);
    // The same bytes from another URL: another job of this node records the same content hash.
    const otherUrl = await createRequest(t.db, t.clock, { ...base, url: "http://o.test/b", retention: 30 });
    const otherJob = await t.makeReady(CONTENT);
    expect(otherJob).toBe(otherUrl.jobId);

    t.clock.advance(4000); // `short` expires
    expect((await expireDue(t.db, t.clock)).map((r) => r.id)).toEqual([short.id]);
    expect((await t.job(jobId)).status).toBe("ready");
    expect((await listSeedable(t.db, NODE)).map((j) => j.id).sort()).toEqual([jobId, otherJob].sort());

    t.clock.advance(60_000); // both others expire
    expect((await expireDue(t.db, t.clock)).map((r) => r.id).sort()).toEqual([long.id, otherUrl.id].sort());
    expect(await t.job(jobId)).toMatchObject({ status: "expired", seeding: false });
    expect(await t.job(otherJob)).toMatchObject({ status: "expired", seeding: false });
    expect(await listSeedable(t.db, NODE)).toEqual([]);
    expect(await contentNeeded(t.db, NODE, CONTENT)).toBe(false);
  });

  test("the other job's live request alone keeps the content needed", async () => {
    const t = await setup();
    await createRequest(t.db, t.clock, { ...base, retention: 5 });
    const first = await t.makeReady();
    await createRequest(t.db, t.clock, { ...base, url: "http://o.test/b", retention: 60 });
    await t.makeReady();
    t.clock.advance(5000);
    await expireDue(t.db, t.clock);
    expect((await t.job(first)).status).toBe("expired");
    expect(await contentNeeded(t.db, NODE, CONTENT)).toBe(true);
  });

  test("an expired request left with a cancelled one lets the job go", async () => {
    const t = await setup();
    const a = await createRequest(t.db, t.clock, { ...base, retention: 5 });
    const jobId = await t.makeReady();
    const b = await createRequest(t.db, t.clock, { ...base, retention: 60 });
    t.clock.advance(5000);
    await cancelRequest(t.db, t.clock, b.id); // `a` has expired (not swept yet): nothing live is left
    expect(await t.job(jobId)).toMatchObject({ status: "cancelled", seeding: false });
    expect((await expireDue(t.db, t.clock)).map((r) => r.id)).toEqual([a.id]);
  });
});

describe("ttl reuse", () => {
  test("a new request never joins an expired job: it fetches again", async () => {
    const t = await setup();
    const first = await createRequest(t.db, t.clock, { ...base, retention: 5 });
    await t.makeReady();
    t.clock.advance(6000);
    await expireDue(t.db, t.clock);
    const again = await createRequest(t.db, t.clock, { ...base, ttl: 86400, retention: 5 });
    expect(again.source).toBe("fetch");
    expect(again.jobId).not.toBe(first.jobId);
    expect(again.status).toBe("queued");
  });
});
