/**
 * Quotas per tenant (src/requests/quotas.ts) through the in-process API over a real libSQL file:
 * an over-quota POST is refused with 403 naming the quota and its figures, before anything is
 * recorded; GET /v1/usage matches what was created, made ready and cancelled; per-key limits
 * override the QUOTA__* defaults; concurrent POSTs cannot slip past the active quota.
 */
import { describe, expect, test } from "bun:test";
import { and, eq, inArray, isNull, notExists, sql } from "drizzle-orm";
import { openDatabase } from "../../seeder/process/database";
import { createApiKey } from "../../src/auth/keys";
import type { Env } from "../../src/config";
import type { Database } from "../../src/db";
import { fetchJobs, fetchRequests } from "../../src/db/schema";
import type { Quota } from "../../src/requests/quotas";
import { BASE, bearer } from "../auth/helpers";
import { testApp } from "../support/app";
import { tempDatabase } from "../support/db";

const TOKEN = "static-token-0123456789";
const OTHER = "other-token-0123456789";

async function setup(env: Env = {}) {
  const t = await tempDatabase({
    SECURITY__BEARER_TOKENS: `${TOKEN},${OTHER}`,
    RATE_LIMIT__REQUESTS_PER_MINUTE: "1000",
    RATE_LIMIT__REQUESTS_PER_IP_MINUTE: "1000",
    ...env,
  });
  const refused: Quota[] = [];
  const app = testApp({ db: t.db, config: t.config, onQuotaRefused: (q) => refused.push(q) });
  let n = 0;
  const post = (token = TOKEN, url = `http://example.test/${++n}`) =>
    app.request(`${BASE}/v1/requests`, bearer(token, { method: "POST", body: JSON.stringify({ url }) }));
  const created = async (token = TOKEN, url?: string) => {
    const res = await post(token, url);
    expect(res.status).toBe(201);
    return ((await res.json()) as { id: string }).id;
  };
  const usage = async (token = TOKEN, query = "") => {
    const res = await app.request(`${BASE}/v1/usage${query}`, bearer(token));
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  const cancel = async (id: string, token = TOKEN) =>
    expect((await app.request(`${BASE}/v1/requests/${id}`, bearer(token, { method: "DELETE" }))).status).toBe(
      204,
    );
  return { ...t, app, refused, post, created, usage, cancel };
}

/** What a node leaves when it finished the request's job (as other unit tests do). */
async function markReady(db: Database, requestId: string, contentHash: string, contentSize: number) {
  const [row] = await db
    .select({ jobId: fetchRequests.jobId })
    .from(fetchRequests)
    .where(eq(fetchRequests.id, requestId));
  await db
    .update(fetchJobs)
    .set({ status: "ready", seeding: true, contentHash, contentSize, completedAt: Date.now() })
    .where(eq(fetchJobs.id, row!.jobId));
}

const rowCounts = async (db: Database) => ({
  requests: (await db.select({ n: sql<number>`count(*)` }).from(fetchRequests))[0]!.n,
  jobs: (await db.select({ n: sql<number>`count(*)` }).from(fetchJobs))[0]!.n,
});

const HASH_A = "a".repeat(64);
const HASH_B = "b".repeat(64);

describe("active-request quota", () => {
  test("a POST at the quota is 403 naming it and its figures, and records nothing", async () => {
    const t = await setup({ QUOTA__MAX_ACTIVE: "2" });
    await t.created();
    const second = await t.created();
    const before = await rowCounts(t.db);
    const res = await t.post();
    expect(res.status).toBe(403);
    expect(await res.json()).toEqual({
      detail: "Active request quota reached: 2 of 2 (QUOTA__MAX_ACTIVE or keys set --max-active)",
    });
    expect(await rowCounts(t.db)).toEqual(before);
    expect(t.refused).toEqual(["active"]);
    // Another tenant is not affected; cancelling frees a place.
    await t.created(OTHER);
    await t.cancel(second);
    await t.created();
    t.client.close();
  });

  test("a ready or cancelled request no longer counts", async () => {
    const t = await setup({ QUOTA__MAX_ACTIVE: "1" });
    const first = await t.created();
    await markReady(t.db, first, HASH_A, 10);
    const second = await t.created();
    expect((await t.post()).status).toBe(403);
    await t.cancel(second);
    await t.created();
    t.client.close();
  });

  test("concurrent POSTs cannot slip past it; no job is left without a request", async () => {
    const t = await setup({ QUOTA__MAX_ACTIVE: "5" });
    // Two more connections to the same file, as several API processes would have.
    const others = await Promise.all([openDatabase(t.config), openDatabase(t.config)]);
    const apps = [t.app, ...others.map((o) => testApp({ db: o.db, config: t.config }))];
    const postAt = async (i: number) => {
      const res = await apps[i % apps.length]!.request(
        `${BASE}/v1/requests`,
        bearer(TOKEN, { method: "POST", body: JSON.stringify({ url: `http://example.test/race/${i}` }) }),
      );
      return { status: res.status, body: (await res.json()) as { detail?: string } };
    };
    const results = await Promise.all(Array.from({ length: 60 }, (_, i) => postAt(i)));
    const statuses = results.map((r) => r.status);
    expect(statuses.filter((s) => s === 201)).toHaveLength(5);
    expect(statuses.filter((s) => s === 403)).toHaveLength(55);
    for (const r of results.filter((x) => x.status === 403))
      expect(r.body.detail).toMatch(/^Active request quota reached: 5 of 5 /);
    expect((await t.usage()).body.active_requests).toBe(5);
    // A job made by a POST that lost the race at the last moment was cancelled, not left to fetch.
    const orphans = await t.db
      .select({ id: fetchJobs.id })
      .from(fetchJobs)
      .where(
        and(
          inArray(fetchJobs.status, ["queued", "fetching", "packaging", "seeding"]),
          notExists(
            t.db
              .select({ one: sql`1` })
              .from(fetchRequests)
              .where(and(eq(fetchRequests.jobId, fetchJobs.id), isNull(fetchRequests.cancelledAt))),
          ),
        ),
      );
    expect(orphans).toEqual([]);
    for (const o of others) o.client.close();
    t.client.close();
  });
});

describe("stored-bytes quota", () => {
  test("refused once usage is at or over it, naming it and its figures; cancelling frees it", async () => {
    // FETCHER__MAX_SIZE is what a request still being fetched holds until its size is known.
    const t = await setup({ QUOTA__MAX_BYTES: "1000", FETCHER__MAX_SIZE: "200" });
    const a = await t.created();
    await markReady(t.db, a, HASH_A, 600);
    await t.created(); // 600 stored: still room; this one holds 200 while it is fetched
    const b = await t.created(); // 600 + 200 held: still room
    await markReady(t.db, b, HASH_B, 500);
    const res = await t.post();
    expect(res.status).toBe(403);
    expect(await res.json()).toEqual({
      detail:
        "Stored bytes quota reached: 1300 of 1000 bytes (1100 stored, 200 held for requests still being fetched); cancel requests to free some (QUOTA__MAX_BYTES or keys set --max-bytes)",
    });
    expect(t.refused).toEqual(["bytes"]);
    await t.cancel(b);
    await t.created();
    t.client.close();
  });

  test("a burst of POSTs before any is ready cannot pass it: each holds FETCHER__MAX_SIZE until its size is known", async () => {
    const t = await setup({ QUOTA__MAX_BYTES: "1000", FETCHER__MAX_SIZE: "300" });
    for (let i = 0; i < 4; i++) await t.created(); // 0, 300, 600, 900 held: each still under 1000
    const res = await t.post();
    expect(res.status).toBe(403);
    expect(((await res.json()) as { detail: string }).detail).toStartWith(
      "Stored bytes quota reached: 1200 of 1000 bytes (0 stored, 1200 held for requests still being fetched)",
    );
    t.client.close();
  });
});

describe("GET /v1/usage", () => {
  test("matches created, ready and cancelled requests, each content hash counted once", async () => {
    const t = await setup({ QUOTA__MAX_ACTIVE: "0" });
    const ids = [];
    for (let i = 0; i < 6; i++) ids.push(await t.created());
    await markReady(t.db, ids[0]!, HASH_A, 1000);
    await markReady(t.db, ids[1]!, HASH_A, 1000); // same bytes, stored once
    await markReady(t.db, ids[2]!, HASH_B, 250);
    await markReady(t.db, ids[3]!, "c".repeat(64), 4000);
    await t.cancel(ids[3]!); // ready, then cancelled: not stored for this tenant any more
    await t.cancel(ids[4]!); // queued, then cancelled: not active
    await t.created(OTHER); // another tenant's request counts only for it
    const { status, body } = await t.usage();
    expect(status).toBe(200);
    expect(body).toEqual({
      tenant: expect.stringMatching(/^token:[0-9a-f]{16}$/),
      active_requests: 1,
      max_active_requests: null,
      stored_bytes: 1250,
      max_stored_bytes: null,
    });
    t.client.close();
  });

  test("callers without an API key get the defaults: 100 active, unlimited bytes", async () => {
    const t = await setup();
    await t.created();
    expect((await t.usage()).body).toMatchObject({
      active_requests: 1,
      max_active_requests: 100,
      stored_bytes: 0,
      max_stored_bytes: null,
    });
    t.client.close();
  });

  test("a key's own limits override the defaults (0 = unlimited) for the POST and the usage", async () => {
    const t = await setup({ QUOTA__MAX_ACTIVE: "1", QUOTA__MAX_BYTES: "5000" });
    const now = Date.now();
    const roomy = await createApiKey(t.db, { name: "roomy", now, maxActive: 3, maxBytes: 0 });
    const plain = await createApiKey(t.db, { name: "plain", now });
    for (let i = 0; i < 3; i++) await t.created(roomy.key);
    const res = await t.post(roomy.key);
    expect(res.status).toBe(403);
    expect(((await res.json()) as { detail: string }).detail).toContain("3 of 3");
    expect((await t.usage(roomy.key)).body).toMatchObject({
      tenant: `key:${roomy.id}`,
      active_requests: 3,
      max_active_requests: 3,
      max_stored_bytes: null,
    });
    expect((await t.usage(plain.key)).body).toMatchObject({ max_active_requests: 1, max_stored_bytes: 5000 });
    t.client.close();
  });

  test("admins may ask for another tenant; others may not", async () => {
    const t = await setup();
    const owner = await createApiKey(t.db, { name: "owner", now: Date.now(), maxActive: 7 });
    const admin = await createApiKey(t.db, { name: "ops", now: Date.now(), scopes: ["admin"] });
    await t.created(owner.key);
    await t.created(owner.key);
    const tenant = `key:${owner.id}`;
    const seen = await t.usage(admin.key, `?tenant=${encodeURIComponent(tenant)}`);
    expect(seen).toEqual({
      status: 200,
      body: { tenant, active_requests: 2, max_active_requests: 7, stored_bytes: 0, max_stored_bytes: null },
    });
    const nosy = await t.usage(TOKEN, `?tenant=${encodeURIComponent(tenant)}`);
    expect(nosy.status).toBe(403);
    t.client.close();
  });
});
