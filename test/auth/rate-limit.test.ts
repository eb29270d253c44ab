/**
 * Rate limits live in the database: per tenant per minute and hour, per client IP per minute, and
 * failed authentications per IP. Headers tell the caller where it stands; 429 carries the original's
 * messages and Retry-After. Two processes sharing one database file share the counters.
 */
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { resolve } from "node:path";
import { createClientIpResolver, ipBucket } from "../../src/auth/client-ip";
import { type AuthApp, authApp, BASE, bearer, createBody, T0 } from "./helpers";

// bun 1.4 ignores bunfig.toml's [test] timeout; two tests spawn child bun processes.
setDefaultTimeout(60_000);

let t: AuthApp | undefined;
afterEach(() => {
  t?.close();
  t = undefined;
});

const post = (app: AuthApp, token: string, init: RequestInit = {}) =>
  app.app.request(`${BASE}/v1/requests`, bearer(token, { method: "POST", body: createBody(), ...init }));

const limits = (res: Response) => ({
  limit: res.headers.get("x-ratelimit-limit"),
  remaining: res.headers.get("x-ratelimit-remaining"),
  reset: res.headers.get("x-ratelimit-reset"),
});

describe("per tenant", () => {
  test("N per minute pass with counting-down headers; N+1 is 429 with Retry-After; the next minute passes", async () => {
    t = await authApp({ RATE_LIMIT__REQUESTS_PER_MINUTE: "3" });
    const { key } = await t.key();
    for (const remaining of ["2", "1", "0"]) {
      const res = await post(t, key);
      expect(res.status).toBe(201);
      // T0 is one second into its minute: 59 s until the window ends.
      expect(limits(res)).toEqual({ limit: "3", remaining, reset: "59" });
    }
    const refused = await post(t, key);
    expect(refused.status).toBe(429);
    expect(await refused.json()).toEqual({ detail: "Rate limit exceeded: too many requests per minute" });
    expect(refused.headers.get("retry-after")).toBe("59");
    expect(limits(refused)).toEqual({ limit: "3", remaining: "0", reset: "59" });
    // Another tenant is not affected.
    expect((await post(t, (await t.key("other")).key)).status).toBe(201);
    t.clock.advance(59_000);
    expect((await post(t, key)).status).toBe(201);
  });

  test("the hour limit has its own message and a Retry-After up to the end of the hour", async () => {
    t = await authApp({ RATE_LIMIT__REQUESTS_PER_HOUR: "2" });
    const { key } = await t.key();
    expect((await post(t, key)).status).toBe(201);
    expect((await post(t, key)).status).toBe(201);
    t.clock.advance(60_000);
    const refused = await post(t, key);
    expect(refused.status).toBe(429);
    expect(await refused.json()).toEqual({ detail: "Rate limit exceeded: too many requests per hour" });
    expect(refused.headers.get("retry-after")).toBe(String(3600 - 61));
  });

  test("invalid input (422) and reads use no quota", async () => {
    t = await authApp({ RATE_LIMIT__REQUESTS_PER_MINUTE: "1" });
    const { key } = await t.key();
    for (let i = 0; i < 3; i++) expect((await post(t, key, { body: "{oops" })).status).toBe(422);
    for (let i = 0; i < 3; i++)
      expect((await t.app.request(`${BASE}/v1/requests/x`, bearer(key))).status).toBe(404);
    expect((await post(t, key)).status).toBe(201);
  });
});

