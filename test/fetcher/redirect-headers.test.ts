/**
 * Caller headers across redirects (issue 10, item 9): a header such as X-Api-Key was meant for the
 * origin the caller named. A redirect to another origin (scheme, host or port; another loopback
 * port counts) receives only the safe list (Accept, Accept-Language, User-Agent, …); a redirect on
 * the same origin receives everything.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { type Origin, redirectRoute, startOrigin, textRoute } from "../support/origin";
import { get, harness } from "./helpers";

let a: Origin;
let b: Origin;
beforeAll(async () => {
  a = await startOrigin({ "/final": textRoute("on a") });
  b = await startOrigin({ "/final": textRoute("on b") });
});
afterAll(async () => {
  await a.close();
  await b.close();
});

const CALLER = {
  "X-Api-Key": "k-secret-123",
  "X-Custom": "custom",
  Accept: "text/plain",
  "Accept-Language": "de",
  "User-Agent": "caller-agent/1",
};

async function fetchVia(url: string) {
  const h = await harness({ EGRESS__ALLOW_PRIVATE_NETWORKS: "true", FETCHER__MIME_WHITELIST: "*/*" });
  try {
    return await get(h, url, CALLER);
  } finally {
    await h.cleanup();
  }
}

describe("caller headers on redirects", () => {
  test("given a redirect to another origin (another port), only safe headers follow", async () => {
    a.route("/cross", redirectRoute(b.url("/final")));
    const r = await fetchVia(a.url("/cross"));
    expect(r.finalUrl).toBe(b.url("/final"));
    const first = a.requests.find((q) => q.path === "/cross")!;
    expect(first.headers["x-api-key"]).toBe("k-secret-123");
    const hop = b.requests.at(-1)!;
    expect(hop.path).toBe("/final");
    expect(hop.headers["x-api-key"]).toBeUndefined();
    expect(hop.headers["x-custom"]).toBeUndefined();
    expect(hop.headers.accept).toBe("text/plain");
    expect(hop.headers["accept-language"]).toBe("de");
    expect(hop.headers["user-agent"]).toBe("caller-agent/1");
  });

  test("given a redirect on the same origin, every caller header follows", async () => {
    a.route("/same", redirectRoute("/final"));
    const r = await fetchVia(a.url("/same"));
    expect(r.finalUrl).toBe(a.url("/final"));
    const hop = a.requests.at(-1)!;
    expect(hop.path).toBe("/final");
    expect(hop.headers["x-api-key"]).toBe("k-secret-123");
    expect(hop.headers["x-custom"]).toBe("custom");
  });

  test("given a hop away and back again, the dropped headers stay dropped", async () => {
    a.route("/away", redirectRoute(b.url("/back")));
    b.route("/back", redirectRoute(a.url("/final")));
    await fetchVia(a.url("/away"));
    const last = a.requests.at(-1)!;
    expect(last.path).toBe("/final");
    expect(last.headers["x-api-key"]).toBeUndefined();
  });
});
