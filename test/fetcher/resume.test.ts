/**
 * Interrupted bodies: the origin cuts the connection in the middle of a Content-Length (or
 * chunked) body. With a validator and `Accept-Ranges: bytes` the fetcher resumes with
 * Range + If-Range into the same blob writer; otherwise it starts over with a fresh writer.
 * Either way the stored bytes must hash exactly like the origin's, and no temp file remains.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { bytesRoute, type Origin, startOrigin } from "../support/origin";
import { fetchError, get, type Harness, harness } from "./helpers";

const SIZE = 4 * 1024 * 1024;
const CUT = 1_500_000;

let origin: Origin;
beforeAll(async () => {
  origin = await startOrigin();
});
afterAll(async () => {
  await origin.close();
});

async function withHarness(fn: (h: Harness) => Promise<void>, env: Record<string, string> = {}) {
  const h = await harness({ EGRESS__ALLOW_PRIVATE_NETWORKS: "true", FETCHER__MIME_WHITELIST: "*/*", ...env });
  try {
    await fn(h);
    expect(await h.store.tempFiles()).toEqual([]);
  } finally {
    await h.cleanup();
  }
}

const requestsTo = (path: string) => origin.requests.filter((r) => r.path === path);

/**
 * Where a Range request starts. The fetcher resumes from the bytes it has written, which may be
 * a little less than the origin sent before the cut (chunks in flight when the socket broke are
 * dropped, and asked for again), so tests check a window rather than one number.
 */
function rangeStart(header: string | string[] | undefined): number {
  const m = /^bytes=(\d+)-$/.exec(String(header ?? ""));
  if (!m) throw new Error(`not an open-ended Range header: ${header}`);
  return Number(m[1]);
}

describe("resuming with Range", () => {
  test("given a drop mid-body and range support with an ETag, the fetch resumes and the sha256 is right", async () => {
    const route = bytesRoute({ size: SIZE, seed: 21, ranges: true, dropAfter: CUT });
    origin.route("/resume-etag", route);
    await withHarness(async (h) => {
      const r = await get(h, origin.url("/resume-etag"));
      expect(r.contentHash).toBe(route.body.sha256());
      expect(r.size).toBe(SIZE);
      expect(r.status).toBe(200);
      expect(await h.store.verify(r.contentHash)).toBe(true);
      const [first, second] = requestsTo("/resume-etag");
      expect(first!.headers.range).toBeUndefined();
      expect(rangeStart(second!.headers.range)).toBeGreaterThan(0);
      expect(rangeStart(second!.headers.range)).toBeLessThanOrEqual(CUT);
      expect(second!.headers["if-range"]).toBe(`"pb-21-${SIZE}"`);
      expect(requestsTo("/resume-etag").length).toBe(2);
    });
  });

  test("given only Last-Modified as validator, it is used for If-Range", async () => {
    const lastModified = "Wed, 01 Jan 2025 00:00:00 GMT";
    const route = bytesRoute({
      size: SIZE,
      seed: 22,
      ranges: true,
      dropAfter: CUT,
      etag: null,
      lastModified,
    });
    origin.route("/resume-lm", route);
    await withHarness(async (h) => {
      const r = await get(h, origin.url("/resume-lm"));
      expect(r.contentHash).toBe(route.body.sha256());
      expect(requestsTo("/resume-lm")[1]!.headers["if-range"]).toBe(lastModified);
    });
  });

  test("given several drops, each one resumes where the last stopped", async () => {
    const route = bytesRoute({ size: SIZE, seed: 23, ranges: true, dropAfter: 700_000, dropTimes: 3 });
    origin.route("/resume-3", route);
    await withHarness(async (h) => {
      const r = await get(h, origin.url("/resume-3"));
      expect(r.contentHash).toBe(route.body.sha256());
      const reqs = requestsTo("/resume-3");
      expect(reqs.length).toBe(4);
      expect(reqs[0]!.headers.range).toBeUndefined();
      const starts = reqs.slice(1).map((q) => rangeStart(q.headers.range));
      // each resume starts past the previous one, and no later than everything sent so far
      expect(starts[0]!).toBeGreaterThan(0);
      expect(starts[1]!).toBeGreaterThan(starts[0]!);
      expect(starts[2]!).toBeGreaterThan(starts[1]!);
      expect(starts[2]!).toBeLessThanOrEqual(3 * 700_000);
    });
  });

  test("given more drops than the resume limit, the fetch fails as a transient network error", async () => {
    origin.route(
      "/resume-never",
      bytesRoute({ size: SIZE, ranges: true, dropAfter: 100_000, dropTimes: 100 }),
    );
    await withHarness(async (h) => {
      const e = await fetchError(h, origin.url("/resume-never"));
      expect(e.code).toBe("network");
      expect(e.transient).toBe(true);
      expect(e.message).toBe("The connection to 127.0.0.1 broke off during the body");
      expect(requestsTo("/resume-never").length).toBe(4); // first try + 3 resumes
    });
  });
});

