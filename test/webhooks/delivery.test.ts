/**
 * The outbox and the delivery loop over a real libSQL file, with real HTTP receivers on loopback,
 * checked with the reference `standardwebhooks` package. The clock is moved by hand, so retry
 * schedules are followed step by step without waiting (and without timing assertions).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { eq } from "drizzle-orm";
import { Webhook } from "standardwebhooks";
import { WebhookDeliverer } from "../../seeder/node/webhooks";
import { webhookAttempts, webhookDeliveries, webhookEndpoints } from "../../src/db/schema";
import { silentLogger } from "../../src/log";
import { cancelRequest } from "../../src/requests/service";
import { createEndpoint, rotateSecret } from "../../src/webhooks/endpoints";
import { claimDeliveries, recordAttempt } from "../../src/webhooks/outbox";
import { loopbackDialer, mapResolver, STAND_IN_PUBLIC } from "../fetcher/helpers";
import { type Receiver, startReceiver } from "./receiver";
import { CONTENT_HASH, INFOHASH, MAGNET, SECRET, setup } from "./support";

let rx: Receiver;
beforeAll(async () => {
  rx = await startReceiver();
});
afterAll(async () => {
  await rx.close();
});

/** Requests received since `from`, verified with the reference library: the parsed payloads. */
function verified(secret: string, from = 0) {
  const wh = new Webhook(secret);
  return rx.received.slice(from).map((r) => ({ ...r, payload: wh.verify(r.body, r.headers) as any }));
}

describe("events are written with the status change", () => {
  test("a job becoming ready writes request.ready for each live request's callback, once", async () => {
    const s = await setup();
    const a = await s.request({ callbackUrl: rx.url, requestId: "trace-a" });
    const b = await s.request({ callbackUrl: rx.url, requestId: "trace-b" });
    const quiet = await s.request({}); // no callback: no delivery
    const gone = await s.request({ callbackUrl: rx.url });
    await cancelRequest(s.db, s.clock, gone.id);
    expect(a.jobId).toBe(b.jobId);
    expect(quiet.jobId).toBe(a.jobId);
    const { outcome } = await s.finishNextJob();
    expect(outcome).toBe("ready");
    const rows = await s.deliveries();
    const ready = rows.filter((r) => r.eventType === "request.ready");
    expect(ready.map((r) => r.requestId).sort()).toEqual([a.id, b.id].sort());
    expect(rows.filter((r) => r.eventType === "request.cancelled").map((r) => r.requestId)).toEqual([
      gone.id,
    ]);
    const body = JSON.parse(ready.find((r) => r.requestId === a.id)!.payload);
    expect(body).toEqual({
      type: "request.ready",
      timestamp: expect.any(String),
      data: {
        id: a.id,
        status: "ready",
        infohash: INFOHASH,
        magnet_link: MAGNET,
        content_hash: CONTENT_HASH,
        content_size: 1234,
        url: "http://origin.test/file.txt",
        scan: null,
      },
    });
    expect(ready.find((r) => r.requestId === a.id)!.traceId).toBe("trace-a");
    s.client.close();
  });

  test("a node whose lease was lost writes no event: the fenced UPDATE and the INSERT go together", async () => {
    const s = await setup();
    await s.request({ callbackUrl: rx.url });
    const { completeJob, claimJobs } = await import("../../src/jobs/queue");
    const [job] = await claimJobs(s.db, s.clock, { nodeName: "a", limit: 1, leaseMs: 1000 });
    s.clock.advance(2000);
    const [again] = await claimJobs(s.db, s.clock, { nodeName: "b", limit: 1, leaseMs: 30_000 });
    expect(again!.id).toBe(job!.id);
    expect(await completeJob(s.db, s.clock, { id: job!.id, leaseToken: job!.leaseToken! }, "a")).toBeNull();
    expect(await s.deliveries()).toEqual([]);
    expect(await completeJob(s.db, s.clock, { id: again!.id, leaseToken: again!.leaseToken! }, "b")).toBe(
      "ready",
    );
    expect((await s.deliveries()).map((d) => d.eventType)).toEqual(["request.ready"]);
    s.client.close();
  });

  test("a request answered at once from a cached ready job also gets request.ready", async () => {
    const s = await setup();
    await s.request({});
    await s.finishNextJob();
    const cached = await s.request({ callbackUrl: rx.url });
    expect(cached.source).toBe("cache");
    expect(cached.status).toBe("ready");
    const rows = await s.deliveries(cached.id);
    expect(rows.map((r) => r.eventType)).toEqual(["request.ready"]);
    const from = rx.received.length;
    await s.deliverer.runDue();
    const [got] = verified(SECRET, from);
    expect(got!.payload.type).toBe("request.ready");
    expect(got!.payload.data).toMatchObject({
      id: cached.id,
      content_hash: CONTENT_HASH,
      magnet_link: MAGNET,
    });
    s.client.close();
  });

  test("cancel produces request.cancelled once; a second cancel adds nothing", async () => {
    const s = await setup();
    const r = await s.request({ callbackUrl: rx.url });
    expect(await cancelRequest(s.db, s.clock, r.id)).toBe(true);
    expect(await cancelRequest(s.db, s.clock, r.id)).toBe(true);
    const rows = await s.deliveries(r.id);
    expect(rows.map((x) => x.eventType)).toEqual(["request.cancelled"]);
    const from = rx.received.length;
    await s.deliverer.runDue();
    const [got] = verified(SECRET, from);
    expect(got!.payload).toMatchObject({
      type: "request.cancelled",
      data: { id: r.id, status: "cancelled" },
    });
    expect(got!.payload.data.magnet_link).toBeNull();
    s.client.close();
  });

  test("a job ending in error produces request.failed; a retried attempt produces nothing", async () => {
    const s = await setup();
    const r = await s.request({ callbackUrl: rx.url });
    const { claimJobs, failJob } = await import("../../src/jobs/queue");
    const [job] = await claimJobs(s.db, s.clock, { nodeName: "a", limit: 1, leaseMs: 30_000 });
    const retried = await failJob(
      s.db,
      s.clock,
      { id: job!.id, leaseToken: job!.leaseToken!, attempts: 1, maxAttempts: 3 },
      { code: "network", message: "reset", transient: true },
    );
    expect(retried).toBe("queued");
    expect(await s.deliveries(r.id)).toEqual([]);
    s.clock.advance(60_000);
    expect(await s.failNextJob()).toBe("error");
    const rows = await s.deliveries(r.id);
    expect(rows.map((x) => x.eventType)).toEqual(["request.failed"]);
    expect(JSON.parse(rows[0]!.payload).data.status).toBe("error");
    s.client.close();
  });
});

