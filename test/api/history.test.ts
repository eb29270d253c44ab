/**
 * The history: GET /v1/requests (filters, keyset paging, tenancy) and GET /v1/requests/export
 * (CSV, NDJSON, JSON of the same filtered list), in-process over a real libSQL file. Large
 * histories are written with one INSERT … SELECT, not thousands of POSTs.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { parse } from "csv-parse/sync";
import { eq, sql } from "drizzle-orm";
import { encodeCursor } from "../../src/api/schemas";
import { fetchJobs, fetchRequests } from "../../src/db/schema";
import { silentLogger } from "../../src/log";
import { type AuthApp, authApp, BASE, bearer, T0 } from "../auth/helpers";
import { testApp } from "../support/app";

let t: AuthApp;
type Caller = (path: string, init?: RequestInit) => Promise<Response>;
const as =
  (key: string): Caller =>
  async (path, init = {}) =>
    t.app.request(`${BASE}${path}`, bearer(key, init));

/** A caller with its own tenant, so each test sees only the requests it made. */
async function tenant(name: string, scopes?: Parameters<AuthApp["key"]>[1]) {
  return as((await t.key(name, scopes, name)).key);
}

interface Item {
  id: string;
  status: string;
  url: string;
  created_at: string;
  error_message: string | null;
  [k: string]: unknown;
}
interface Page {
  items: Item[];
  next_cursor: string | null;
}

const STATUS_KEYS = [
  "id",
  "status",
  "url",
  "method",
  "created_at",
  "updated_at",
  "completed_at",
  "infohash",
  "content_hash",
  "content_size",
  "content_type",
  "error_message",
  "error_code",
  "progress",
  "expires_at",
  "verified_digests",
  "scan",
];

async function create(call: Caller, url: string, extra: Record<string, unknown> = {}): Promise<string> {
  const res = await call("/v1/requests", { method: "POST", body: JSON.stringify({ url, ttl: 0, ...extra }) });
  expect(res.status).toBe(201);
  return ((await res.json()) as { id: string }).id;
}

async function page(call: Caller, query: string): Promise<Page> {
  const res = await call(`/v1/requests?${query}`);
  expect(res.status).toBe(200);
  return (await res.json()) as Page;
}

/** Every item of a listing, following next_cursor. */
async function all(call: Caller, query: string, limit = 200): Promise<Item[]> {
  const out: Item[] = [];
  let cursor: string | null = null;
  do {
    const p: Page = await page(
      call,
      `${query}&limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`,
    );
    out.push(...p.items);
    cursor = p.next_cursor;
  } while (cursor);
  return out;
}

const ids = (items: { id: string }[]) => items.map((i) => i.id);

async function detail422(res: Response) {
  expect(res.status).toBe(422);
  return ((await res.json()) as { detail: { loc: (string | number)[]; msg: string }[] }).detail;
}

beforeAll(async () => {
  t = await authApp({
    RATE_LIMIT__REQUESTS_PER_MINUTE: "100000",
    RATE_LIMIT__REQUESTS_PER_IP_MINUTE: "100000",
  });
});
afterAll(() => t.close());

