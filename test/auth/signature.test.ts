/**
 * RFC 9421 signed requests: a signature binds method, path, query, body, time, nonce and key, and
 * can be used once. Every tampered, stale or replayed request is 401 and changes nothing.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { openDatabase } from "../../seeder/process/database";
import { hmacSha256, sha256, toHex } from "../../src/auth/crypto";
import { revokeApiKey } from "../../src/auth/keys";
import { signatureHeaders } from "../../src/auth/sign";
import { testApp } from "../support/app";
import { type AuthApp, authApp, BASE, createBody } from "./helpers";

let t: AuthApp;
let KEY: string;

beforeAll(async () => {
  // Many refusals from one address in one (frozen) minute: lift the failed-auth limit here.
  t = await authApp({ RATE_LIMIT__AUTH_FAILURES_PER_IP_MINUTE: "1000" });
  KEY = (await t.key("signer")).key;
});
afterAll(() => t.close());

interface Signed {
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: string;
}

async function sign(
  method: string,
  path: string,
  body?: string,
  opts: { created?: number; nonce?: string } = {},
) {
  const url = `${BASE}${path}`;
  const created = opts.created ?? Math.floor(t.clock.now() / 1000);
  const headers = await signatureHeaders(KEY, { method, url, body }, { created, nonce: opts.nonce });
  if (body) headers["content-type"] = "application/json";
  return { method, url, headers, body } as Signed;
}

const send = (s: Signed, app = t.app) =>
  app.request(s.url, { method: s.method, headers: s.headers, body: s.body ?? undefined });

async function created(): Promise<string> {
  const res = await send(await sign("POST", "/v1/requests", createBody()));
  expect(res.status).toBe(201);
  return ((await res.json()) as { id: string }).id;
}

async function detail(res: Response) {
  return ((await res.json()) as { detail: string }).detail;
}

describe("a signed request", () => {
  test("creates, reads and cancels, as the key's tenant", async () => {
    const id = await created();
    const status = await send(await sign("GET", `/v1/requests/${id}`));
    expect(status.status).toBe(200);
    expect(((await status.json()) as { status: string }).status).toBe("queued");
    expect((await send(await sign("GET", `/v1/requests/${id}/magnet`))).status).toBe(400);
    expect((await send(await sign("DELETE", `/v1/requests/${id}`))).status).toBe(204);
  });

  test("a query string is signed too", async () => {
    const id = await created();
    expect((await send(await sign("GET", `/v1/requests/${id}?verbose=1`))).status).toBe(200);
  });

  test("the helper's HMAC keyed by SHA-256(key) equals HMAC keyed by the key (so openssl -hmac works)", async () => {
    expect(KEY.length).toBeGreaterThan(64);
    const a = await hmacSha256(KEY, "base");
    const b = await hmacSha256(await sha256(KEY), "base");
    expect(toHex(a)).toBe(toHex(b));
  });
});

describe("refused signatures", () => {
  test("a replay of the very same request is refused, and does nothing", async () => {
    const first = await sign("POST", "/v1/requests", createBody("http://example.test/replay"));
    expect((await send(first)).status).toBe(201);
    const again = await send(first);
    expect(again.status).toBe(401);
    expect(again.headers.get("www-authenticate")).toBe("Bearer");
    expect(await detail(again)).toBe("Invalid signature: nonce already used (replayed request)");
  });

  test("a replay against another process sharing the database is refused", async () => {
    const other = await openDatabase(t.config);
    const app2 = testApp({ db: other.db, config: t.config, clock: t.clock, startedAt: t.clock.now() });
    const s = await sign("POST", "/v1/requests", createBody("http://example.test/two-apps"));
    expect((await send(s)).status).toBe(201);
    expect((await send(s, app2)).status).toBe(401);
    other.client.close();
  });

  test("a new signature reusing a nonce is refused", async () => {
    const a = await sign("POST", "/v1/requests", createBody("http://example.test/n1"), {
      nonce: "same-nonce-1",
    });
    expect((await send(a)).status).toBe(201);
    const b = await sign("POST", "/v1/requests", createBody("http://example.test/n2"), {
      nonce: "same-nonce-1",
      created: Math.floor(t.clock.now() / 1000) + 5,
    });
    const res = await send(b);
    expect(res.status).toBe(401);
    expect(await detail(res)).toContain("nonce already used");
  });

  test("tampered method: a signed GET sent as DELETE does not cancel", async () => {
    const id = await created();
    const s = await sign("GET", `/v1/requests/${id}`);
    expect((await send({ ...s, method: "DELETE" })).status).toBe(401);
    const status = (await (await send(await sign("GET", `/v1/requests/${id}`))).json()) as { status: string };
    expect(status.status).toBe("queued");
  });

  test("tampered path: a signature for one request does not open another", async () => {
    const mine = await created();
    const other = await created();
    const s = await sign("GET", `/v1/requests/${mine}`);
    expect((await send({ ...s, url: `${BASE}/v1/requests/${other}` })).status).toBe(401);
    expect((await send({ ...s, url: `${BASE}/v1/requests/${mine}/magnet` })).status).toBe(401);
  });

  test("tampered query: added, changed or removed", async () => {
    const id = await created();
    const s = await sign("GET", `/v1/requests/${id}?a=1`);
    expect((await send({ ...s, url: `${BASE}/v1/requests/${id}?a=2` })).status).toBe(401);
    expect((await send({ ...s, url: `${BASE}/v1/requests/${id}` })).status).toBe(401);
    expect((await send({ ...s, url: `${BASE}/v1/requests/${id}?a=1&b=2` })).status).toBe(401);
    const plain = await sign("GET", `/v1/requests/${id}`);
    expect((await send({ ...plain, url: `${BASE}/v1/requests/${id}?x=1` })).status).toBe(401);
  });

  test("tampered body: with the old digest, and with a recomputed digest", async () => {
    const s = await sign("POST", "/v1/requests", createBody("http://example.test/original"));
    const evil = createBody("http://evil.test/");
    const res = await send({ ...s, body: evil });
    expect(res.status).toBe(401);
    expect(await detail(res)).toBe("Invalid signature: Content-Digest does not match the body");
    const digest = `sha-256=:${Buffer.from(await sha256(evil)).toString("base64")}:`;
    const res2 = await send({ ...s, body: evil, headers: { ...s.headers, "Content-Digest": digest } });
    expect(res2.status).toBe(401);
    expect(await detail(res2)).toBe("Invalid signature: the signature does not verify");
    // The untampered original still goes through: the refusals did not burn its nonce.
    expect((await send(s)).status).toBe(201);
  });

  test("stale and future signatures (more than 300 s away) are refused; 300 s is accepted", async () => {
    const now = Math.floor(t.clock.now() / 1000);
    for (const created of [now - 301, now + 301, now - 86400]) {
      const res = await send(await sign("POST", "/v1/requests", createBody(), { created }));
      expect(res.status).toBe(401);
      expect(await detail(res)).toContain("away from the server's clock");
    }
    expect(
      (await send(await sign("POST", "/v1/requests", createBody(), { created: now - 300 }))).status,
    ).toBe(201);
  });

  test("a captured request is refused once the window has passed (server clock moves on)", async () => {
    const s = await sign("POST", "/v1/requests", createBody("http://example.test/later"));
    t.clock.advance(301_000);
    try {
      expect((await send(s)).status).toBe(401);
    } finally {
      t.clock.advance(-301_000);
    }
  });

  test("a signature must cover method, path, query and content-digest", async () => {
    const s = await sign("GET", "/v1/requests/x");
    const input = s.headers["Signature-Input"]!.replace('"@query" ', "");
    const res = await send({ ...s, headers: { ...s.headers, "Signature-Input": input } });
    expect(res.status).toBe(401);
    expect(await detail(res)).toContain('must cover "@query"');
  });

  test("unknown key id, wrong key, revoked key, wrong alg, malformed headers", async () => {
    const s = await sign("POST", "/v1/requests", createBody());
    const withInput = (input: string) => ({ ...s, headers: { ...s.headers, "Signature-Input": input } });
    const input = s.headers["Signature-Input"]!;
    expect(
      (await send(withInput(input.replace(/keyid="[0-9a-f]+"/, 'keyid="0000000000000000"')))).status,
    ).toBe(401);
    expect((await send(withInput(input.replace('alg="hmac-sha256"', 'alg="rsa-pss-sha512"')))).status).toBe(
      401,
    );
    expect((await send({ ...s, headers: { ...s.headers, Signature: "pt=:AAAA:" } })).status).toBe(401);
    expect((await send({ ...s, headers: { ...s.headers, Signature: "pt=not base64" } })).status).toBe(401);
    expect((await send(withInput("pt=(garbage"))).status).toBe(401);
    const { "Content-Digest": _, ...noDigest } = s.headers;
    expect((await send({ ...s, headers: noDigest })).status).toBe(401);

    const other = await t.key("other");
    const wrong = await signatureHeaders(other.key, { method: "POST", url: s.url, body: s.body });
    const forged = wrong["Signature"]!;
    expect((await send({ ...s, headers: { ...s.headers, Signature: forged } })).status).toBe(401);

    const victim = await t.key("soon revoked");
    const ok = await signatureHeaders(
      victim.key,
      { method: "GET", url: `${BASE}/v1/requests/none` },
      {
        created: Math.floor(t.clock.now() / 1000),
      },
    );
    expect((await t.app.request(`${BASE}/v1/requests/none`, { headers: ok })).status).toBe(404);
    await revokeApiKey(t.db, victim.id, t.clock.now());
    const after = await signatureHeaders(
      victim.key,
      { method: "GET", url: `${BASE}/v1/requests/none` },
      {
        created: Math.floor(t.clock.now() / 1000),
      },
    );
    expect((await t.app.request(`${BASE}/v1/requests/none`, { headers: after })).status).toBe(401);
  });
});
