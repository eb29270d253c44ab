/** Auth settings: bad or incomplete JWT, proxy and legacy settings stop start-up, naming the variable. */
import { describe, expect, test } from "bun:test";
import { ConfigError, loadConfig } from "../../src/config";
import { authApp, BASE, createBody } from "./helpers";

function problems(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems.map((p) => p.variable);
    throw e;
  }
  return [];
}

const SECRET = "0123456789abcdef0123456789abcdef";

describe("auth configuration", () => {
  test("defaults: auth on, no JWT, no trusted proxies, a 300 s signature window, the original's limits", () => {
    const c = loadConfig({});
    expect(c.security.authEnabled).toBe(true);
    expect(c.security.jwt).toBeNull();
    expect(c.security.trustedProxies).toEqual([]);
    expect(c.security.signatureWindowSeconds).toBe(300);
    expect(c.rateLimit).toEqual({
      enabled: true,
      perMinute: 60,
      perHour: 1000,
      perIpMinute: 100,
      authFailuresPerIpMinute: 30,
    });
  });

  test("JWT: issuer and audience are required, algorithms default per key type", () => {
    expect(problems({ SECURITY__JWT_SECRET: SECRET })).toEqual([
      "SECURITY__JWT_ISSUER",
      "SECURITY__JWT_AUDIENCE",
    ]);
    const hs = loadConfig({
      SECURITY__JWT_SECRET: SECRET,
      SECURITY__JWT_ISSUER: "i",
      SECURITY__JWT_AUDIENCE: "a,b",
    });
    expect(hs.security.jwt).toMatchObject({ issuer: "i", audience: ["a", "b"], algorithms: ["HS256"] });
    const jwks = loadConfig({
      SECURITY__JWKS_URL: "https://idp.example.com/jwks.json",
      SECURITY__JWT_ISSUER: "i",
      SECURITY__JWT_AUDIENCE: "a",
    });
    expect(jwks.security.jwt?.algorithms).toEqual(["RS256", "ES256"]);
  });

  test("JWT: refused combinations", () => {
    const base = { SECURITY__JWT_ISSUER: "i", SECURITY__JWT_AUDIENCE: "a" };
    expect(problems({ ...base, SECURITY__JWT_SECRET: "short" })).toEqual(["SECURITY__JWT_SECRET"]);
    expect(
      problems({ ...base, SECURITY__JWT_SECRET: SECRET, SECURITY__JWKS_URL: "https://x.test/j" }),
    ).toEqual(["SECURITY__JWKS_URL"]);
    expect(problems({ ...base, SECURITY__JWKS_URL: "http://idp.example.com/jwks.json" })).toEqual([
      "SECURITY__JWKS_URL",
    ]);
    expect(problems({ ...base, SECURITY__JWKS_URL: "http://127.0.0.1:9/jwks.json" })).toEqual([]);
    expect(problems({ ...base, SECURITY__JWT_SECRET: SECRET, SECURITY__JWT_ALGORITHMS: "RS256" })).toEqual([
      "SECURITY__JWT_ALGORITHMS",
    ]);
    expect(
      problems({ ...base, SECURITY__JWKS_URL: "https://x.test/j", SECURITY__JWT_ALGORITHMS: "none" }),
    ).toEqual(["SECURITY__JWT_ALGORITHMS"]);
    expect(problems({ ...base, SECURITY__JWT_SECRET: SECRET, SECURITY__JWT_DEFAULT_SCOPES: "root" })).toEqual(
      ["SECURITY__JWT_DEFAULT_SCOPES"],
    );
    expect(problems(base)).toEqual(["SECURITY__JWT_ISSUER", "SECURITY__JWT_AUDIENCE"]);
  });

  test("trusted proxies must be addresses or CIDRs; the legacy switch needs its secret", () => {
    expect(
      loadConfig({ SECURITY__TRUSTED_PROXIES: "127.0.0.1, 10.0.0.0/8, ::1, fd00::/8" }).security
        .trustedProxies,
    ).toHaveLength(4);
    expect(problems({ SECURITY__TRUSTED_PROXIES: "10.0.0.0/33" })).toEqual(["SECURITY__TRUSTED_PROXIES"]);
    expect(problems({ SECURITY__TRUSTED_PROXIES: "proxy.local" })).toEqual(["SECURITY__TRUSTED_PROXIES"]);
    expect(problems({ SECURITY__LEGACY_BODY_HMAC: "true" })).toEqual(["SECURITY__HMAC_SECRET"]);
  });

  test("the JWT secret is not echoed when it is rejected", () => {
    try {
      loadConfig({
        SECURITY__JWT_SECRET: "tiny-secret",
        SECURITY__JWT_ISSUER: "i",
        SECURITY__JWT_AUDIENCE: "a",
      });
      throw new Error("expected a ConfigError");
    } catch (e) {
      expect((e as Error).message).not.toContain("tiny-secret");
    }
  });
});

describe("SECURITY__AUTH_ENABLED=false", () => {
  test("anyone may call; requests have no owner; only the per-IP limit applies", async () => {
    const t = await authApp({ SECURITY__AUTH_ENABLED: "false", RATE_LIMIT__REQUESTS_PER_IP_MINUTE: "2" });
    try {
      const post = () =>
        t.app.request(`${BASE}/v1/requests`, {
          method: "POST",
          body: createBody(),
          headers: { "content-type": "application/json" },
        });
      const res = await post();
      expect(res.status).toBe(201);
      expect(res.headers.get("x-ratelimit-limit")).toBe("2");
      const { id } = (await res.json()) as { id: string };
      expect((await t.app.request(`${BASE}/v1/requests/${id}`)).status).toBe(200);
      expect((await post()).status).toBe(201);
      expect(await (await post()).json()).toEqual({
        detail: "Rate limit exceeded: too many requests from IP",
      });
    } finally {
      t.close();
    }
  });
});