describe("GET /v1/requests", () => {
  test("pages through 25 requests with limit=10: 3 pages, newest first, none repeated or missing", async () => {
    const call = await tenant("pager");
    const made: { id: string; at: number }[] = [];
    for (let i = 0; i < 25; i++) {
      // Pairs share a created_at, so the id tie-break is what keeps paging exact.
      if (i % 2 === 0) t.clock.advance(1000);
      made.push({ id: await create(call, `http://example.test/page/${i}`), at: t.clock.now() });
    }
    const expected = [...made]
      .sort((a, b) => b.at - a.at || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0))
      .map((m) => m.id);

    const pages: Page[] = [];
    let cursor: string | null = null;
    do {
      const p: Page = await page(call, `limit=10${cursor ? `&cursor=${cursor}` : ""}`);
      pages.push(p);
      cursor = p.next_cursor;
    } while (cursor && pages.length < 10);
    expect(pages.map((p) => p.items.length)).toEqual([10, 10, 5]);
    expect(pages[2]!.next_cursor).toBeNull();
    const seen = pages.flatMap((p) => ids(p.items));
    expect(seen).toEqual(expected);
    expect(new Set(seen).size).toBe(25);
    // A request made while paging is newer than the cursor: it never shifts the pages already handed out.
    const again = await page(call, `limit=10&cursor=${pages[0]!.next_cursor}`);
    await create(call, "http://example.test/page/late");
    expect(ids((await page(call, `limit=10&cursor=${pages[0]!.next_cursor}`)).items)).toEqual(
      ids(again.items),
    );
  });

  test("items are exactly what GET /v1/requests/{id} shows: no headers, body or passkey", async () => {
    const call = await tenant("fields");
    const id = await create(call, "http://example.test/secretive", {
      method: "POST",
      headers: { "X-Api-Token": "origin-header-secret-value" },
      body: "origin-body-secret-value",
    });
    const torrentPasskey = (
      await t.db.select({ p: fetchRequests.passkey }).from(fetchRequests).where(eq(fetchRequests.id, id))
    )[0]!.p;
    const res = await call("/v1/requests");
    const text = await res.text();
    const { items } = JSON.parse(text) as Page;
    expect(items).toHaveLength(1);
    expect(Object.keys(items[0]!)).toEqual(STATUS_KEYS);
    expect(items[0]).toEqual(await (await call(`/v1/requests/${id}`)).json());
    expect(text).not.toContain("origin-header-secret-value");
    expect(text).not.toContain("origin-body-secret-value");
    expect(torrentPasskey).toBeTruthy();
    expect(text).not.toContain(torrentPasskey!);
    // and "export" is a route, not a request id
    expect((await call("/v1/requests/export")).status).toBe(200);
  });

  test("status filter: one, several comma-separated or repeated; cancelled is the request's own", async () => {
    const call = await tenant("statuses");
    const queued = await create(call, "http://example.test/s/queued");
    const ready = await create(call, "http://example.test/s/ready");
    const failed = await create(call, "http://example.test/s/failed");
    const cancelled = await create(call, "http://example.test/s/cancelled");
    const setJob = async (id: string, status: "ready" | "error") => {
      const [r] = await t.db
        .select({ job: fetchRequests.jobId })
        .from(fetchRequests)
        .where(eq(fetchRequests.id, id));
      await t.db.update(fetchJobs).set({ status }).where(eq(fetchJobs.id, r!.job));
    };
    await setJob(ready, "ready");
    await setJob(failed, "error");
    expect((await call(`/v1/requests/${cancelled}`, { method: "DELETE" })).status).toBe(204);

    const set = async (q: string) => new Set(ids((await page(call, q)).items));
    expect(await set("status=queued")).toEqual(new Set([queued]));
    expect(await set("status=ready")).toEqual(new Set([ready]));
    expect(await set("status=cancelled")).toEqual(new Set([cancelled]));
    expect(await set("status=ready,error")).toEqual(new Set([ready, failed]));
    expect(await set("status=queued&status=cancelled")).toEqual(new Set([queued, cancelled]));
    expect(await set("status=fetching")).toEqual(new Set());
    expect(await set("")).toEqual(new Set([queued, ready, failed, cancelled]));
  });

  test("since (inclusive) and until (exclusive) bound created_at", async () => {
    const call = await tenant("times");
    const base = t.clock.now() + 60_000;
    const at: string[] = [];
    for (const dt of [0, 1000, 2000, 3000]) {
      t.clock.advance(base + dt - t.clock.now());
      at.push(await create(call, `http://example.test/t/${dt}`));
    }
    const iso = (dt: number) => encodeURIComponent(new Date(base + dt).toISOString());
    const [a0, a1, a2, a3] = at as [string, string, string, string];
    expect(ids((await page(call, `since=${iso(1000)}`)).items)).toEqual([a3, a2, a1]);
    expect(ids((await page(call, `until=${iso(2000)}`)).items)).toEqual([a1, a0]);
    expect(ids((await page(call, `since=${iso(1000)}&until=${iso(3000)}`)).items)).toEqual([a2, a1]);
    // Any offset names the same instant.
    const plusOne = new Date(base + 2000 + 3_600_000).toISOString().replace("Z", "+01:00");
    expect(ids((await page(call, `since=${encodeURIComponent(plusOne)}`)).items)).toEqual([a3, a2]);
  });

  test("q is a case-insensitive URL substring in which % and _ are plain characters", async () => {
    const call = await tenant("search");
    const alpha = await create(call, "http://example.test/Alpha/one");
    const underscore = await create(call, "http://example.test/a_b");
    const axb = await create(call, "http://example.test/axb");
    const percent = await create(call, "http://example.test/x%20y");
    const set = async (q: string) => new Set(ids((await page(call, `q=${encodeURIComponent(q)}`)).items));
    expect(await set("ALPHA")).toEqual(new Set([alpha]));
    expect(await set("a_b")).toEqual(new Set([underscore]));
    expect(await set("%")).toEqual(new Set([percent]));
    expect(await set("x%2")).toEqual(new Set([percent]));
    expect(await set("example.test/a")).toEqual(new Set([alpha, underscore, axb]));
    expect(await set("nowhere")).toEqual(new Set());
  });

  test("a tenant sees only its own; naming a tenant is for admins only (422)", async () => {
    const alice = await tenant("alice");
    const bob = await tenant("bob");
    const a = await create(alice, "http://example.test/alice");
    const b = await create(bob, "http://example.test/bob");
    expect(ids(await all(alice, ""))).toEqual([a]);
    expect(ids(await all(bob, ""))).toEqual([b]);
    const refused = await detail422(await bob("/v1/requests?tenant=alice"));
    expect(refused[0]!.loc).toEqual(["query", "tenant"]);
    expect((await detail422(await bob("/v1/requests/export?tenant=alice")))[0]!.loc).toEqual([
      "query",
      "tenant",
    ]);
  });

  test("an admin sees every tenant and may filter by one", async () => {
    const carol = await tenant("carol");
    const dave = await tenant("dave");
    const c = await create(carol, "http://example.test/carol");
    const d = await create(dave, "http://example.test/dave");
    const admin = as((await t.key("ops", ["admin"])).key);
    const everyone = ids(await all(admin, ""));
    expect(everyone).toContain(c);
    expect(everyone).toContain(d);
    expect(ids(await all(admin, "tenant=carol"))).toEqual([c]);
    expect(ids(await all(admin, "tenant=dave&q=dave"))).toEqual([d]);
    expect(ids(await all(admin, "tenant=nobody"))).toEqual([]);
  });

  test("needs the requests:read scope", async () => {
    const creator = as((await t.key("creator", ["requests:create"])).key);
    expect((await creator("/v1/requests")).status).toBe(403);
    expect((await creator("/v1/requests/export")).status).toBe(403);
  });

  test.each([
    ["limit=0", "limit"],
    ["limit=201", "limit"],
    ["limit=ten", "limit"],
    ["limit=1.5", "limit"],
    ["limit=5&limit=6", "limit"],
    ["status=bogus", "status"],
    ["status=ready,nope", "status"],
    ["since=yesterday", "since"],
    ["since=2026-01-01", "since"],
    ["until=2026-01-01T00:00:00", "until"],
    ["q=a&q=b", "q"],
    ["cursor=not%20a%20cursor", "cursor"],
    ["cursor=%21%21%21", "cursor"],
    [`cursor=${Buffer.from('["x","y"]').toString("base64url")}`, "cursor"],
    [`cursor=${Buffer.from("[1,2]").toString("base64url")}`, "cursor"],
    [`cursor=${Buffer.from('[1,"a b"]').toString("base64url")}`, "cursor"],
    [`cursor=${Buffer.from("{}").toString("base64url")}`, "cursor"],
    [`cursor=${encodeCursor({ createdAt: T0, id: "x" }).slice(1)}`, "cursor"],
  ])("%s is 422 naming %s", async (query, field) => {
    const call = await tenant(`bad-${query}`);
    const detail = await detail422(await call(`/v1/requests?${query}`));
    expect(detail[0]!.loc.slice(0, 2)).toEqual(["query", field]);
    expect(detail[0]!.msg).toBeTruthy();
  });

  test("the OpenAPI document describes both routes and their query parameters", async () => {
    const doc = (await (await t.app.request(`${BASE}/openapi.json`)).json()) as {
      paths: Record<string, { get?: { parameters?: { name: string; in: string }[] } }>;
    };
    const params = (path: string) => doc.paths[path]?.get?.parameters?.map((p) => `${p.in}:${p.name}`);
    expect(params("/v1/requests")).toEqual(
      expect.arrayContaining([
        "query:status",
        "query:since",
        "query:until",
        "query:q",
        "query:limit",
        "query:cursor",
      ]),
    );
    expect(params("/v1/requests/export")).toEqual(expect.arrayContaining(["query:format", "query:tenant"]));
  });

  test("format other than csv, ndjson, json is 422", async () => {
    const call = await tenant("badformat");
    const detail = await detail422(await call("/v1/requests/export?format=xlsx"));
    expect(detail[0]!.loc).toEqual(["query", "format"]);
  });
});

