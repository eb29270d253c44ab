/**
 * The original's client flow (X-Signature = hex HMAC-SHA256 of the raw body; GETs sign "") works
 * only with SECURITY__LEGACY_BODY_HMAC=true, and even then never opens another tenant's requests.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { hmacSha256, toHex } from "../../src/auth/crypto";
import { type AuthApp, authApp, BASE, bearer } from "./helpers";

const SECRET = "change-me-in-production";
const sig = async (body: string) => toHex(await hmacSha256(SECRET, body));

/** What examples/client.py does: POST signs json.dumps(payload), GET and DELETE sign "". */
async function legacyFlow(t: AuthApp) {
  const payload = JSON.stringify({ url: "http://example.test/legacy", method: "GET", ttl: 3600 });
  const created = await t.app.request(`${BASE}/v1/requests`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-signature": await sig(payload) },
    body: payload,
  });
  const get = (id: string, suffix = "", method = "GET") =>
    sig("").then((s) =>
      t.app.request(`${BASE}/v1/requests/${id}${suffix}`, { method, headers: { "x-signature": s } }),
    );
  return { created, get };
}

describe("with SECURITY__LEGACY_BODY_HMAC=true", () => {
  let t: AuthApp;
  beforeAll(async () => {
    t = await authApp({ SECURITY__LEGACY_BODY_HMAC: "true", SECURITY__HMAC_SECRET: SECRET });
  });
  afterAll(() => t.close());

  test("the old client creates, polls, asks for the magnet and cancels", async () => {
    const { created, get } = await legacyFlow(t);
    expect(created.status).toBe(201);
    const { id } = (await created.json()) as { id: string };
    expect((await get(id)).status).toBe(200);
    expect(await (await get(id, "/magnet")).json()).toEqual({ detail: "Request not ready (status: queued)" });
    expect((await get(id, "", "DELETE")).status).toBe(204);
  });

  test("a wrong or upper-case signature is refused", async () => {
    const body = JSON.stringify({ url: "http://example.test/" });
    for (const s of ["0".repeat(64), (await sig(body)).toUpperCase(), "é"]) {
      const res = await t.app.request(`${BASE}/v1/requests`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-signature": s },
        body,
      });
      expect(res.status).toBe(401);
    }
  });

  test('HMAC(secret, "") is no longer a master key: other tenants\' requests stay 404', async () => {
    const key = await t.key("someone");
    const res = await t.app.request(
      `${BASE}/v1/requests`,
      bearer(key.key, { method: "POST", body: JSON.stringify({ url: "http://example.test/private" }) }),
    );
    const { id } = (await res.json()) as { id: string };
    const s = await sig("");
    for (const [method, suffix] of [
      ["GET", ""],
      ["GET", "/torrent"],
      ["GET", "/magnet"],
      ["DELETE", ""],
    ]) {
      const r = await t.app.request(`${BASE}/v1/requests/${id}${suffix}`, {
        method,
        headers: { "x-signature": s },
      });
      expect(r.status).toBe(404);
    }
  });
});

describe("with the switch off (the default)", () => {
  let t: AuthApp;
  beforeAll(async () => {
    t = await authApp({ SECURITY__HMAC_SECRET: SECRET });
  });
  afterAll(() => t.close());

  test("the same old client gets 401 everywhere", async () => {
    const { created, get } = await legacyFlow(t);
    expect(created.status).toBe(401);
    expect(await created.json()).toEqual({ detail: "Invalid or missing authentication" });
    expect((await get("anything")).status).toBe(401);
    expect((await get("anything", "", "DELETE")).status).toBe(401);
  });
});
