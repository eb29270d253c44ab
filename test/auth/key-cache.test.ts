/**
 * Verified API keys are remembered for SECURITY__API_KEY_CACHE_SECONDS (src/auth/key-cache.ts):
 * a revoked key stops working within that bound, at once with 0, and a remembered key never
 * lets a different key (same id, other secret) in. The clock is the test's: no waiting.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { revokeApiKey } from "../../src/auth/keys";
import { type AuthApp, authApp, BASE, bearer, createBody } from "./helpers";

let t: AuthApp | null = null;
afterEach(() => {
  t?.close();
  t = null;
});

async function setup(cacheSeconds: string) {
  t = await authApp({ SECURITY__API_KEY_CACHE_SECONDS: cacheSeconds });
  const key = await t.key("poller");
  const created = await t.app.request(
    `${BASE}/v1/requests`,
    bearer(key.key, { method: "POST", body: createBody() }),
  );
  expect(created.status).toBe(201);
  const { id } = (await created.json()) as { id: string };
  const app = t;
  const status = async (token = key.key) =>
    (await app.app.request(`${BASE}/v1/requests/${id}`, bearer(token))).status;
  return { t: app, key, status };
}

describe("API key verification cache", () => {
  test("a revoked key keeps working at most SECURITY__API_KEY_CACHE_SECONDS, then gets 401", async () => {
    const { t, key, status } = await setup("5");
    expect(await status()).toBe(200);
    expect((await revokeApiKey(t.db, key.id, t.clock.now())).outcome).toBe("revoked");
    // Within the bound this process still believes its verdict of a moment ago...
    t.clock.advance(4_999);
    expect(await status()).toBe(200);
    // ...and not a millisecond longer.
    t.clock.advance(1);
    expect(await status()).toBe(401);
    t.clock.advance(60_000);
    expect(await status()).toBe(401);
  });

  test("SECURITY__API_KEY_CACHE_SECONDS=0: revocation takes effect on the next request", async () => {
    const { t, key, status } = await setup("0");
    expect(await status()).toBe(200);
    await revokeApiKey(t.db, key.id, t.clock.now());
    expect(await status()).toBe(401);
  });

  test("a cached key does not vouch for another secret under the same key id", async () => {
    const { key, status } = await setup("5");
    expect(await status()).toBe(200);
    const forged = key.key.slice(0, -4) + (key.key.endsWith("0000") ? "1111" : "0000");
    expect(forged).not.toBe(key.key);
    expect(await status(forged)).toBe(401);
    expect(await status()).toBe(200);
  });

  test("a key revoked before it was ever verified is refused at once", async () => {
    const { t, status } = await setup("5");
    const other = await t.key("never used");
    await revokeApiKey(t.db, other.id, t.clock.now());
    expect(await status(other.key)).toBe(401);
  });
});
