/**
 * Result reuse (`ttl`) and in-flight sharing stay inside a tenant unless the operator turns
 * CACHE__SHARE_ACROSS_TENANTS on (issue 10, item 7). Two tenants with their own API keys, the real
 * service process over a real libSQL file, and an origin that counts what it is asked.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createApiKey } from "../../src/auth/keys";
import { tempDatabase } from "../support/db";
import { type Origin, type Route, startOrigin, textRoute } from "../support/origin";
import { until } from "../support/poll";
import { Service } from "../support/service";

let origin: Origin;
let release: () => void = () => {};
let gate: Promise<void> = Promise.resolve();
// Answers only once the test opens the gate, so a fetch stays in flight as long as needed.
const gated: Route = async (_req, res) => {
  await gate;
  res.writeHead(200, { "content-type": "text/plain", "content-length": "5" });
  res.end("gated");
};

beforeAll(async () => {
  origin = await startOrigin({ "/report": textRoute("quarterly numbers"), "/slow": gated });
});
afterAll(async () => {
  release();
  await origin?.close();
});

/** A service with two tenants, each with its own API key. */
async function twoTenants(env: Record<string, string> = {}) {
  const t = await tempDatabase();
  const now = Date.now();
  const a = await createApiKey(t.db, { name: "tenant-a", now });
  const b = await createApiKey(t.db, { name: "tenant-b", now });
  t.client.close();
  const svc = await Service.start({ basePath: t.dir, env });
  const as = (key: string) => ({
    async create(payload: Record<string, unknown>) {
      const res = await svc.api("/v1/requests", {
        method: "POST",
        headers: { authorization: `Bearer ${key}` },
        body: JSON.stringify(payload),
      });
      expect(res.status).toBe(201);
      return ((await res.json()) as { id: string }).id;
    },
    async waitReady(id: string) {
      const deadline = Date.now() + 60_000;
      for (;;) {
        const res = await svc.api(`/v1/requests/${id}`, { headers: { authorization: `Bearer ${key}` } });
        const st = (await res.json()) as { status: string; content_hash: string; error_message: string };
        if (st.status === "ready") return st;
        if (st.status === "error" || Date.now() > deadline) throw new Error(JSON.stringify(st));
        await Bun.sleep(50);
      }
    },
  });
  return { svc, A: as(a.key), B: as(b.key) };
}

function openGate() {
  gate = new Promise((r) => {
    release = r;
  });
}

describe("by default (CACHE__SHARE_ACROSS_TENANTS=false)", () => {
  let t: Awaited<ReturnType<typeof twoTenants>>;
  beforeAll(async () => {
    t = await twoTenants();
  });
  afterAll(async () => {
    await t?.svc.stop();
  });

  test("given tenant A's ready result, tenant B's identical request makes its own fetch", async () => {
    const url = origin.url("/report?token=a-secret-query");
    const before = origin.count("/report");
    const a = await t.A.waitReady(await t.A.create({ url, ttl: 3600 }));
    expect(origin.count("/report")).toBe(before + 1);
    const b = await t.B.waitReady(await t.B.create({ url, ttl: 3600 }));
    expect(origin.count("/report")).toBe(before + 2);
    // the bytes are the same (and stored once); only the fetch is not shared
    expect(b.content_hash).toBe(a.content_hash);
    // within one tenant, ttl reuse still works
    await t.A.waitReady(await t.A.create({ url, ttl: 3600 }));
    expect(origin.count("/report")).toBe(before + 2);
  });

  test("given a fetch of tenant A in flight, tenant B's identical request does not join it", async () => {
    openGate();
    const url = origin.url("/slow?t=1");
    const before = origin.count("/slow");
    const a = await t.A.create({ url, ttl: 3600 });
    await until(() => origin.count("/slow") === before + 1, "A's fetch to reach the origin");
    const b = await t.B.create({ url, ttl: 3600 });
    await until(() => origin.count("/slow") === before + 2, "B's own fetch to reach the origin");
    release();
    await t.A.waitReady(a);
    await t.B.waitReady(b);
    expect(origin.count("/slow")).toBe(before + 2);
  });
});

describe("with CACHE__SHARE_ACROSS_TENANTS=true", () => {
  let t: Awaited<ReturnType<typeof twoTenants>>;
  beforeAll(async () => {
    t = await twoTenants({ CACHE__SHARE_ACROSS_TENANTS: "true" });
  });
  afterAll(async () => {
    await t?.svc.stop();
  });

  test("given tenant A's ready result, tenant B is answered from it without a fetch", async () => {
    const url = origin.url("/report?token=shared");
    const before = origin.count("/report");
    const a = await t.A.waitReady(await t.A.create({ url, ttl: 3600 }));
    const b = await t.B.waitReady(await t.B.create({ url, ttl: 3600 }));
    expect(b.content_hash).toBe(a.content_hash);
    expect(origin.count("/report")).toBe(before + 1);
  });

  test("given a fetch of tenant A in flight, tenant B's identical request joins it", async () => {
    openGate();
    const url = origin.url("/slow?t=2");
    const before = origin.count("/slow");
    const a = await t.A.create({ url, ttl: 3600 });
    await until(() => origin.count("/slow") === before + 1, "A's fetch to reach the origin");
    const b = await t.B.create({ url, ttl: 3600 });
    release();
    await t.A.waitReady(a);
    await t.B.waitReady(b);
    expect(origin.count("/slow")).toBe(before + 1);
  });
});
