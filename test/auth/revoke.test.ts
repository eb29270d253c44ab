/**
 * Revoking an API key cancels, in the same transaction, every live request that key created,
 * exactly as DELETE cancels one; a request the API accepted with the key after it was revoked (the
 * key cache's window) is cancelled as it is created. Real libSQL file, real service functions.
 */
import { describe, expect, test } from "bun:test";
import { eq } from "drizzle-orm";
import { createApiKey, revokeApiKey } from "../../src/auth/keys";
import { fetchJobs, webhookDeliveries } from "../../src/db/schema";
import { claimJobs } from "../../src/jobs/queue";
import { createRequest, getRequest } from "../../src/requests/service";
import { manualClock, tempDatabase } from "../support/db";

const request = (url: string, apiKeyId: string | null, extra: { callbackUrl?: string } = {}) => ({
  url,
  method: "GET",
  headers: null,
  body: null,
  ttl: 0,
  userId: "team",
  clientIp: null,
  requestId: null,
  maxAttempts: 3,
  apiKeyId,
  ...extra,
});

async function setup() {
  const t = await tempDatabase();
  const clock = manualClock(Date.now());
  const a = await createApiKey(t.db, { name: "laptop", tenant: "team", now: clock.now() });
  const b = await createApiKey(t.db, { name: "server", tenant: "team", now: clock.now() });
  const job = async (requestId: string) => {
    const view = await getRequest(t.db, requestId, clock.now());
    const [row] = await t.db
      .select({ status: fetchJobs.status, cancelRequested: fetchJobs.cancelRequested })
      .from(fetchJobs)
      .where(eq(fetchJobs.id, view!.jobId));
    return row;
  };
  return { ...t, clock, a, b, job };
}

describe("revoking an API key", () => {
  test("cancels the key's live requests as DELETE does and says how many; other keys' requests and shared jobs live on", async () => {
    const { db, client, clock, a, b, job } = await setup();
    // running: claimed by a node before the revoke
    const running = await createRequest(db, clock, request("http://o.test/running", a.id));
    expect((await claimJobs(db, clock, { nodeName: "n", limit: 1, leaseMs: 60_000 })).length).toBe(1);
    const alone = await createRequest(
      db,
      clock,
      request("http://o.test/alone", a.id, { callbackUrl: "http://hook.test/" }),
    );
    const shared = await createRequest(db, clock, request("http://o.test/shared", a.id));
    const sharedByB = await createRequest(db, clock, request("http://o.test/shared", b.id));
    expect(sharedByB.jobId).toBe(shared.jobId); // one fetch in flight for both
    const other = await createRequest(db, clock, request("http://o.test/other", b.id));

    clock.advance(1000);
    expect(await revokeApiKey(db, a.id, clock.now())).toEqual({ outcome: "revoked", cancelledRequests: 3 });

    for (const r of [running, alone, shared])
      expect((await getRequest(db, r.id, clock.now()))!.status).toBe("cancelled");
    expect(await job(alone.id)).toEqual({ status: "cancelled", cancelRequested: true });
    // its node sees cancel_requested at the next heartbeat and aborts the fetch
    expect(await job(running.id)).toEqual({ status: "fetching", cancelRequested: true });
    // b's request still needs the shared fetch
    expect(await job(shared.id)).toEqual({ status: "queued", cancelRequested: false });
    expect((await getRequest(db, sharedByB.id, clock.now()))!.status).toBe("queued");
    expect((await getRequest(db, other.id, clock.now()))!.status).toBe("queued");
    const events = await db
      .select({ type: webhookDeliveries.eventType })
      .from(webhookDeliveries)
      .where(eq(webhookDeliveries.requestId, alone.id));
    expect(events).toEqual([{ type: "request.cancelled" }]);

    clock.advance(1000);
    expect(await revokeApiKey(db, a.id, clock.now())).toEqual({
      outcome: "already revoked",
      cancelledRequests: 0,
    });
    expect(await revokeApiKey(db, "0123456789abcdef", clock.now())).toEqual({
      outcome: "missing",
      cancelledRequests: 0,
    });
    client.close();
  });

  test("a request accepted with a key revoked meanwhile (the key cache's window) is cancelled as it is created", async () => {
    const { db, client, clock, a, job } = await setup();
    await revokeApiKey(db, a.id, clock.now());
    const late = await createRequest(
      db,
      clock,
      request("http://o.test/late", a.id, { callbackUrl: "http://hook.test/" }),
    );
    expect(late.status).toBe("cancelled");
    expect(await job(late.id)).toEqual({ status: "cancelled", cancelRequested: true });
    const events = await db
      .select({ type: webhookDeliveries.eventType })
      .from(webhookDeliveries)
      .where(eq(webhookDeliveries.requestId, late.id));
    expect(events).toEqual([{ type: "request.cancelled" }]);
    // nothing for a node to fetch
    expect(await claimJobs(db, clock, { nodeName: "n", limit: 5, leaseMs: 60_000 })).toEqual([]);
    client.close();
  });
});