describe("per client IP", () => {
  test("tenants behind one IP share its limit; a refusal by the IP limit costs the tenant nothing", async () => {
    t = await authApp({ RATE_LIMIT__REQUESTS_PER_MINUTE: "3", RATE_LIMIT__REQUESTS_PER_IP_MINUTE: "2" });
    const a = (await t.key("a")).key;
    const b = (await t.key("b")).key;
    t.setPeer("203.0.113.7");
    expect((await post(t, a)).status).toBe(201);
    expect((await post(t, b)).status).toBe(201);
    const refused = await post(t, a);
    expect(refused.status).toBe(429);
    expect(await refused.json()).toEqual({ detail: "Rate limit exceeded: too many requests from IP" });
    expect(refused.headers.get("retry-after")).toBe("59");
    // From another address, tenant a still has 2 of its 3: the refused attempt was given back.
    t.setPeer("198.51.100.1");
    expect((await post(t, a)).status).toBe(201);
    expect((await post(t, a)).status).toBe(201);
    expect(await (await post(t, a)).json()).toEqual({
      detail: "Rate limit exceeded: too many requests per minute",
    });
  });

  test("a forged X-Forwarded-For is ignored unless the peer is a trusted proxy", async () => {
    t = await authApp({ RATE_LIMIT__REQUESTS_PER_IP_MINUTE: "2" });
    const { key } = await t.key();
    t.setPeer("203.0.113.9");
    for (const xff of ["1.1.1.1", "2.2.2.2"])
      expect((await post(t, key, { headers: { "x-forwarded-for": xff } })).status).toBe(201);
    expect((await post(t, key, { headers: { "x-forwarded-for": "3.3.3.3" } })).status).toBe(429);
  });

  test("behind a trusted proxy the client is the rightmost untrusted X-Forwarded-For entry, and is stored", async () => {
    t = await authApp({ RATE_LIMIT__REQUESTS_PER_IP_MINUTE: "1", SECURITY__TRUSTED_PROXIES: "10.0.0.0/8" });
    const { key } = await t.key();
    t.setPeer("10.1.2.3");
    const res = await post(t, key, { headers: { "x-forwarded-for": "6.6.6.6, 198.51.100.20, 10.9.9.9" } });
    expect(res.status).toBe(201);
    const { id } = (await res.json()) as { id: string };
    const row = await t.client.execute({
      sql: "SELECT client_ip FROM fetch_requests WHERE id = ?",
      args: [id],
    });
    expect(row.rows[0]!.client_ip).toBe("198.51.100.20");
    // Changing the part the client controls does not make a new address.
    const spoofed = await post(t, key, { headers: { "x-forwarded-for": "7.7.7.7, 198.51.100.20" } });
    expect(spoofed.status).toBe(429);
    // A different real client behind the same proxy has its own budget.
    expect((await post(t, key, { headers: { "x-forwarded-for": "198.51.100.21" } })).status).toBe(201);
  });

  test("resolving the client address", () => {
    const none = createClientIpResolver([]);
    const h = (xff: string) => new Headers({ "x-forwarded-for": xff });
    expect(none("203.0.113.1", h("1.2.3.4"))).toBe("203.0.113.1");
    expect(none("::ffff:127.0.0.1", h(""))).toBe("127.0.0.1");
    expect(none(null, h("1.2.3.4"))).toBeNull();
    const trusted = createClientIpResolver(["127.0.0.1", "10.0.0.0/8", "fd00::/8"]);
    expect(trusted("127.0.0.1", h("198.51.100.1"))).toBe("198.51.100.1");
    expect(trusted("127.0.0.1", h("9.9.9.9, 198.51.100.1, 10.0.0.2"))).toBe("198.51.100.1");
    expect(trusted("fd00::1", h("2001:db8::5"))).toBe("2001:db8::5");
    expect(trusted("127.0.0.1", h("not-an-ip"))).toBe("127.0.0.1");
    expect(trusted("127.0.0.1", h(""))).toBe("127.0.0.1");
    expect(trusted("203.0.113.1", h("198.51.100.1"))).toBe("203.0.113.1");
    expect(ipBucket("2001:db8:1:2:3:4:5:6")).toBe("2001:db8:1:2::/64");
    expect(ipBucket("2001:db8:1:2:ffff::1")).toBe("2001:db8:1:2::/64");
    expect(ipBucket("192.0.2.1")).toBe("192.0.2.1");
  });
});