describe("delivery", () => {
  test("signed per Standard Webhooks, with X-Request-Id, verified by the reference library", async () => {
    const s = await setup();
    const r = await s.request({ callbackUrl: rx.url, requestId: "req-123" });
    await s.finishNextJob();
    const from = rx.received.length;
    expect(await s.deliverer.runDue()).toBe(1);
    const [got] = verified(SECRET, from);
    expect(got!.headers["webhook-id"]).toMatch(/^msg_[0-9a-f]{32}$/);
    expect(got!.headers["webhook-signature"]).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    expect(got!.headers["content-type"]).toBe("application/json");
    expect(got!.headers["x-request-id"]).toBe("req-123");
    expect(got!.payload.data.id).toBe(r.id);
    const [row] = await s.deliveries(r.id);
    expect(row!.status).toBe("delivered");
    expect(row!.id).toBe(got!.headers["webhook-id"]!);
    expect(() => new Webhook(`whsec_${btoa("x".repeat(32))}`).verify(got!.body, got!.headers)).toThrow();
    s.client.close();
  });

  test("a receiver failing with 500 three times still gets the event, always with one webhook-id", async () => {
    const s = await setup();
    const r = await s.request({ callbackUrl: rx.url });
    await s.finishNextJob();
    const from = rx.received.length;
    rx.script(500, 500, 500, 200);
    await s.deliverer.runDue();
    for (let i = 0; i < 3; i++) {
      // Not due before its delay…
      expect(await s.deliverer.runDue()).toBe(0);
      s.clock.advance(1000); // WEBHOOK__RETRY_DELAYS=1,1,1
      expect(await s.deliverer.runDue()).toBe(1);
    }
    const got = verified(SECRET, from);
    expect(got.length).toBe(4);
    expect(new Set(got.map((g) => g.headers["webhook-id"])).size).toBe(1);
    const [row] = await s.deliveries(r.id);
    expect(row!.status).toBe("delivered");
    const log = await s.db.select().from(webhookAttempts).where(eq(webhookAttempts.deliveryId, row!.id));
    expect(log.map((a) => [a.outcome, a.statusCode])).toEqual([
      ["retry", 500],
      ["retry", 500],
      ["retry", 500],
      ["delivered", 200],
    ]);
    s.client.close();
  });

  test("after the last retry the message fails, with the reason in the log", async () => {
    const s = await setup();
    const r = await s.request({ callbackUrl: rx.url });
    await s.finishNextJob();
    rx.script(503, 503, 503, 503);
    await s.deliverer.runDue();
    for (let i = 0; i < 3; i++) {
      s.clock.advance(1000);
      await s.deliverer.runDue();
    }
    s.clock.advance(3600_000);
    expect(await s.deliverer.runDue()).toBe(0);
    const [row] = await s.deliveries(r.id);
    expect(row!.status).toBe("failed");
    expect(row!.lastError).toContain("gave up after 4 attempts");
    s.client.close();
  });

  test("Retry-After is honoured: no attempt before the time the receiver asked for", async () => {
    const s = await setup();
    const r = await s.request({ callbackUrl: rx.url });
    await s.finishNextJob();
    const from = rx.received.length;
    rx.script({ status: 503, headers: { "Retry-After": "120" } }, 200);
    const t0 = s.clock.now();
    await s.deliverer.runDue();
    const [row] = await s.deliveries(r.id);
    expect(row!.status).toBe("pending");
    expect(row!.nextAttemptAt).toBe(t0 + 120_000);
    s.clock.advance(1000); // the schedule alone would retry now
    expect(await s.deliverer.runDue()).toBe(0);
    s.clock.advance(119_000);
    expect(await s.deliverer.runDue()).toBe(1);
    expect(rx.received.length - from).toBe(2);
    expect((await s.deliveries(r.id))[0]!.status).toBe("delivered");
    s.client.close();
  });

  test("410 Gone disables the endpoint: its pending messages fail and new events skip it", async () => {
    const s = await setup();
    const ep = await createEndpoint(s.db, s.clock, {
      tenant: "tenant-a",
      url: rx.url,
      description: null,
      events: null,
    });
    const first = await s.request({ url: "http://origin.test/one" });
    const second = await s.request({ url: "http://origin.test/two" });
    await s.finishNextJob();
    await s.finishNextJob();
    expect((await s.deliveries()).filter((d) => d.endpointId === ep.id).length).toBe(2);
    rx.script(410);
    const before = rx.received.length;
    // One at a time, so the second message is still pending when the 410 arrives.
    const one = new WebhookDeliverer({
      config: s.config,
      db: s.db,
      clock: s.clock,
      log: silentLogger,
      concurrency: 1,
    });
    expect(await one.runDue()).toBe(1);
    expect(rx.received.length - before).toBe(1);
    const [e] = await s.db.select().from(webhookEndpoints).where(eq(webhookEndpoints.id, ep.id));
    expect(e!.disabledAt).not.toBeNull();
    expect(e!.disabledReason).toContain("410");
    const rows = await s.deliveries();
    expect(rows.map((d) => d.status)).toEqual(["failed", "failed"]);
    expect(rows.map((d) => d.requestId).sort()).toEqual([first.id, second.id].sort());
    const third = await s.request({ url: "http://origin.test/three" });
    await s.finishNextJob();
    expect(await s.deliveries(third.id)).toEqual([]);
    s.client.close();
  });

  test("a 410 to a callback_url fails that message only", async () => {
    const s = await setup();
    const r = await s.request({ callbackUrl: rx.url });
    await s.finishNextJob();
    rx.script(410);
    await s.deliverer.runDue();
    const [row] = await s.deliveries(r.id);
    expect(row!.status).toBe("failed");
    expect(row!.lastStatusCode).toBe(410);
    s.client.close();
  });

  test("registered endpoints: tenant isolation, event filter, and both signatures during a rotation", async () => {
    const s = await setup();
    const all = await createEndpoint(s.db, s.clock, {
      tenant: "tenant-a",
      url: rx.url,
      description: null,
      events: null,
    });
    await createEndpoint(s.db, s.clock, {
      tenant: "tenant-a",
      url: rx.url,
      description: null,
      events: ["request.failed"],
    });
    await createEndpoint(s.db, s.clock, { tenant: "tenant-b", url: rx.url, description: null, events: null });
    const oldSecret = all.secret;
    const rotated = await rotateSecret(s.db, s.clock, all.id, { graceSeconds: 3600 });
    const r = await s.request({});
    await s.finishNextJob();
    const rows = await s.deliveries(r.id);
    expect(rows.map((d) => d.endpointId)).toEqual([all.id]);
    const from = rx.received.length;
    await s.deliverer.runDue();
    const got = rx.received.slice(from);
    expect(got.length).toBe(1);
    expect(got[0]!.headers["webhook-signature"]!.split(" ").length).toBe(2);
    // Receivers on either secret accept it.
    expect((new Webhook(rotated!.secret).verify(got[0]!.body, got[0]!.headers) as any).type).toBe(
      "request.ready",
    );
    expect((new Webhook(oldSecret).verify(got[0]!.body, got[0]!.headers) as any).type).toBe("request.ready");
    // After the grace period only the new secret signs.
    s.clock.advance(3600_000 + 1);
    const r2 = await s.request({ url: "http://origin.test/later" });
    await s.finishNextJob();
    await s.deliverer.runDue();
    const last = rx.received.at(-1)!;
    expect(JSON.parse(last.body).data.id).toBe(r2.id);
    expect(last.headers["webhook-signature"]!.split(" ").length).toBe(1);
    s.client.close();
  });
});

