/**
 * Input limits of the v1 API in-process over a real libSQL file: one body size limit on every route
 * (counted while reading, so chunked bodies too), bounded fields, 422s that never echo large or deep
 * input back, a signature check that reads no body for a stranger, and a clear 415 for non-JSON.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { createApp } from "../../src/api/app";
import { sha256 } from "../../src/auth/crypto";
import { createApiKey } from "../../src/auth/keys";
import { signatureHeaders } from "../../src/auth/sign";
import { verifySignedRequest } from "../../src/auth/signature";
import { testApp } from "../support/app";
import { chunkedBody } from "../support/chunked";
import { tempDatabase } from "../support/db";

const TOKEN = "token-limits-0123456789";
const LIMIT = 64 * 1024;
const WEBHOOK_SECRET = `whsec_${Buffer.alloc(32, 7).toString("base64")}`;
// The documented limits of the `headers` field (README, "Limits").
const HEADER_LIMITS = { count: 64, nameLength: 256, valueLength: 8192, totalLength: 32768 };
let t: Awaited<ReturnType<typeof tempDatabase>>;
let app: ReturnType<typeof createApp>;
/** The same database with the default body limit (2 MiB), where the field limits are what refuse. */
let roomy: ReturnType<typeof createApp>;

beforeAll(async () => {
  t = await tempDatabase({
    SECURITY__BEARER_TOKENS: TOKEN,
    SECURITY__MAX_BODY_BYTES: String(LIMIT),
    WEBHOOK__SECRET: WEBHOOK_SECRET,
    EGRESS__ALLOW_PRIVATE_NETWORKS: "true",
  });
  app = testApp({ db: t.db, config: t.config });
  roomy = testApp({
    db: t.db,
    config: { ...t.config, security: { ...t.config.security, maxBodyBytes: 2 * 1024 * 1024 } },
  });
});
afterAll(() => t.client.close());

const BASE = "http://localhost";
const auth = { authorization: `Bearer ${TOKEN}` };
const postJson = (path: string, body: string, headers: Record<string, string> = {}, to = app) =>
  to.request(`${BASE}${path}`, {
    method: "POST",
    headers: { ...auth, "content-type": "application/json", ...headers },
    body,
  });

/** A body of `total` bytes in `chunk`-sized pieces, produced only as it is read; counts what was read. */
function countedStream(total: number, chunk = 16 * 1024) {
  const counter = { pulled: 0 };
  const stream = new ReadableStream<Uint8Array>(
    {
      pull(ctrl) {
        if (counter.pulled >= total) return ctrl.close();
        const n = Math.min(chunk, total - counter.pulled);
        counter.pulled += n;
        ctrl.enqueue(new Uint8Array(n).fill(0x20));
      },
    },
    { highWaterMark: 0 },
  );
  return { stream, counter };
}

type Detail = { type: string; loc: (string | number)[]; msg: string; input: unknown }[];

describe("request body limit (SECURITY__MAX_BODY_BYTES)", () => {
  test("a declared Content-Length over the limit is 413 {detail} before anything is read", async () => {
    const { stream, counter } = countedStream(LIMIT * 4);
    const res = await app.request(`${BASE}/v1/requests`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json", "content-length": String(LIMIT * 4) },
      body: stream,
      duplex: "half",
    } as RequestInit);
    expect(res.status).toBe(413);
    const body = (await res.json()) as { detail: string };
    expect(body.detail).toContain(`${LIMIT} bytes`);
    expect(body.detail).toContain("SECURITY__MAX_BODY_BYTES");
    expect(counter.pulled).toBe(0);
  });

  test("a chunked body (no Content-Length) is cut off once it passes the limit, on any route", async () => {
    for (const path of ["/v1/requests", "/v1/webhooks", "/v1/health", "/no-such-route"]) {
      const { stream, counter } = countedStream(LIMIT * 64);
      const res = await app.request(`${BASE}${path}`, {
        method: "POST",
        headers: { ...auth, "content-type": "application/json" },
        body: stream,
        duplex: "half",
      } as RequestInit);
      expect(res.status).toBe(413);
      expect(((await res.json()) as { detail: string }).detail).toContain("SECURITY__MAX_BODY_BYTES");
      // Read one chunk past the limit, not the 4 MiB on offer.
      expect(counter.pulled).toBeLessThanOrEqual(LIMIT + 16 * 1024);
    }
  });

  test("a body within the limit still works, declared or chunked", async () => {
    const json = JSON.stringify({ url: "http://example.test/ok", body: "x".repeat(LIMIT / 2) });
    expect((await postJson("/v1/requests", json)).status).toBe(201);
    const bytes = new TextEncoder().encode(json);
    const res = await app.request(`${BASE}/v1/requests`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: chunkedBody(bytes, 4096),
      duplex: "half",
    } as RequestInit);
    expect(res.status).toBe(201);
  });
});

