/**
 * The v1 API in-process over a real libSQL file: status codes, error shapes and ownership as the
 * original's clients expect them. (The pipeline behind it is exercised end to end in test/e2e.)
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { createApp } from "../../src/api/app";
import { testApp } from "../support/app";
import { tempDatabase } from "../support/db";

const TOKEN_A = "token-a-0123456789";
const TOKEN_B = "token-b-0123456789";
let app: ReturnType<typeof createApp>;
let close: () => void;
let woken = 0;

beforeAll(async () => {
  const t = await tempDatabase({ SECURITY__BEARER_TOKENS: `${TOKEN_A},${TOKEN_B}` });
  close = () => t.client.close();
  app = testApp({
    db: t.db,
    config: t.config,
    onRequestCreated: () => woken++,
  });
});
afterAll(() => close());

const call = (path: string, init: RequestInit & { token?: string | null } = {}) => {
  const headers = new Headers(init.headers);
  const token = init.token === undefined ? TOKEN_A : init.token;
  if (token) headers.set("authorization", `Bearer ${token}`);
  if (init.body) headers.set("content-type", "application/json");
  return app.request(path, { ...init, headers });
};
const post = (body: unknown, token?: string | null) =>
  call("/v1/requests", {
    method: "POST",
    body: typeof body === "string" ? body : JSON.stringify(body),
    token,
  });

describe("POST /v1/requests", () => {
  test("creates a queued request with 201 and the original's fields", async () => {
    const res = await post({ url: "http://example.test/a.html" });
    expect(res.status).toBe(201);
    const body = (await res.json()) as Record<string, unknown>;
    expect(Object.keys(body).sort()).toEqual(["created_at", "estimated_ready", "id", "status"]);
    expect(body.status).toBe("queued");
    expect(String(body.created_at)).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(woken).toBeGreaterThan(0);
  });

  test("normalises the URL and defaults method GET", async () => {
    const { id } = (await (await post({ url: "http://Example.TEST" })).json()) as { id: string };
    const s = (await (await call(`/v1/requests/${id}`)).json()) as Record<string, unknown>;
    expect(s.url).toBe("http://example.test/");
    expect(s.method).toBe("GET");
    expect(s.progress).toBe(0);
  });

  test("malformed JSON is 422 json_invalid", async () => {
    const res = await post("{not json");
    expect(res.status).toBe(422);
    const body = (await res.json()) as { detail: { type: string }[] };
    expect(body.detail[0]!.type).toBe("json_invalid");
  });

  test.each([
    [{}, "url"],
    [{ url: "ftp://example.test/x" }, "url"],
    [{ url: "not a url" }, "url"],
    [{ url: "http://example.test/", method: "FETCH" }, "method"],
    [{ url: "http://example.test/", method: "get" }, "method"],
    [{ url: "http://example.test/", ttl: -1 }, "ttl"],
    [{ url: "http://example.test/", ttl: 1.5 }, "ttl"],
    [{ url: "http://example.test/", ttl: 86401 }, "ttl"],
    [{ url: "http://example.test/", headers: { a: 1 } }, "headers"],
  ])("invalid input %j is 422 naming %s", async (payload, field) => {
    const res = await post(payload);
    expect(res.status).toBe(422);
    const body = (await res.json()) as { detail: { loc: string[]; msg: string }[] };
    expect(body.detail.length).toBeGreaterThan(0);
    expect(body.detail[0]!.loc).toEqual(expect.arrayContaining(["body", field]));
    expect(body.detail[0]!.msg.length).toBeGreaterThan(3);
  });

  test("without credentials: 401 with WWW-Authenticate: Bearer", async () => {
    const res = await post({ url: "http://example.test/" }, null);
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toBe("Bearer");
    expect(await res.json()).toEqual({ detail: "Invalid or missing authentication" });
    expect((await post({ url: "http://example.test/" }, "wrong-token")).status).toBe(401);
  });
});

describe("reading and cancelling", () => {
  test("unknown id is 404 with the original's message", async () => {
    const res = await call("/v1/requests/nope");
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ detail: "Request nope not found" });
  });

  test("torrent and magnet of a request that is not ready are 400", async () => {
    const { id } = (await (await post({ url: "http://example.test/b" })).json()) as { id: string };
    for (const p of ["torrent", "magnet"]) {
      const res = await call(`/v1/requests/${id}/${p}`);
      expect(res.status).toBe(400);
      expect(await res.json()).toEqual({ detail: "Request not ready (status: queued)" });
    }
  });

  test("another caller's request does not exist for you (404 on every route)", async () => {
    const { id } = (await (await post({ url: "http://example.test/private" })).json()) as { id: string };
    for (const [method, suffix] of [
      ["GET", ""],
      ["GET", "/torrent"],
      ["GET", "/magnet"],
      ["DELETE", ""],
    ] as const) {
      const res = await call(`/v1/requests/${id}${suffix}`, { method, token: TOKEN_B });
      expect(res.status).toBe(404);
    }
    expect((await call(`/v1/requests/${id}`)).status).toBe(200);
  });

  test("DELETE is 204 with no body and the request reads cancelled", async () => {
    const { id } = (await (await post({ url: "http://example.test/c" })).json()) as { id: string };
    const res = await call(`/v1/requests/${id}`, { method: "DELETE" });
    expect(res.status).toBe(204);
    expect(await res.text()).toBe("");
    const s = (await (await call(`/v1/requests/${id}`)).json()) as { status: string };
    expect(s.status).toBe("cancelled");
    expect((await call(`/v1/requests/${id}/torrent`)).status).toBe(400);
  });
});

describe("service routes", () => {
  test("GET / names the service and its docs", async () => {
    const body = (await (await call("/", { token: null })).json()) as Record<string, string>;
    expect(body.service).toBe("ProxyTorrent");
    expect(body.docs).toBe("/docs");
  });

  test("health checks the database and queue without auth, naming the runtime", async () => {
    const res = await call("/v1/health", { token: null });
    expect(res.status).toBe(200);
    const body = (await res.json()) as {
      status: string;
      runtime: string;
      checks: Record<string, { status: string }>;
    };
    expect(body.status).toBe("healthy");
    expect(body.runtime).toBe("bun");
    expect(body.checks.database!.status).toBe("healthy");
    expect(body.checks.task_queue!.status).toBe("healthy");
  });

  test("the OpenAPI document is generated from the validation schemas", async () => {
    const res = await call("/openapi.json", { token: null });
    expect(res.status).toBe(200);
    const doc = (await res.json()) as any;
    expect(doc.openapi).toMatch(/^3\./);
    const post = doc.paths["/v1/requests"].post;
    const schema = post.requestBody.content["application/json"].schema;
    expect(schema.required).toEqual(["url"]);
    expect(schema.properties.method.enum).toEqual(["GET", "POST", "PUT", "DELETE", "PATCH"]);
    expect(doc.paths["/v1/requests/{id}/magnet"].get).toBeDefined();
    const html = await (await call("/docs", { token: null })).text();
    expect(html).toContain("/openapi.json");
  });

  test("every response carries an X-Request-Id, and a caller's own id is echoed", async () => {
    const res = await call("/v1/health", { token: null, headers: { "x-request-id": "trace-123" } });
    expect(res.headers.get("x-request-id")).toBe("trace-123");
    expect((await call("/", { token: null })).headers.get("x-request-id")).toBeTruthy();
  });
});
