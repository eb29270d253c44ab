/**
 * Which passkeys are live (src/torrents/access.ts), against a real libSQL file: a request's passkey
 * opens its content only while the request is not cancelled, its job is ready, the API key that
 * made it is not revoked, and TORRENT__PASSKEY_TTL_SECONDS has not passed.
 */
import { beforeEach, describe, expect, test } from "bun:test";
import { eq } from "drizzle-orm";
import { createApiKey, revokeApiKey } from "../../src/auth/keys";
import type { Database } from "../../src/db";
import { fetchJobs, fetchRequests } from "../../src/db/schema";
import { cancelRequest, createRequest } from "../../src/requests/service";
import { liveGrantHashes, ownerPayload, passkeyGrant, requestPasskey } from "../../src/torrents/access";
import { announceUrl, magnetFor, webSeedUrl } from "../../src/torrents/links";
import { passkeyHash } from "../../src/torrents/passkey";
import { manualClock, requestInput, tempDatabase } from "../support/db";

const INFOHASH = "ab".repeat(20);
const CONTENT = "cd".repeat(32);
let db: Database;
let clock: ReturnType<typeof manualClock>;

beforeEach(async () => {
  db = (await tempDatabase()).db;
  clock = manualClock();
});

/** A request whose job a node made ready (as completeJob leaves it). */
async function readyRequest(opts: { url?: string; userId?: string; apiKeyId?: string } = {}) {
  const r = await createRequest(
    db,
    clock,
    requestInput({
      url: opts.url ?? "http://o.test/a",
      userId: opts.userId ?? "tenant-a",
      apiKeyId: opts.apiKeyId ?? null,
    }),
  );
  await db
    .update(fetchJobs)
    .set({
      status: "ready",
      seeding: true,
      infohash: INFOHASH,
      contentHash: CONTENT,
      seedNode: "node-1",
      completedAt: clock.now(),
    })
    .where(eq(fetchJobs.id, r.jobId));
  return { ...r, passkey: await requestPasskey(db, r.id) };
}

describe("passkeyGrant", () => {
  test("a live request's passkey opens its content; a wrong or malformed one opens nothing", async () => {
    const r = await readyRequest();
    expect(r.passkey).toMatch(/^[0-9a-f]{32}$/);
    const grant = await passkeyGrant(db, r.passkey, clock.now(), 0);
    expect(grant).toEqual({
      requestId: r.id,
      passkeyHash: await passkeyHash(r.passkey),
      infohash: INFOHASH,
      contentHash: CONTENT,
      seedNode: "node-1",
    });
    expect(await passkeyGrant(db, "f".repeat(32), clock.now(), 0)).toBeNull();
    expect(await passkeyGrant(db, r.passkey.toUpperCase(), clock.now(), 0)).toBeNull();
    expect(await passkeyGrant(db, `${r.passkey}'--`, clock.now(), 0)).toBeNull();
  });

  test("each request has its own passkey, even two requests of one job", async () => {
    const a = await readyRequest();
    const b = await createRequest(
      db,
      clock,
      requestInput({
        url: "http://o.test/a",
        ttl: 3600,
        userId: "tenant-a",
      }),
    );
    expect(b.jobId).toBe(a.jobId); // answered from the ready result
    const bKey = await requestPasskey(db, b.id);
    expect(bKey).not.toBe(a.passkey);
    await cancelRequest(db, clock, a.id);
    expect(await passkeyGrant(db, a.passkey, clock.now(), 0)).toBeNull();
    expect((await passkeyGrant(db, bKey, clock.now(), 0))?.requestId).toBe(b.id);
  });

  test("a cancelled request, or a job that is not ready, opens nothing", async () => {
    const r = await readyRequest();
    await db.update(fetchJobs).set({ status: "seeding" }).where(eq(fetchJobs.id, r.jobId));
    expect(await passkeyGrant(db, r.passkey, clock.now(), 0)).toBeNull();
    await db.update(fetchJobs).set({ status: "ready" }).where(eq(fetchJobs.id, r.jobId));
    expect(await passkeyGrant(db, r.passkey, clock.now(), 0)).not.toBeNull();
    await cancelRequest(db, clock, r.id);
    expect(await passkeyGrant(db, r.passkey, clock.now(), 0)).toBeNull();
  });

  test("revoking the API key that made the request kills its passkey, not another key's", async () => {
    const k1 = await createApiKey(db, { name: "one", tenant: "tenant-a", now: clock.now() });
    const k2 = await createApiKey(db, { name: "two", tenant: "tenant-a", now: clock.now() });
    const r1 = await readyRequest({ url: "http://o.test/1", apiKeyId: k1.id });
    const r2 = await readyRequest({ url: "http://o.test/2", apiKeyId: k2.id });
    await revokeApiKey(db, k1.id, clock.now());
    expect(await passkeyGrant(db, r1.passkey, clock.now(), 0)).toBeNull();
    expect(await passkeyGrant(db, r2.passkey, clock.now(), 0)).not.toBeNull();
    const live = await liveGrantHashes(
      db,
      [await passkeyHash(r1.passkey), await passkeyHash(r2.passkey)],
      clock.now(),
      0,
    );
    expect([...live]).toEqual([await passkeyHash(r2.passkey)]);
  });

  test("with TORRENT__PASSKEY_TTL_SECONDS, a passkey stops working that long after the request became ready", async () => {
    const r = await readyRequest();
    clock.advance(59_999);
    expect(await passkeyGrant(db, r.passkey, clock.now(), 60)).not.toBeNull();
    clock.advance(1);
    expect(await passkeyGrant(db, r.passkey, clock.now(), 60)).toBeNull();
    expect(await liveGrantHashes(db, [await passkeyHash(r.passkey)], clock.now(), 60)).toEqual(new Set());
    // 0 = passkeys never expire.
    expect(await passkeyGrant(db, r.passkey, clock.now() + 10 * 365 * 86_400_000, 0)).not.toBeNull();
  });
});