describe("signed requests: cheap checks before the body", () => {
  test("an unknown key id or a garbage signature is refused without reading the body", async () => {
    const url = `${BASE}/v1/requests`;
    const good = await signatureHeaders(`pt_0000000000000000_${"0".repeat(64)}`, {
      method: "POST",
      url,
      body: "{}",
    });
    const variants: Record<string, string>[] = [
      good, // a key id that does not exist
      { ...good, Signature: "pt=:AAAA:" }, // garbage signature value
    ];
    for (const headers of variants) {
      const { stream, counter } = countedStream(LIMIT / 2);
      const res = await app.request(url, {
        method: "POST",
        headers: { ...headers, "content-type": "application/json", "content-length": String(LIMIT / 2) },
        body: stream,
        duplex: "half",
      } as RequestInit);
      expect(res.status).toBe(401);
      expect(counter.pulled).toBe(0);
    }
  });

  test("a signed request with a chunked body within the limit still verifies", async () => {
    const key = await createApiKey(t.db, { name: "chunked", now: Date.now() });
    const url = `${BASE}/v1/requests`;
    const json = JSON.stringify({ url: "http://example.test/signed-chunked", body: "y".repeat(LIMIT / 2) });
    const headers = await signatureHeaders(key.key, { method: "POST", url, body: json });
    const bytes = new TextEncoder().encode(json);
    const res = await app.request(url, {
      method: "POST",
      headers: { ...headers, "content-type": "application/json" },
      body: chunkedBody(bytes, 4096),
      duplex: "half",
    } as RequestInit);
    expect(res.status).toBe(201);
  });

  test("the verifier reads the body only after the key and the signature checked out", async () => {
    const key = await createApiKey(t.db, { name: "limits", now: Date.now() });
    const url = `${BASE}/v1/requests`;
    const body = new TextEncoder().encode('{"url":"http://example.test/signed"}');
    const headers = new Headers(
      await signatureHeaders(key.key, { method: "POST", url, body: new TextDecoder().decode(body) }),
    );
    const reads: string[] = [];
    const verify = (h: Headers, findKey: (id: string) => Promise<Uint8Array | null>) =>
      verifySignedRequest(
        { method: "POST", url, headers: h },
        async () => {
          reads.push("body");
          return body;
        },
        {
          now: Date.now(),
          windowSeconds: 300,
          findKey: async (id) => {
            reads.push("key");
            return findKey(id);
          },
          rememberNonce: async () => true,
        },
      );
    const hmacKey = await sha256(key.key);
    // unknown key: looked up, body never read
    expect((await verify(headers, async () => null)).ok).toBe(false);
    expect(reads).toEqual(["key"]);
    // the right key: the body is read after the lookup
    reads.length = 0;
    expect((await verify(headers, async () => hmacKey)).ok).toBe(true);
    expect(reads).toEqual(["key", "body"]);
  });
});

