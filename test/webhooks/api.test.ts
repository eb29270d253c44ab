/**
 * The webhook API in-process over a real libSQL file: endpoints per tenant, refusal of private
 * destinations at create time, callback_url on POST /v1/requests, the delivery log and redelivery.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Webhook } from "standardwebhooks";
import { testApp } from "../support/app";
import { type Receiver, startReceiver } from "./receiver";
import { SECRET, setup } from "./support";

const TOKEN_A = "token-a-0123456789";
const TOKEN_B = "token-b-0123456789";

type Setup = Awaited<ReturnType<typeof setup>>;

function appFor(s: Setup) {
  const app = testApp({ db: s.db, config: s.config, clock: s.clock });
  return (path: string, init: { method?: string; body?: unknown; token?: string } = {}) =>
    app.request(path, {
      method: init.method ?? "GET",
      headers: {
        authorization: `Bearer ${init.token ?? TOKEN_A}`,
        ...(init.body !== undefined ? { "content-type": "application/json" } : {}),
      },
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
    });
}

let rx: Receiver;
let strict: Setup;
let open: Setup;
let strictCall: ReturnType<typeof appFor>;
let call: ReturnType<typeof appFor>;

beforeAll(async () => {
  rx = await startReceiver();
  const tokens = { SECURITY__BEARER_TOKENS: `${TOKEN_A},${TOKEN_B}` };
  strict = await setup({ ...tokens, EGRESS__ALLOW_PRIVATE_NETWORKS: "false" });
  open = await setup({ ...tokens, EGRESS__ALLOW_PRIVATE_NETWORKS: "true" });
  strictCall = appFor(strict);
  call = appFor(open);
});
afterAll(async () => {
  strict.client.close();
  open.client.close();
  await rx.close();
});

describe("refusing private destinations at create time", () => {
  test.each([
    "http://127.0.0.1:9/hook",
    "http://10.0.0.5/hook",
    "http://[::1]/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://2130706433/hook",
    "http://localhost/hook",
  ])("callback_url %s is 422 when private networks are not allowed", async (url) => {
    const res = await strictCall("/v1/requests", {
      method: "POST",
      body: { url: "http://origin.test/", callback_url: url },
    });
    expect(res.status).toBe(422);
    const body = (await res.json()) as { detail: { loc: string[]; msg: string }[] };
    expect(body.detail[0]!.loc).toEqual(["body", "callback_url"]);
    expect(body.detail[0]!.msg).toContain("Refused");
    const ep = await strictCall("/v1/webhooks", { method: "POST", body: { url } });
    expect(ep.status).toBe(422);
  });

  test("a public name is accepted (it is resolved and checked again at delivery)", async () => {
    const res = await strictCall("/v1/requests", {
      method: "POST",
      body: { url: "http://origin.test/", callback_url: "https://hooks.example.com/in" },
    });
    expect(res.status).toBe(201);
  });

  test("with EGRESS__ALLOW_PRIVATE_NETWORKS=true a loopback callback_url is accepted", async () => {
    const res = await call("/v1/requests", {
      method: "POST",
      body: { url: "http://origin.test/x", callback_url: rx.url },
    });
    expect(res.status).toBe(201);
  });

  test("callback_url must be http(s) without credentials", async () => {
    for (const bad of ["ftp://example.com/x", "http://user:pw@example.com/", "not a url"]) {
      const res = await call("/v1/requests", {
        method: "POST",
        body: { url: "http://origin.test/", callback_url: bad },
      });
      expect(res.status).toBe(422);
    }
  });

  test("without WEBHOOK__SECRET a callback_url is refused (it could not be signed)", async () => {
    const s = await setup({ SECURITY__BEARER_TOKENS: TOKEN_A, WEBHOOK__SECRET: "" });
    const res = await appFor(s)("/v1/requests", {
      method: "POST",
      body: { url: "http://origin.test/", callback_url: rx.url },
    });
    expect(res.status).toBe(422);
    expect(JSON.stringify(await res.json())).toContain("WEBHOOK__SECRET");
    s.client.close();
  });
});

describe("/v1/webhooks", () => {
  test("create, read, list, filter, rotate, delete; another tenant sees none of it", async () => {
    const created = await call("/v1/webhooks", {
      method: "POST",
      body: { url: rx.url, events: ["request.ready", "request.ready"], description: "mine" },
    });
    expect(created.status).toBe(201);
    const ep = (await created.json()) as Record<string, any>;
    expect(ep.id).toMatch(/^ep_[0-9a-f]{32}$/);
    expect(ep.secret).toMatch(/^whsec_/);
    expect(ep.events).toEqual(["request.ready"]);
    expect(ep.enabled).toBe(true);

    const got = (await (await call(`/v1/webhooks/${ep.id}`)).json()) as Record<string, any>;
    expect(got.secret).toBeUndefined();
    expect(got.url).toBe(rx.url);
    const list = (await (await call("/v1/webhooks")).json()) as { endpoints: { id: string }[] };
    expect(list.endpoints.map((e) => e.id)).toContain(ep.id);

    expect((await call(`/v1/webhooks/${ep.id}`, { token: TOKEN_B })).status).toBe(404);
    expect((await call(`/v1/webhooks/${ep.id}`, { method: "DELETE", token: TOKEN_B })).status).toBe(404);
    const listB = (await (await call("/v1/webhooks", { token: TOKEN_B })).json()) as { endpoints: unknown[] };
    expect(listB.endpoints).toEqual([]);

    const patched = await call(`/v1/webhooks/${ep.id}`, {
      method: "PATCH",
      body: { events: null, enabled: false },
    });
    expect(patched.status).toBe(200);
    expect(await patched.json()).toMatchObject({ events: null, enabled: false });
    const bad = await call(`/v1/webhooks/${ep.id}`, { method: "PATCH", body: { events: ["request.done"] } });
    expect(bad.status).toBe(422);

    const rotated = await call(`/v1/webhooks/${ep.id}/rotate-secret`, {
      method: "POST",
      body: { previous_secret_expires_in: 600 },
    });
    expect(rotated.status).toBe(200);
    const r = (await rotated.json()) as Record<string, any>;
    expect(r.secret).toMatch(/^whsec_/);
    expect(r.secret).not.toBe(ep.secret);
    expect(r.previous_secret_expires_at).not.toBeNull();

    expect((await call(`/v1/webhooks/${ep.id}`, { method: "DELETE" })).status).toBe(204);
    expect((await call(`/v1/webhooks/${ep.id}`)).status).toBe(404);
  });

  test("the OpenAPI document describes the webhook routes and callback_url", async () => {
    const doc = (await (await call("/openapi.json")).json()) as { paths: Record<string, unknown> };
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining([
        "/v1/webhooks",
        "/v1/webhooks/{id}",
        "/v1/webhooks/{id}/rotate-secret",
        "/v1/webhooks/{id}/deliveries",
        "/v1/webhooks/deliveries/{id}/redeliver",
        "/v1/requests/{id}/webhooks",
      ]),
    );
    expect(JSON.stringify(doc.paths["/v1/requests"])).toContain("callback_url");
  });
});

describe("the delivery log and redelivery", () => {
  test("per request and per endpoint, with attempts; redeliver resends with the same webhook-id", async () => {
    // Settle what earlier tests left queued.
    await open.finishAll();
    await open.deliverer.runDue();
    const ep = (await (
      await call("/v1/webhooks", { method: "POST", body: { url: rx.url } })
    ).json()) as Record<string, any>;
    const res = await call("/v1/requests", {
      method: "POST",
      body: { url: "http://origin.test/logged", callback_url: rx.url },
    });
    const { id } = (await res.json()) as { id: string };
    const requestId = res.headers.get("x-request-id");
    await open.finishAll();
    rx.script(500);
    const from = rx.received.length;
    await open.deliverer.runDue(); // one 500 (to whichever was first), one 204
    open.clock.advance(1000);
    await open.deliverer.runDue();

    const log = (await (await call(`/v1/requests/${id}/webhooks`)).json()) as { deliveries: any[] };
    expect(log.deliveries.length).toBe(2);
    const byTarget = Object.fromEntries(log.deliveries.map((d) => [d.endpoint_id ?? "callback", d]));
    expect(byTarget.callback.url).toBe(rx.url);
    expect(byTarget[ep.id].url).toBe(rx.url);
    for (const d of log.deliveries) {
      expect(d.status).toBe("delivered");
      expect(d.event).toBe("request.ready");
      expect(d.payload.data.id).toBe(id);
      expect(d.log.at(-1).outcome).toBe("delivered");
    }
    const outcomes = log.deliveries.flatMap((d) => d.log.map((a: any) => a.status_code)).sort();
    expect(outcomes).toEqual([204, 204, 500]);
    // X-Request-Id of the POST travels with the message.
    const sent = rx.received.slice(from);
    expect(sent.every((r) => r.headers["x-request-id"] === requestId)).toBe(true);
    // The callback one verifies with WEBHOOK__SECRET, the endpoint one with its own secret.
    const cb = sent.find((r) => r.headers["webhook-id"] === byTarget.callback.id)!;
    expect((new Webhook(SECRET).verify(cb.body, cb.headers) as any).data.id).toBe(id);
    const viaEp = sent.find((r) => r.headers["webhook-id"] === byTarget[ep.id].id)!;
    expect((new Webhook(ep.secret).verify(viaEp.body, viaEp.headers) as any).data.id).toBe(id);

    const epLog = (await (await call(`/v1/webhooks/${ep.id}/deliveries`)).json()) as { deliveries: any[] };
    expect(epLog.deliveries.map((d) => d.id)).toContain(byTarget[ep.id].id);
    expect((await call(`/v1/requests/${id}/webhooks`, { token: TOKEN_B })).status).toBe(404);
    expect((await call(`/v1/webhooks/deliveries/${byTarget.callback.id}`, { token: TOKEN_B })).status).toBe(
      404,
    );

    // Redeliver the callback message: same id, fresh signature.
    const again = await call(`/v1/webhooks/deliveries/${byTarget.callback.id}/redeliver`, { method: "POST" });
    expect(again.status).toBe(202);
    expect(((await again.json()) as any).status).toBe("pending");
    const before = rx.received.length;
    await open.deliverer.runDue();
    const resent = rx.received.slice(before);
    expect(resent.length).toBe(1);
    expect(resent[0]!.headers["webhook-id"]).toBe(byTarget.callback.id);
    expect(resent[0]!.body).toBe(cb.body);
    const one = (await (await call(`/v1/webhooks/deliveries/${byTarget.callback.id}`)).json()) as any;
    expect(one.status).toBe("delivered");
    expect(one.log.filter((a: any) => a.outcome === "delivered").length).toBe(2);
  });
});
