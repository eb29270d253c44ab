/**
 * What the API refuses about a target URL at POST time, before any 201: credentials in the URL
 * (issue 10, item 9) and destinations the egress settings never let a node fetch (item 18).
 * In-process over a real libSQL file.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { eq } from "drizzle-orm";
import { fetchJobs, fetchRequests } from "../../src/db/schema";
import { testApp } from "../support/app";
import { tempDatabase } from "../support/db";

const TOKEN = "token-url-checks-0123456789";

async function apiWith(env: Record<string, string>) {
  const t = await tempDatabase({ SECURITY__BEARER_TOKENS: TOKEN, ...env });
  const app = testApp({
    db: t.db,
    config: t.config,
  });
  const call = (path: string, init: RequestInit = {}) => {
    const headers = new Headers(init.headers);
    headers.set("authorization", `Bearer ${TOKEN}`);
    if (init.body) headers.set("content-type", "application/json");
    return app.request(path, { ...init, headers });
  };
  const post = (body: unknown) => call("/v1/requests", { method: "POST", body: JSON.stringify(body) });
  return { ...t, call, post, close: () => t.client.close() };
}

let strict: Awaited<ReturnType<typeof apiWith>>;
let open: Awaited<ReturnType<typeof apiWith>>;
beforeAll(async () => {
  strict = await apiWith({});
  open = await apiWith({ EGRESS__ALLOW_PRIVATE_NETWORKS: "true" });
});
afterAll(() => {
  strict.close();
  open.close();
});

describe("credentials in the URL (user:pass@)", () => {
  test("given a URL with user info, POST is a 422 that never shows the password, and nothing is stored", async () => {
    const res = await strict.post({ url: "https://alice:hunter2-secret@files.example.test/report.pdf" });
    expect(res.status).toBe(422);
    const text = await res.text();
    expect(text).not.toContain("hunter2-secret");
    expect(text).toContain("user name or password");
    const body = JSON.parse(text) as { detail: { loc: string[]; input: string }[] };
    expect(body.detail[0]!.loc).toEqual(["body", "url"]);
    expect(body.detail[0]!.input).toBe("https://files.example.test/report.pdf");
    expect(await strict.db.select().from(fetchRequests)).toEqual([]);
  });

  test("given a row stored by 0.2 with a password in its URL, the status shows the URL without it", async () => {
    // the tenant id of this bearer token, as the API stores it
    const made = (await (await strict.post({ url: "http://files.example.test/mine" })).json()) as {
      id: string;
    };
    const [mine] = await strict.db.select().from(fetchRequests).where(eq(fetchRequests.id, made.id));
    const now = Date.now();
    const url = "https://bob:old-secret@files.example.test/a.txt";
    await strict.db.insert(fetchJobs).values({
      id: "legacy-job",
      fingerprint: "legacy",
      status: "queued",
      url,
      method: "GET",
      createdAt: now,
      updatedAt: now,
    });
    await strict.db.insert(fetchRequests).values({
      id: "legacy-req",
      jobId: "legacy-job",
      userId: mine!.userId,
      url,
      method: "GET",
      ttl: 0,
      createdAt: now,
    });
    const res = await strict.call("/v1/requests/legacy-req");
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).not.toContain("old-secret");
    expect((JSON.parse(text) as { url: string }).url).toBe("https://files.example.test/a.txt");
  });
});

describe("destinations that can never be fetched under the current settings", () => {
  test.each([
    ["http://127.0.0.1:8000/file.txt", "a loopback address"],
    ["http://[::ffff:127.0.0.1]/", "a loopback address"],
    ["http://10.1.2.3/", "a private network address"],
    ["http://localhost:9000/", "names a host inside a private network"],
  ])(
    "given %s and no EGRESS__ALLOW_PRIVATE_NETWORKS, POST is a 422 naming the setting",
    async (url, what) => {
      const res = await strict.post({ url });
      expect(res.status).toBe(422);
      const body = (await res.json()) as { detail: { loc: string[]; msg: string }[] };
      expect(body.detail[0]!.loc).toEqual(["body", "url"]);
      expect(body.detail[0]!.msg).toContain(what);
      expect(body.detail[0]!.msg).toContain("EGRESS__ALLOW_PRIVATE_NETWORKS=true");
    },
  );

  test("given a metadata address, POST is a 422 even with private networks allowed, without a hint to lift it", async () => {
    const res = await open.post({ url: "http://169.254.169.254/latest/meta-data/" });
    expect(res.status).toBe(422);
    expect(await res.text()).not.toContain("EGRESS__ALLOW_PRIVATE_NETWORKS");
  });

  test("given a denied literal, POST is a 422 naming FETCHER__URL_DENYLIST", async () => {
    const t = await apiWith({ FETCHER__URL_DENYLIST: "5.45.0.0/16" });
    try {
      const res = await t.post({ url: "http://5.45.1.2/" });
      expect(res.status).toBe(422);
      expect(await res.text()).toContain("FETCHER__URL_DENYLIST");
    } finally {
      t.close();
    }
  });

  test("given EGRESS__ALLOW_PRIVATE_NETWORKS=true, the same loopback URL is accepted (201)", async () => {
    expect((await open.post({ url: "http://127.0.0.1:8000/file.txt" })).status).toBe(201);
  });

  test("given a name, it is accepted: what it resolves to is judged at fetch time", async () => {
    expect((await strict.post({ url: "http://files.example.test/a.txt" })).status).toBe(201);
  });
});