/** `n` requests for `tenant` in one statement: created_at from `start` down, three per millisecond. */
async function insertMany(tenantId: string, n: number, start: number) {
  const jobId = crypto.randomUUID();
  const now = t.clock.now();
  await t.db.insert(fetchJobs).values({
    id: jobId,
    fingerprint: `bulk-${jobId}`,
    status: "ready",
    url: "http://example.test/bulk",
    method: "GET",
    createdAt: now,
    updatedAt: now,
    completedAt: now,
    contentSize: 1234,
    contentType: "text/plain",
  });
  await t.db.run(sql`
    WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ${n - 1})
    INSERT INTO ${fetchRequests} (id, job_id, user_id, url, method, ttl, created_at)
    SELECT printf('%08x-0000-4000-8000-%012d', abs(random()) % 4294967296, i), ${jobId}, ${tenantId},
           'http://example.test/bulk/' || i || '?a=1,b="2"', 'GET', 0, ${start} - (i / 3)
    FROM n`);
}

const EXPORT_ROWS = 10_000;

describe("GET /v1/requests/export", () => {
  let call: Caller;
  let listed: Item[];

  beforeAll(async () => {
    call = await tenant("bulk");
    await insertMany("bulk", EXPORT_ROWS, t.clock.now());
    listed = await all(call, "");
    expect(listed).toHaveLength(EXPORT_ROWS);
  });

  async function download(query: string) {
    const res = await call(`/v1/requests/export?${query}`);
    expect(res.status).toBe(200);
    return { res, text: await res.text() };
  }

  test(`CSV of ${EXPORT_ROWS} rows parses and matches the list, in the same order`, async () => {
    const { res, text } = await download("format=csv");
    expect(res.headers.get("content-type")).toStartWith("text/csv");
    const day = new Date(t.clock.now()).toISOString().slice(0, 10);
    expect(res.headers.get("content-disposition")).toBe(
      `attachment; filename="proxytorrent-requests-${day}.csv"`,
    );
    const rows = parse(text, { columns: true }) as (Record<string, string> & { id: string })[];
    expect(Object.keys(rows[0]!)).toEqual(STATUS_KEYS);
    expect(rows).toHaveLength(EXPORT_ROWS);
    expect(ids(rows)).toEqual(ids(listed));
    // Every field as the list shows it (null is an empty field).
    const cells = (i: Item) => STATUS_KEYS.map((k) => (i[k] === null ? "" : String(i[k])));
    expect(rows.map((r) => STATUS_KEYS.map((k) => r[k]))).toEqual(listed.map(cells));
  });

  test(`NDJSON of ${EXPORT_ROWS} rows: one object per line, equal to the list`, async () => {
    const { res, text } = await download("format=ndjson");
    expect(res.headers.get("content-type")).toBe("application/x-ndjson");
    expect(res.headers.get("content-disposition")).toMatch(/filename="proxytorrent-requests-.*\.ndjson"$/);
    expect(text.endsWith("\n")).toBe(true);
    const lines = text.slice(0, -1).split("\n");
    expect(lines).toHaveLength(EXPORT_ROWS);
    expect(lines.map((l) => JSON.parse(l))).toEqual(listed);
  });

  test("JSON is one array equal to the list", async () => {
    const { res, text } = await download("format=json");
    expect(res.headers.get("content-type")).toStartWith("application/json");
    expect(JSON.parse(text)).toEqual(listed);
  });

  test("the default format is json; filters apply as in the list", async () => {
    const { res, text } = await download("q=bulk/99");
    expect(res.headers.get("content-disposition")).toMatch(/\.json"$/);
    const expected = listed.filter((i) => i.url.includes("bulk/99"));
    expect(expected.length).toBeGreaterThan(0);
    expect(JSON.parse(text)).toEqual(expected);
    const since = listed[99]!.created_at;
    const { text: recent } = await download(`format=ndjson&since=${encodeURIComponent(since)}`);
    expect(
      recent
        .trim()
        .split("\n")
        .map((l) => (JSON.parse(l) as Item).id),
    ).toEqual(ids(listed.filter((i) => i.created_at >= since)));
  });

  test("an empty history is a header, an empty array, nothing", async () => {
    const lonely = await tenant("lonely");
    expect(await (await lonely("/v1/requests/export?format=csv")).text()).toBe(
      `${STATUS_KEYS.join(",")}\r\n`,
    );
    expect(await (await lonely("/v1/requests/export?format=json")).text()).toBe("[]\n");
    expect(await (await lonely("/v1/requests/export?format=ndjson")).text()).toBe("");
    // Another tenant's 10,000 rows are not in it.
    expect((await page(lonely, "")).items).toEqual([]);
  });

  test("CSV quotes commas, quotes and newlines, and defuses formulas", async () => {
    const sheet = await tenant("sheet");
    const id = await create(sheet, "http://example.test/f?x=1,y=2");
    const [r] = await t.db
      .select({ job: fetchRequests.jobId })
      .from(fetchRequests)
      .where(eq(fetchRequests.id, id));
    const evil = '=HYPERLINK("http://evil.test","click"),\nsecond line';
    await t.db.update(fetchJobs).set({ status: "error", errorMessage: evil }).where(eq(fetchJobs.id, r!.job));
    const text = await (await sheet("/v1/requests/export?format=csv")).text();
    const [row] = parse(text, { columns: true }) as Record<string, string>[];
    expect(row!.url).toBe("http://example.test/f?x=1,y=2");
    expect(row!.error_message).toBe(`'${evil}`);
    for (const lead of ["+1", "-1", "@SUM(A1)", "\tx"]) {
      await t.db.update(fetchJobs).set({ errorMessage: lead }).where(eq(fetchJobs.id, r!.job));
      const again = await (await sheet("/v1/requests/export?format=csv")).text();
      expect((parse(again, { columns: true }) as Record<string, string>[])[0]!.error_message).toBe(
        `'${lead}`,
      );
    }
    // JSON keeps the text as it is.
    const json = (await (await sheet("/v1/requests/export?format=json")).json()) as Item[];
    expect(json[0]!.error_message).toBe("\tx");
  });
});

describe("an export whose database read fails midway", () => {
  test("ends in an error, never as a well-formed file missing rows, and is logged", async () => {
    const own = await authApp();
    const logged: string[] = [];
    const app = testApp({
      db: own.db,
      config: own.config,
      log: { ...silentLogger, error: (msg: string) => logged.push(msg) },
    });
    const { key } = await own.key("cut", undefined, "cut");
    const jobId = crypto.randomUUID();
    const now = Date.now();
    await own.db.insert(fetchJobs).values({
      id: jobId,
      fingerprint: jobId,
      status: "queued",
      url: "http://example.test/cut",
      method: "GET",
      createdAt: now,
      updatedAt: now,
    });
    await own.db.run(sql`
      WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 1199)
      INSERT INTO ${fetchRequests} (id, job_id, user_id, url, method, ttl, created_at)
      SELECT printf('00000000-0000-4000-8000-%012d', i), ${jobId}, 'cut', 'http://example.test/cut/' || i, 'GET', 0, ${now} - i
      FROM n`);
    const res = await app.request(`${BASE}/v1/requests/export?format=json`, bearer(key));
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(first.done).toBe(false);
    own.close(); // the database goes away after the first batch
    let text = new TextDecoder().decode(first.value);
    const rest = (async () => {
      for (let r = await reader.read(); !r.done; r = await reader.read())
        text += new TextDecoder().decode(r.value);
    })();
    await expect(rest).rejects.toBeDefined();
    expect(() => JSON.parse(text)).toThrow();
    expect(logged).toContain("export failed");
  });
});