describe("requestPasskey", () => {
  test("a request written before passkeys existed gets one on first use, the same every time after", async () => {
    const r = await readyRequest();
    await db
      .update(fetchRequests)
      .set({ passkey: null, passkeyHash: null })
      .where(eq(fetchRequests.id, r.id));
    const [a, b] = await Promise.all([requestPasskey(db, r.id), requestPasskey(db, r.id)]);
    expect(a).toMatch(/^[0-9a-f]{32}$/);
    expect(b).toBe(a);
    expect(await requestPasskey(db, r.id)).toBe(a);
    expect((await passkeyGrant(db, a, clock.now(), 0))?.requestId).toBe(r.id);
  });
});

describe("ownerPayload", () => {
  test("a webhook's magnet_link carries the request's passkey; open access sends it as stored", async () => {
    const r = await readyRequest();
    const magnet = magnetFor({
      infohash: INFOHASH,
      name: "a",
      size: 1,
      trackers: [announceUrl("http://n.test")],
      webSeeds: [webSeedUrl("http://n.test", CONTENT)],
    });
    const payload = JSON.stringify({ type: "request.ready", data: { id: r.id, magnet_link: magnet } });
    const sent = JSON.parse(await ownerPayload(db, "passkey", r.id, payload));
    expect(sent.data.magnet_link).toContain(
      encodeURIComponent(`http://n.test/announce?passkey=${r.passkey}`),
    );
    expect(sent.data.magnet_link).toContain(encodeURIComponent(`http://n.test/webseed/${r.passkey}/`));
    expect(await ownerPayload(db, "open", r.id, payload)).toBe(payload);
    const cancelled = JSON.stringify({ type: "request.cancelled", data: { id: r.id, magnet_link: null } });
    expect(await ownerPayload(db, "passkey", r.id, cancelled)).toBe(cancelled);
    // A delivery that outlived its request (history purged): sent as stored, no error.
    await db.delete(fetchRequests).where(eq(fetchRequests.id, r.id));
    expect(await ownerPayload(db, "passkey", r.id, payload)).toBe(payload);
  });
});