describe("restarting cleanly", () => {
  test("given a drop and no range support, the fetch starts over without Range and the sha256 is right", async () => {
    const route = bytesRoute({ size: SIZE, seed: 24, ranges: false, dropAfter: CUT });
    origin.route("/restart", route);
    await withHarness(async (h) => {
      const progress: number[] = [];
      const r = await h.fetcher.fetch(
        { url: origin.url("/restart"), method: "GET", headers: {} },
        { signal: new AbortController().signal, onProgress: (n) => progress.push(n) },
      );
      expect(r.contentHash).toBe(route.body.sha256());
      expect(requestsTo("/restart").map((q) => q.headers.range ?? null)).toEqual([null, null]);
      expect(progress).toContain(0); // progress went back to zero for the fresh start
      expect(progress.at(-1)).toBe(SIZE);
    });
  });

  test("given an origin that advertises ranges but answers the Range request with 200, it restarts with that body", async () => {
    const route = bytesRoute({ size: SIZE, seed: 25, ranges: "ignore", dropAfter: CUT });
    origin.route("/range-ignored", route);
    await withHarness(async (h) => {
      const r = await get(h, origin.url("/range-ignored"));
      expect(r.contentHash).toBe(route.body.sha256());
      expect(r.size).toBe(SIZE);
      const reqs = requestsTo("/range-ignored");
      expect(reqs.length).toBe(2);
      expect(rangeStart(reqs[1]!.headers.range)).toBeLessThanOrEqual(CUT);
    });
  });

  test("given a changed ETag (If-Range fails), the origin's full 200 body replaces the partial one", async () => {
    // The first answer carries an ETag that no longer matches when the client comes back.
    const before = bytesRoute({ size: SIZE, seed: 26, ranges: true, dropAfter: CUT, etag: '"old-version"' });
    const route = bytesRoute({ size: SIZE, seed: 26, ranges: true, etag: '"new-version"' });
    origin.route("/changed", (req, res, ctx) => (ctx.nth === 1 ? before : route)(req, res, ctx));
    await withHarness(async (h) => {
      const r = await get(h, origin.url("/changed"));
      expect(r.contentHash).toBe(route.body.sha256());
      expect(requestsTo("/changed")[1]!.headers["if-range"]).toBe('"old-version"');
    });
  });

  test("given a chunked body cut before its last chunk, the cut is noticed and the fetch starts over", async () => {
    const route = bytesRoute({ size: SIZE, seed: 27, contentLength: false, dropAfter: CUT });
    origin.route("/chunked-cut", route);
    await withHarness(async (h) => {
      const r = await get(h, origin.url("/chunked-cut"));
      expect(r.contentHash).toBe(route.body.sha256());
      expect(requestsTo("/chunked-cut").length).toBe(2);
    });
  });
});

describe("large bodies", () => {
  test("given a 64 MiB body with a drop, it streams through and resumes", async () => {
    const size = 64 * 1024 * 1024;
    const route = bytesRoute({ size, seed: 28, ranges: true, dropAfter: 40 * 1024 * 1024 });
    origin.route("/large", route);
    await withHarness(
      async (h) => {
        const r = await get(h, origin.url("/large"));
        expect(r.size).toBe(size);
        expect(r.contentHash).toBe(route.body.sha256());
      },
      { FETCHER__MAX_SIZE: String(size) },
    );
  });
});
