/**
 * JWT bearer tokens: pinned algorithms, issuer and audience, exp and sub required; `sub` names the
 * tenant. A JWKS served by a local Bun.serve proves key rotation by kid without a restart.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { exportJWK, generateKeyPair, type JWK, SignJWT } from "jose";
import { type AuthApp, authApp, BASE, bearer, createBody, T0 } from "./helpers";

const SECRET = "s".repeat(16) + "0123456789abcdef0123"; // 36 characters
const ISS = "https://auth.example.test/";
const AUD = "proxytorrent";
const nowS = Math.floor(T0 / 1000);

function hs256(
  claims: Record<string, unknown>,
  opts: { secret?: string; alg?: string; exp?: number | null } = {},
) {
  let jwt = new SignJWT({ scope: undefined, ...claims })
    .setProtectedHeader({ alg: opts.alg ?? "HS256" })
    .setIssuedAt(nowS);
  if (opts.exp !== null) jwt = jwt.setExpirationTime(opts.exp ?? nowS + 600);
  return jwt.sign(new TextEncoder().encode(opts.secret ?? SECRET));
}

const claims = (sub = "alice", extra: Record<string, unknown> = {}) => ({
  iss: ISS,
  aud: AUD,
  sub,
  ...extra,
});

const b64url = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");

describe("HS256", () => {
  let t: AuthApp;
  beforeAll(async () => {
    t = await authApp({
      SECURITY__JWT_SECRET: SECRET,
      SECURITY__JWT_ISSUER: ISS,
      SECURITY__JWT_AUDIENCE: AUD,
      RATE_LIMIT__AUTH_FAILURES_PER_IP_MINUTE: "1000",
    });
  });
  afterAll(() => t.close());

  const post = async (token: string) =>
    t.app.request(`${BASE}/v1/requests`, bearer(token, { method: "POST", body: createBody() }));

  test("a valid token creates a request owned by jwt:<iss>:<sub>, invisible to another subject", async () => {
    const res = await post(await hs256(claims("alice")));
    expect(res.status).toBe(201);
    const { id } = (await res.json()) as { id: string };
    const row = await t.client.execute({
      sql: "SELECT user_id FROM fetch_requests WHERE id = ?",
      args: [id],
    });
    expect(row.rows[0]!.user_id).toBe(`jwt:${ISS}:alice`);
    const mine = await t.app.request(`${BASE}/v1/requests/${id}`, bearer(await hs256(claims("alice"))));
    expect(mine.status).toBe(200);
    const theirs = await t.app.request(`${BASE}/v1/requests/${id}`, bearer(await hs256(claims("bob"))));
    expect(theirs.status).toBe(404);
  });

  test.each([
    ["wrong audience", () => hs256(claims("alice", { aud: "someone-else" }))],
    ["wrong issuer", () => hs256(claims("alice", { iss: "https://evil.example.test/" }))],
    ["expired", () => hs256(claims(), { exp: nowS - 3600 })],
    ["without exp", () => hs256(claims(), { exp: null })],
    ["without sub", () => hs256({ iss: ISS, aud: AUD })],
    ["signed with another key", () => hs256(claims(), { secret: "x".repeat(40) })],
    ["an algorithm not pinned (HS512)", () => hs256(claims(), { alg: "HS512" })],
    [
      "alg none",
      async () => `${b64url({ alg: "none", typ: "JWT" })}.${b64url({ ...claims(), exp: nowS + 600 })}.`,
    ],
    [
      "alg none with a signature part",
      async () => `${b64url({ alg: "none" })}.${b64url({ ...claims(), exp: nowS + 600 })}.c2ln`,
    ],
    ["not yet valid (nbf)", () => hs256(claims("alice", { nbf: nowS + 3600 }))],
  ])("refused: %s", async (_, make) => {
    const res = await post(await make());
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual({ detail: "Invalid or missing authentication" });
  });

  test("the scope claim picks scopes; a token naming none of ours gets the defaults", async () => {
    const readOnly = await hs256(claims("carol", { scope: "openid requests:read" }));
    const res = await post(readOnly);
    expect(res.status).toBe(403);
    expect(await res.json()).toEqual({ detail: "Missing scope: requests:create" });
    expect((await post(await hs256(claims("carol", { scope: "openid profile" })))).status).toBe(201);
    expect((await post(await hs256(claims("carol", { scp: ["requests:create"] })))).status).toBe(201);
  });

  test("an admin-scoped token sees other subjects' requests", async () => {
    const { id } = (await (await post(await hs256(claims("dave")))).json()) as { id: string };
    const admin = await hs256(claims("root", { scope: "admin" }));
    expect((await t.app.request(`${BASE}/v1/requests/${id}`, bearer(admin))).status).toBe(200);
  });
});

describe("JWKS (asymmetric keys from a local endpoint) and key rotation", () => {
  let t: AuthApp;
  let server: ReturnType<typeof Bun.serve>;
  let published: JWK[] = [];
  let fetches = 0;
  const keys: Record<string, CryptoKeyPair> = {};

  async function addKey(kid: string) {
    keys[kid] = await generateKeyPair("ES256", { extractable: true });
    return { ...(await exportJWK(keys[kid].publicKey)), kid, alg: "ES256", use: "sig" } as JWK;
  }

  const es256 = (kid: string, sub = "erin", key = keys[kid]!.privateKey) =>
    new SignJWT({})
      .setProtectedHeader({ alg: "ES256", kid })
      .setIssuer(ISS)
      .setAudience(AUD)
      .setSubject(sub)
      .setIssuedAt(nowS)
      .setExpirationTime(nowS + 600)
      .sign(key);

  beforeAll(async () => {
    published = [await addKey("old")];
    server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch() {
        fetches++;
        return Response.json({ keys: published });
      },
    });
    t = await authApp({
      SECURITY__JWKS_URL: `http://127.0.0.1:${server.port}/.well-known/jwks.json`,
      SECURITY__JWT_ISSUER: ISS,
      SECURITY__JWT_AUDIENCE: AUD,
      SECURITY__JWKS_COOLDOWN_SECONDS: "0",
      RATE_LIMIT__AUTH_FAILURES_PER_IP_MINUTE: "1000",
    });
  });
  afterAll(() => {
    t.close();
    server.stop(true);
  });

  const post = (token: string) =>
    t.app.request(`${BASE}/v1/requests`, bearer(token, { method: "POST", body: createBody() }));

  test("a token signed with the published key is accepted", async () => {
    expect((await post(await es256("old"))).status).toBe(201);
    expect(fetches).toBe(1);
  });

  test("one JWKS cache per app: /v1/webhooks uses the set /v1/requests fetched", async () => {
    const res = await t.app.request(`${BASE}/v1/webhooks`, bearer(await es256("old")));
    expect(res.status).toBe(200);
    expect(fetches).toBe(1);
  });

  test("after rotation, a token with the new kid is accepted without a restart (JWKS fetched again)", async () => {
    published = [await addKey("new")];
    expect((await post(await es256("new"))).status).toBe(201);
    expect(fetches).toBe(2);
    // The old key is gone from the set: its tokens are refused now.
    expect((await post(await es256("old"))).status).toBe(401);
  });

  test("a token signed by a key not in the set, under a published kid, is refused", async () => {
    const stranger = await generateKeyPair("ES256");
    expect((await post(await es256("new", "mallory", stranger.privateKey))).status).toBe(401);
  });

  test("an HS256 token (algorithm confusion with the public key) is refused", async () => {
    const jwk = published[0]!;
    const forged = await new SignJWT({})
      .setProtectedHeader({ alg: "HS256", kid: "new" })
      .setIssuer(ISS)
      .setAudience(AUD)
      .setSubject("mallory")
      .setExpirationTime(nowS + 600)
      .sign(new TextEncoder().encode(JSON.stringify(jwk)));
    expect((await post(forged)).status).toBe(401);
  });
});