describe("failed authentications", () => {
  test("past the limit an IP gets 429 even with valid credentials, until the minute ends; others are unaffected", async () => {
    t = await authApp({ RATE_LIMIT__AUTH_FAILURES_PER_IP_MINUTE: "3" });
    const { key } = await t.key();
    t.setPeer("203.0.113.50");
    for (let i = 0; i < 3; i++) expect((await post(t, `wrong-${i}`)).status).toBe(401);
    const locked = await post(t, key);
    expect(locked.status).toBe(429);
    expect(await locked.json()).toEqual({
      detail: "Rate limit exceeded: too many failed authentication attempts from IP",
    });
    expect(locked.headers.get("retry-after")).toBe("59");
    t.setPeer("203.0.113.51");
    expect((await post(t, key)).status).toBe(201);
    t.setPeer("203.0.113.50");
    t.clock.advance(59_000);
    expect((await post(t, key)).status).toBe(201);
  });

  test("one lock-out per app: failures on /v1/webhooks lock the IP out of /v1/requests at once", async () => {
    t = await authApp({ RATE_LIMIT__AUTH_FAILURES_PER_IP_MINUTE: "2" });
    const { key } = await t.key();
    t.setPeer("203.0.113.60");
    // A success first: the IP is remembered as clean (for a second; the test clock stands still).
    expect((await t.app.request(`${BASE}/v1/requests/x`, bearer(key))).status).toBe(404);
    for (let i = 0; i < 2; i++)
      expect((await t.app.request(`${BASE}/v1/webhooks`, bearer(`wrong-${i}`))).status).toBe(401);
    expect((await t.app.request(`${BASE}/v1/requests/x`, bearer(key))).status).toBe(429);
  });

  test("successful requests do not count", async () => {
    t = await authApp({ RATE_LIMIT__AUTH_FAILURES_PER_IP_MINUTE: "1" });
    const { key } = await t.key();
    for (let i = 0; i < 5; i++)
      expect((await t.app.request(`${BASE}/v1/requests/x`, bearer(key))).status).toBe(404);
  });

  test("RATE_LIMIT__RATE_LIMIT_ENABLED=false turns every limit off", async () => {
    t = await authApp({
      RATE_LIMIT__RATE_LIMIT_ENABLED: "false",
      RATE_LIMIT__REQUESTS_PER_MINUTE: "1",
      RATE_LIMIT__AUTH_FAILURES_PER_IP_MINUTE: "1",
    });
    const { key } = await t.key();
    for (let i = 0; i < 3; i++) expect((await post(t, "wrong")).status).toBe(401);
    for (let i = 0; i < 3; i++) {
      const res = await post(t, key);
      expect(res.status).toBe(201);
      expect(res.headers.get("x-ratelimit-limit")).toBeNull();
    }
  });
});

describe("shared by every process", () => {
  const child = resolve(import.meta.dir, "fixtures/rate-limit-child.ts");

  async function race(env: Record<string, string>, runs: { token: string; peer: string; count: number }[]) {
    const procs = runs.map((r) =>
      Bun.spawn([process.execPath, child, String(r.count), r.token, r.peer, String(T0)], {
        env: { ...process.env, ...env, STORAGE__BASE_PATH: t!.dir },
        stdin: "pipe",
        stdout: "pipe",
        stderr: "inherit",
      }),
    );
    // Both processes are up before either sends: close their stdin together.
    for (const p of procs) p.stdin.end();
    const outputs = await Promise.all(procs.map((p) => new Response(p.stdout).text()));
    expect(await Promise.all(procs.map((p) => p.exited))).toEqual(procs.map(() => 0));
    return outputs.map((o) => JSON.parse(o.trim()) as number[]);
  }

  const tally = (statuses: number[]) => ({
    created: statuses.filter((s) => s === 201).length,
    limited: statuses.filter((s) => s === 429).length,
  });

  test("one tenant hammering from two processes gets exactly its per-minute limit", async () => {
    const env = { RATE_LIMIT__REQUESTS_PER_MINUTE: "25", RATE_LIMIT__REQUESTS_PER_IP_MINUTE: "1000" };
    t = await authApp(env);
    const { key } = await t.key();
    const results = await race(env, [
      { token: key, peer: "192.0.2.1", count: 40 },
      { token: key, peer: "192.0.2.2", count: 40 },
    ]);
    expect(tally(results.flat())).toEqual({ created: 25, limited: 55 });
    // (How the 25 split between the processes varies from run to run; only the total is fixed.)
    const rows = await t.client.execute("SELECT count(*) AS n FROM fetch_requests");
    expect(Number(rows.rows[0]!.n)).toBe(25);
  });

  test("two tenants behind one IP, in two processes, share the per-IP limit", async () => {
    const env = { RATE_LIMIT__REQUESTS_PER_MINUTE: "1000", RATE_LIMIT__REQUESTS_PER_IP_MINUTE: "30" };
    t = await authApp(env);
    const results = await race(env, [
      { token: (await t.key("a")).key, peer: "192.0.2.9", count: 40 },
      { token: (await t.key("b")).key, peer: "192.0.2.9", count: 40 },
    ]);
    expect(tally(results.flat())).toEqual({ created: 30, limited: 50 });
  });
});
