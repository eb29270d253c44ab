/**
 * Tenancy: every request has an owner; another tenant's request is 404 on every route whichever
 * way either side authenticates; admin sees all; scopes gate each route.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { SignJWT } from "jose";
import { signatureHeaders } from "../../src/auth/sign";
import { type AuthApp, authApp, BASE, bearer, createBody, T0 } from "./helpers";

const TOKEN = "static-token-0123456789";
const SECRET = "jwt-secret-0123456789-0123456789-abcd";
const ISS = "https://issuer.test/";

let t: AuthApp;
type Caller = (path: string, init?: RequestInit) => Promise<Response>;
const callers: Record<string, Caller> = {};

const jwt = (sub: string) =>
  new SignJWT({})
    .setProtectedHeader({ alg: "HS256" })
    .setIssuer(ISS)
    .setAudience("pt")
    .setSubject(sub)
    .setExpirationTime(Math.floor(T0 / 1000) + 600)
    .sign(new TextEncoder().encode(SECRET));

const viaBearer =
  (token: string): Caller =>
  async (path, init = {}) =>
    t.app.request(`${BASE}${path}`, bearer(token, init));

const viaSignature =
  (key: string): Caller =>
  async (path, init = {}) => {
    const url = `${BASE}${path}`;
    const method = init.method ?? "GET";
    const body = (init.body as string | undefined) ?? undefined;
    const headers = await signatureHeaders(
      key,
      { method, url, body },
      { created: Math.floor(t.clock.now() / 1000) },
    );
    if (body) headers["content-type"] = "application/json";
    return t.app.request(url, { method, headers, body });
  };

beforeAll(async () => {
  t = await authApp({
    SECURITY__BEARER_TOKENS: TOKEN,
    SECURITY__JWT_SECRET: SECRET,
    SECURITY__JWT_ISSUER: ISS,
    SECURITY__JWT_AUDIENCE: "pt",
    RATE_LIMIT__REQUESTS_PER_MINUTE: "1000",
    RATE_LIMIT__REQUESTS_PER_IP_MINUTE: "1000",
  });
  const a = await t.key("a");
  const b = await t.key("b");
  callers["key A (bearer)"] = viaBearer(a.key);
  callers["key A (signed)"] = viaSignature(a.key);
  callers["key B (bearer)"] = viaBearer(b.key);
  callers["key B (signed)"] = viaSignature(b.key);
  callers["static token"] = viaBearer(TOKEN);
  callers["jwt alice"] = viaBearer(await jwt("alice"));
  callers["jwt bob"] = viaBearer(await jwt("bob"));
});
afterAll(() => t.close());

async function createAs(who: string): Promise<string> {
  const res = await callers[who]!("/v1/requests", {
    method: "POST",
    body: createBody(`http://example.test/${who}`),
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as { id: string }).id;
}

const ROUTES = [
  ["GET", ""],
  ["GET", "/torrent"],
  ["GET", "/magnet"],
  ["DELETE", ""],
] as const;

describe("another tenant's request does not exist for you", () => {
  const pairs = [
    ["key A (bearer)", "key B (bearer)"],
    ["key A (bearer)", "key B (signed)"],
    ["key A (signed)", "static token"],
    ["static token", "key A (bearer)"],
    ["jwt alice", "jwt bob"],
    ["jwt alice", "key A (signed)"],
  ] as const;
  test.each(pairs)(
    "owner %s, intruder %s: 404 on status, torrent, magnet and delete",
    async (owner, intruder) => {
      const id = await createAs(owner);
      for (const [method, suffix] of ROUTES) {
        const res = await callers[intruder]!(`/v1/requests/${id}${suffix}`, { method });
        expect(res.status).toBe(404);
        expect(await res.json()).toEqual({ detail: `Request ${id} not found` });
      }
      // Still there and still queued for its owner: the intruder's DELETE changed nothing.
      const mine = await callers[owner]!(`/v1/requests/${id}`);
      expect(mine.status).toBe(200);
      expect(((await mine.json()) as { status: string }).status).toBe("queued");
      expect((await callers[owner]!(`/v1/requests/${id}/torrent`)).status).toBe(400);
    },
  );

  test("the same key used as bearer and for signing is one tenant", async () => {
    const id = await createAs("key A (signed)");
    expect((await callers["key A (bearer)"]!(`/v1/requests/${id}`)).status).toBe(200);
  });
});

describe("admin and scopes", () => {
  test("an admin key reads and cancels anyone's request", async () => {
    const admin = viaBearer((await t.key("ops", ["admin"])).key);
    const id = await createAs("jwt bob");
    expect((await admin(`/v1/requests/${id}`)).status).toBe(200);
    expect((await admin(`/v1/requests/${id}`, { method: "DELETE" })).status).toBe(204);
    const s = (await (await callers["jwt bob"]!(`/v1/requests/${id}`)).json()) as { status: string };
    expect(s.status).toBe("cancelled");
  });

  test("each route needs its scope: read-only cannot create or cancel, create-only cannot read", async () => {
    const reader = viaBearer((await t.key("reader", ["requests:read"])).key);
    const creator = viaSignature((await t.key("creator", ["requests:create"])).key);
    const res = await reader("/v1/requests", { method: "POST", body: createBody() });
    expect(res.status).toBe(403);
    expect(await res.json()).toEqual({ detail: "Missing scope: requests:create" });
    const made = await creator("/v1/requests", { method: "POST", body: createBody() });
    expect(made.status).toBe(201);
    const { id } = (await made.json()) as { id: string };
    expect((await creator(`/v1/requests/${id}`)).status).toBe(403);
    expect((await creator(`/v1/requests/${id}`, { method: "DELETE" })).status).toBe(403);
    expect((await reader(`/v1/requests/${id}`, { method: "DELETE" })).status).toBe(403);
  });

  test("a key made with --tenant of an old key sees the old key's requests (rotation)", async () => {
    const old = await t.key("old");
    const id = (
      (await (await viaBearer(old.key)("/v1/requests", { method: "POST", body: createBody() })).json()) as {
        id: string;
      }
    ).id;
    const successor = await t.key("new", undefined, old.tenant);
    expect((await viaBearer(successor.key)(`/v1/requests/${id}`)).status).toBe(200);
  });

  test("the tenant id never contains a static token's characters", async () => {
    const id = await createAs("static token");
    const row = await t.client.execute({
      sql: "SELECT user_id FROM fetch_requests WHERE id = ?",
      args: [id],
    });
    const owner = String(row.rows[0]!.user_id);
    expect(owner).toMatch(/^token:[0-9a-f]{16}$/);
    expect(owner).not.toContain(TOKEN.slice(0, 6));
  });
});