describe("leases", () => {
  test("two nodes claiming at once never get the same message; an expired lease is claimed again", async () => {
    const s = await setup();
    for (let i = 0; i < 12; i++) await s.request({ url: `http://origin.test/${i}`, callbackUrl: rx.url });
    for (let i = 0; i < 12; i++) await s.finishNextJob();
    const [a, b] = await Promise.all([
      claimDeliveries(s.db, s.clock, { nodeName: "a", limit: 8, leaseMs: 20_000 }),
      claimDeliveries(s.db, s.clock, { nodeName: "b", limit: 8, leaseMs: 20_000 }),
    ]);
    const ids = [...a!, ...b!].map((d) => d.id);
    expect(ids.length).toBe(12);
    expect(new Set(ids).size).toBe(12);
    expect(await claimDeliveries(s.db, s.clock, { nodeName: "c", limit: 20, leaseMs: 20_000 })).toEqual([]);

    // Node a "dies": after its lease runs out, node c takes its messages, with a new token.
    s.clock.advance(20_001);
    const taken = await claimDeliveries(s.db, s.clock, { nodeName: "c", limit: 20, leaseMs: 20_000 });
    expect(taken.length).toBe(12);
    const stale = a![0]!;
    const fresh = taken.find((d) => d.id === stale.id)!;
    expect(fresh.leaseToken).not.toBe(stale.leaseToken);
    expect(fresh.attempts).toBe(2);
    // The late node's outcome is refused by the token.
    expect(
      await recordAttempt(
        s.db,
        s.clock,
        { id: stale.id, leaseToken: stale.leaseToken! },
        {
          outcome: "delivered",
          statusCode: 200,
        },
      ),
    ).toBe(false);
    const log = await s.db.select().from(webhookAttempts).where(eq(webhookAttempts.deliveryId, stale.id));
    expect(log.map((l) => [l.outcome, l.nodeName])).toEqual([["abandoned", "a"]]);
    s.client.close();
  });

  test("stop() hands a message in flight back without counting the attempt", async () => {
    const s = await setup();
    const r = await s.request({ callbackUrl: rx.url });
    await s.finishNextJob();
    const live = new WebhookDeliverer({ config: s.config, db: s.db, clock: s.clock, log: silentLogger });
    const before = rx.received.length;
    rx.script("hold");
    live.start();
    await rx.waitFor(before + 1);
    await live.stop();
    const [row] = await s.deliveries(r.id);
    expect(row!.status).toBe("pending");
    expect(row!.attempts).toBe(0);
    expect(row!.leaseToken).toBeNull();
    s.client.close();
  });
});