describe("bounded fields", () => {
  const create = (payload: Record<string, unknown>) => postJson("/v1/requests", JSON.stringify(payload));
  const url = "http://example.test/fields";

  test.each([
    [
      "too many headers",
      Object.fromEntries(Array.from({ length: HEADER_LIMITS.count + 1 }, (_, i) => [`x-h${i}`, "v"])),
    ],
    ["a long header value", { "x-long": "v".repeat(HEADER_LIMITS.valueLength + 1) }],
    ["a long header name", { ["x".repeat(HEADER_LIMITS.nameLength + 1)]: "v" }],
    [
      "too many characters in all",
      Object.fromEntries(
        Array.from({ length: 5 }, (_, i) => [`x-h${i}`, "v".repeat(HEADER_LIMITS.valueLength - 10)]),
      ),
    ],
  ])("headers: %s is 422 naming headers", async (_, headers) => {
    const res = await create({ url, headers });
    expect(res.status).toBe(422);
    const detail = ((await res.json()) as { detail: Detail }).detail;
    expect(detail[0]!.loc[1]).toBe("headers");
  });

  test("headers within the limits are accepted", async () => {
    const headers = Object.fromEntries(
      Array.from({ length: HEADER_LIMITS.count }, (_, i) => [`x-h${i}`, "v"]),
    );
    expect((await create({ url, headers })).status).toBe(201);
  });

  test("webhook fields: too many events, a huge secret, a long description are 422", async () => {
    const hook = (payload: Record<string, unknown>) => postJson("/v1/webhooks", JSON.stringify(payload));
    const target = "http://127.0.0.1:9/hook";
    expect((await hook({ url: target, events: Array(21).fill("request.ready") })).status).toBe(422);
    expect((await hook({ url: target, description: "d".repeat(501) })).status).toBe(422);
    const res = await hook({ url: target, secret: `whsec_${"A".repeat(40_000)}` });
    expect(res.status).toBe(422);
    expect((await res.text()).length).toBeLessThan(2000);
    expect((await hook({ url: target, events: ["request.ready"] })).status).toBe(201);
  });
});

describe("422 detail never echoes large or deep input", () => {
  test("a body field larger than 1 MiB gets a short 422, its input cut", async () => {
    const res = await postJson(
      "/v1/requests",
      JSON.stringify({ url: "http://example.test/", body: "b".repeat(1_500_000) }),
      {},
      roomy,
    );
    expect(res.status).toBe(422);
    const text = await res.text();
    expect(text.length).toBeLessThan(2000);
    const detail = (JSON.parse(text) as { detail: Detail }).detail;
    expect(detail[0]!.loc).toEqual(["body", "body"]);
    expect(String(detail[0]!.input).length).toBeLessThanOrEqual(201);
  });

  test("100,000 levels of nested JSON are 422, not 500", async () => {
    const deep = "[".repeat(100_000) + "]".repeat(100_000);
    for (const body of [deep, `{"url":${deep}}`, `{"url":"http://example.test/","headers":{"a":${deep}}}`]) {
      const res = await postJson("/v1/requests", body, {}, roomy);
      expect(res.status).toBe(422);
      expect((await res.text()).length).toBeLessThan(2000);
    }
  });

  test("a body with 10,000 wrong values lists a few issues, not 10,000", async () => {
    const headers = Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`h${i}`, i]));
    const res = await postJson(
      "/v1/requests",
      JSON.stringify({ url: "http://example.test/", headers }),
      {},
      roomy,
    );
    expect(res.status).toBe(422);
    const detail = ((await res.json()) as { detail: Detail }).detail;
    expect(detail.length).toBeGreaterThan(0);
    expect(detail.length).toBeLessThanOrEqual(20);
  });
});

describe("a body that is not JSON says so", () => {
  test("form-encoded (curl -d) and untyped bodies are 415 naming Content-Type: application/json", async () => {
    const payload = JSON.stringify({ url: "http://example.test/" });
    for (const headers of [
      { ...auth, "content-type": "application/x-www-form-urlencoded" },
      { ...auth, "content-type": "text/plain" },
      { ...auth, "content-length": String(payload.length) },
    ]) {
      for (const path of ["/v1/requests", "/v1/webhooks"]) {
        const res = await app.request(`${BASE}${path}`, { method: "POST", headers, body: payload });
        expect(res.status).toBe(415);
        expect(((await res.json()) as { detail: string }).detail).toContain("Content-Type: application/json");
      }
    }
  });

  test("a JSON body without url says url is required", async () => {
    const res = await postJson("/v1/requests", JSON.stringify({ method: "GET" }));
    expect(res.status).toBe(422);
    const detail = ((await res.json()) as { detail: Detail }).detail;
    expect(detail[0]!.msg).toBe("url is required");
    expect(detail[0]!.loc).toEqual(["body", "url"]);
  });

  test("invalid JSON says the body is not valid JSON", async () => {
    const res = await postJson("/v1/requests", "{url: nope");
    expect(res.status).toBe(422);
    expect(((await res.json()) as { detail: Detail }).detail[0]!.msg).toContain("not valid JSON");
  });
});