describe("the egress guard applies to webhook URLs", () => {
  test("a name resolving to loopback is refused after resolution, before connecting", async () => {
    const dns = mapResolver({ "hooks.example.test": ["127.0.0.1"] });
    const dialer = loopbackDialer();
    const s = await setup(
      { EGRESS__ALLOW_PRIVATE_NETWORKS: "false" },
      { resolve: dns.resolve, dial: dialer.dial },
    );
    const r = await s.request({ callbackUrl: `http://hooks.example.test:${rx.port}/hook` });
    await s.finishNextJob();
    const before = rx.received.length;
    await s.deliverer.runDue();
    expect(dns.calls).toEqual(["hooks.example.test"]);
    expect(dialer.calls).toEqual([]);
    expect(rx.received.length).toBe(before);
    const [row] = await s.deliveries(r.id);
    expect(row!.status).toBe("failed");
    expect(row!.lastError).toContain("Refused: hooks.example.test resolves to");
    s.client.close();
  });

  test("private addresses (literal or resolved) are never dialled", async () => {
    const dns = mapResolver({ "intranet.example.test": ["10.0.0.5"] });
    const dialer = loopbackDialer();
    const s = await setup(
      { EGRESS__ALLOW_PRIVATE_NETWORKS: "false" },
      { resolve: dns.resolve, dial: dialer.dial },
    );
    const a = await s.request({
      url: "http://origin.test/a",
      callbackUrl: "http://intranet.example.test/hook",
    });
    const b = await s.request({ url: "http://origin.test/b", callbackUrl: "http://192.168.1.20/hook" });
    const c = await s.request({ url: "http://origin.test/c", callbackUrl: "http://169.254.169.254/latest" });
    for (let i = 0; i < 3; i++) await s.finishNextJob();
    await s.deliverer.runDue();
    expect(dialer.calls).toEqual([]);
    for (const r of [a, b, c]) expect((await s.deliveries(r.id))[0]!.status).toBe("failed");
    s.client.close();
  });

  test("a public address is delivered under the same strict policy (routed to loopback by the test dialler)", async () => {
    const dns = mapResolver({ "hooks.public.test": [STAND_IN_PUBLIC] });
    const dialer = loopbackDialer({ [STAND_IN_PUBLIC]: rx.port });
    const s = await setup(
      { EGRESS__ALLOW_PRIVATE_NETWORKS: "false" },
      { resolve: dns.resolve, dial: dialer.dial },
    );
    const r = await s.request({ callbackUrl: "http://hooks.public.test/hook" });
    await s.finishNextJob();
    const from = rx.received.length;
    await s.deliverer.runDue();
    expect(dialer.calls).toEqual([{ host: STAND_IN_PUBLIC, port: 80 }]);
    const [got] = verified(SECRET, from);
    expect(got!.headers.host).toBe("hooks.public.test");
    expect(got!.payload.data.id).toBe(r.id);
    s.client.close();
  });

  test("with EGRESS__ALLOW_PRIVATE_NETWORKS=true a loopback receiver is delivered", async () => {
    const s = await setup({ EGRESS__ALLOW_PRIVATE_NETWORKS: "true" });
    const r = await s.request({ callbackUrl: rx.url });
    await s.finishNextJob();
    await s.deliverer.runDue();
    expect((await s.deliveries(r.id))[0]!.status).toBe("delivered");
    s.client.close();
  });
});

test("a deleted endpoint's pending messages fail without being sent", async () => {
  const s = await setup();
  const ep = await createEndpoint(s.db, s.clock, {
    tenant: "tenant-a",
    url: rx.url,
    description: null,
    events: null,
  });
  await s.request({});
  await s.finishNextJob();
  const { deleteEndpoint } = await import("../../src/webhooks/endpoints");
  expect(await deleteEndpoint(s.db, s.clock, ep.id)).toBe(true);
  const before = rx.received.length;
  expect(await s.deliverer.runDue()).toBe(0);
  expect(rx.received.length).toBe(before);
  const rows = await s.db.select().from(webhookDeliveries);
  expect(rows.map((d) => [d.status, d.lastError])).toEqual([["failed", "Endpoint deleted"]]);
  s.client.close();
});
