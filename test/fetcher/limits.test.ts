/**
 * What the fetcher refuses or gives up on, and what it leaves behind (nothing): size cap,
 * decompression bombs, MIME whitelist, status codes, timeouts, cancellation, redirect limits.
 * Every failure test also checks that the store's temp directory is empty afterwards.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  bytesRoute,
  compressedRoute,
  gzipBomb,
  type Origin,
  PatternBody,
  redirectRoute,
  stallRoute,
  startOrigin,
  statusRoute,
  textRoute,
} from "../support/origin";
import { fetchError, get, type Harness, harness, loopbackDialer } from "./helpers";

let origin: Origin;
beforeAll(async () => {
  origin = await startOrigin();
});
afterAll(async () => {
  await origin.close();
});

const base = { EGRESS__ALLOW_PRIVATE_NETWORKS: "true" };

async function withHarness(env: Record<string, string>, fn: (h: Harness) => Promise<void>, deps = {}) {
  const h = await harness({ ...base, ...env }, deps);
  try {
    await fn(h);
    expect(await h.store.tempFiles()).toEqual([]);
  } finally {
    await h.cleanup();
  }
}

describe("size cap (FETCHER__MAX_SIZE, decoded bytes)", () => {
  const MAX = 100_000;
  const env = { FETCHER__MAX_SIZE: String(MAX), FETCHER__MIME_WHITELIST: "*/*" };

  test("given a Content-Length above the cap, it is refused before the body is read", async () => {
    origin.route("/big-cl", bytesRoute({ size: MAX + 1 }));
    await withHarness(env, async (h) => {
      const e = await fetchError(h, origin.url("/big-cl"));
      expect(e.code).toBe("too_large");
      expect(e.transient).toBe(false);
      expect(e.message).toBe(`The body is ${MAX + 1} bytes, larger than the limit of ${MAX} bytes`);
    });
  });

  test("given a chunked body (no Content-Length) that grows past the cap, it is cut while streaming", async () => {
    origin.route("/big-chunked", bytesRoute({ size: 5 * MAX, contentLength: false }));
    await withHarness(env, async (h) => {
      const e = await fetchError(h, origin.url("/big-chunked"));
      expect(e.code).toBe("too_large");
      expect(e.message).toBe(`The body is larger than the limit of ${MAX} bytes`);
    });
  });

  test("given a body of exactly the cap, it is stored", async () => {
    origin.route("/exact", bytesRoute({ size: MAX, contentLength: false, seed: 4 }));
    await withHarness(env, async (h) => {
      const r = await get(h, origin.url("/exact"));
      expect(r.size).toBe(MAX);
      expect(r.contentHash).toBe(new PatternBody(MAX, 4).sha256());
    });
  });

  test("given a gzip bomb, decoding stops at the cap", async () => {
    origin.route("/bomb", textRoute(gzipBomb(64 * 1024 * 1024), { headers: { "content-encoding": "gzip" } }));
    await withHarness(env, async (h) => {
      const e = await fetchError(h, origin.url("/bomb"));
      expect(e.code).toBe("too_large");
    });
  });

  test("given a gzip bomb under a generous cap, the decompression-ratio guard refuses it", async () => {
    origin.route(
      "/bomb2",
      textRoute(gzipBomb(64 * 1024 * 1024), { headers: { "content-encoding": "gzip" } }),
    );
    await withHarness({ FETCHER__MAX_SIZE: String(1 << 30), FETCHER__MIME_WHITELIST: "*/*" }, async (h) => {
      const e = await fetchError(h, origin.url("/bomb2"));
      expect(e.code).toBe("too_large");
      expect(e.message).toMatch(/decompression bomb/);
    });
  });

  test("given gzip, deflate and br bodies, each is stored decoded", async () => {
    const text = Buffer.from("ProxyTorrent stores decoded bytes. ".repeat(2000));
    for (const coding of ["gzip", "deflate", "br"] as const) {
      origin.route(`/enc-${coding}`, compressedRoute(text, coding));
    }
    await withHarness({ FETCHER__MIME_WHITELIST: "*/*" }, async (h) => {
      for (const coding of ["gzip", "deflate", "br"]) {
        const r = await get(h, origin.url(`/enc-${coding}`));
        expect(r.size).toBe(text.length);
        expect(await Bun.file(r.path).text()).toBe(text.toString());
      }
    });
  });

  test("given a body that claims gzip but is not, it fails as a bad response", async () => {
    origin.route("/fake-gzip", textRoute("definitely not gzip", { headers: { "content-encoding": "gzip" } }));
    await withHarness({ FETCHER__MIME_WHITELIST: "*/*" }, async (h) => {
      const e = await fetchError(h, origin.url("/fake-gzip"));
      expect(e.code).toBe("bad_response");
      expect(e.transient).toBe(false);
    });
  });
});

describe("MIME whitelist", () => {
  test("given the default whitelist, octet-stream is refused before any body is stored", async () => {
    origin.route("/bin", bytesRoute({ size: 1000 }));
    await withHarness({}, async (h) => {
      const e = await fetchError(h, origin.url("/bin"));
      expect(e.code).toBe("mime_refused");
      expect(e.message).toBe(
        "Content-Type application/octet-stream is not allowed (its operator can add it to FETCHER__MIME_WHITELIST)",
      );
      expect(e.transient).toBe(false);
    });
  });

  test("given image/*, image/png passes and 'imagex/png' does not (the original's prefix bug)", async () => {
    origin.route("/png", textRoute("png", { contentType: "IMAGE/PNG; charset=binary" }));
    origin.route("/imagex", textRoute("x", { contentType: "imagex/png" }));
    await withHarness({}, async (h) => {
      expect((await get(h, origin.url("/png"))).contentType).toBe("IMAGE/PNG; charset=binary");
      expect((await fetchError(h, origin.url("/imagex"))).code).toBe("mime_refused");
    });
  });

  test("given no Content-Type, it is refused unless the whitelist contains */*", async () => {
    origin.route("/untyped", textRoute("no type", { contentType: null }));
    await withHarness({}, async (h) => {
      const e = await fetchError(h, origin.url("/untyped"));
      expect(e.code).toBe("mime_refused");
      expect(e.message).toMatch(/no Content-Type/);
    });
    await withHarness({ FETCHER__MIME_WHITELIST: "text/plain,*/*" }, async (h) => {
      expect((await get(h, origin.url("/untyped"))).contentType).toBe("");
    });
  });
});

describe("status codes", () => {
  test("given a 404, the fetch fails permanently with the origin's words", async () => {
    await withHarness({}, async (h) => {
      const e = await fetchError(h, origin.url("/no-such-path"));
      expect(e.code).toBe("http_status");
      expect(e.status).toBe(404);
      expect(e.transient).toBe(false);
      expect(e.message).toBe("Origin answered 404 Not Found");
    });
  });

  test("given a 503 or a 429, the failure is transient", async () => {
    origin.route("/busy", statusRoute(503));
    origin.route("/slow-down", statusRoute(429));
    await withHarness({}, async (h) => {
      const e = await fetchError(h, origin.url("/busy"));
      expect([e.code, e.status, e.transient]).toEqual(["http_status", 503, true]);
      const e2 = await fetchError(h, origin.url("/slow-down"));
      expect([e2.code, e2.status, e2.transient]).toEqual(["http_status", 429, true]);
    });
  });

  test("given a HEAD request, the (empty) body is stored even though Content-Length is large", async () => {
    origin.route("/head", bytesRoute({ size: 10_000_000 }));
    await withHarness({ FETCHER__MAX_SIZE: "1000", FETCHER__MIME_WHITELIST: "*/*" }, async (h) => {
      const r = await h.fetcher.fetch(
        { url: origin.url("/head"), method: "HEAD", headers: {} },
        { signal: new AbortController().signal },
      );
      expect([r.status, r.size]).toEqual([200, 0]);
    });
  });

  test("given a 204, an empty body is stored", async () => {
    origin.route("/empty", (_req, res) => {
      res.writeHead(204, { "content-type": "text/plain" });
      res.end();
    });
    await withHarness({}, async (h) => {
      const r = await get(h, origin.url("/empty"));
      expect([r.status, r.size]).toEqual([204, 0]);
    });
  });
});

describe("timeouts and cancellation", () => {
  test("given an origin that never answers, the idle-read timeout ends the fetch", async () => {
    origin.route("/silent", stallRoute());
    await withHarness({ FETCHER__READ_TIMEOUT: "1" }, async (h) => {
      const e = await fetchError(h, origin.url("/silent"));
      expect(e.code).toBe("timeout");
      expect(e.transient).toBe(true);
      expect(e.message).toBe("The origin sent nothing for 1 s");
    });
  });

  test("given a body that stalls halfway, the idle-read timeout ends it and the temp file is removed", async () => {
    origin.route("/stall", bytesRoute({ size: 400_000, stallAfter: 150_000 }));
    await withHarness({ FETCHER__READ_TIMEOUT: "1", FETCHER__MIME_WHITELIST: "*/*" }, async (h) => {
      let seen = 0;
      const e = await h.fetcher
        .fetch(
          { url: origin.url("/stall"), method: "GET", headers: {} },
          { signal: new AbortController().signal, onProgress: (n) => (seen = n) },
        )
        .catch((x) => x);
      expect(e.code).toBe("timeout");
      expect(seen).toBe(150_000);
    });
  });

  test("given a slow body whose every gap is shorter than the idle timeout, it completes", async () => {
    // 4 chunks of 64 KiB with 300 ms between them: longer than READ_TIMEOUT in total, never idle that long.
    const route = bytesRoute({ size: 4 * 65536, seed: 8, chunkDelayMs: 300 });
    origin.route("/steady", route);
    await withHarness({ FETCHER__READ_TIMEOUT: "1", FETCHER__MIME_WHITELIST: "*/*" }, async (h) => {
      const r = await get(h, origin.url("/steady"));
      expect(r.contentHash).toBe(route.body.sha256());
    });
  });

  test("given a steady but slow body, the total deadline ends the fetch", async () => {
    origin.route("/trickle", bytesRoute({ size: 10_000_000, chunkDelayMs: 100 }));
    await withHarness({ FETCHER__TOTAL_TIMEOUT: "1", FETCHER__MIME_WHITELIST: "*/*" }, async (h) => {
      const e = await fetchError(h, origin.url("/trickle"));
      expect(e.code).toBe("timeout");
      expect(e.message).toBe("The fetch did not finish within 1 s");
    });
  });

  test("given a connection that never completes, the connect timeout ends the fetch", async () => {
    // A dialler that hangs until aborted: what a black-holed address looks like.
    const hanging = (_h: string, _p: number, signal: AbortSignal) =>
      new Promise<never>((_, reject) => signal.addEventListener("abort", () => reject(signal.reason)));
    await withHarness(
      { FETCHER__CONNECT_TIMEOUT: "1" },
      async (h) => {
        const e = await fetchError(h, origin.url("/anything"));
        expect(e.code).toBe("timeout");
        expect(e.message).toBe("Timed out connecting to 127.0.0.1 after 1 s");
      },
      { dial: hanging },
    );
  });

  test("given the caller aborts mid-body, the fetch ends as aborted and leaves no temp file", async () => {
    origin.route("/cancel-me", bytesRoute({ size: 50_000_000, chunkDelayMs: 20 }));
    await withHarness({ FETCHER__MIME_WHITELIST: "*/*" }, async (h) => {
      const ac = new AbortController();
      const p = h.fetcher.fetch(
        { url: origin.url("/cancel-me"), method: "GET", headers: {} },
        { signal: ac.signal, onProgress: (n) => n > 200_000 && ac.abort() },
      );
      const e = await p.catch((x) => x);
      expect(e.code).toBe("aborted");
      expect(e.transient).toBe(false);
      expect(e.message).toBe("The fetch was cancelled");
    });
  });

  test("given a signal aborted before the start, nothing is dialled", async () => {
    const dialer = loopbackDialer();
    await withHarness(
      {},
      async (h) => {
        const ac = new AbortController();
        ac.abort();
        const e = await fetchError(h, origin.url("/x"), { signal: ac.signal });
        expect(e.code).toBe("aborted");
        expect(dialer.calls).toEqual([]);
      },
      { dial: dialer.dial },
    );
  });
});

describe("redirects", () => {
  test("given a chain longer than FETCHER__MAX_REDIRECTS, the fetch fails", async () => {
    for (let i = 0; i < 4; i++) origin.route(`/r${i}`, redirectRoute(`/r${i + 1}`, 302));
    origin.route("/r4", textRoute("end of chain"));
    await withHarness({ FETCHER__MAX_REDIRECTS: "3" }, async (h) => {
      const e = await fetchError(h, origin.url("/r0"));
      expect(e.code).toBe("too_many_redirects");
      expect(e.message).toBe("More than 3 redirects");
    });
    await withHarness({ FETCHER__MAX_REDIRECTS: "4" }, async (h) => {
      const r = await get(h, origin.url("/r0"));
      expect(r.finalUrl).toBe(origin.url("/r4"));
    });
  });

  test("given a 303 after a POST, the next hop is a GET without the body", async () => {
    origin.route("/post-303", redirectRoute("/landing", 303));
    origin.route("/landing", textRoute("landed"));
    await withHarness({}, async (h) => {
      await h.fetcher.fetch(
        {
          url: origin.url("/post-303"),
          method: "POST",
          headers: { "content-type": "text/plain" },
          body: "payload",
        },
        { signal: new AbortController().signal },
      );
      const [post, landing] = origin.requests
        .filter((r) => r.path === "/post-303" || r.path === "/landing")
        .slice(-2);
      expect([post!.method, post!.body.toString()]).toEqual(["POST", "payload"]);
      expect([landing!.method, landing!.body.length, landing!.headers["content-type"]]).toEqual([
        "GET",
        0,
        undefined,
      ]);
    });
  });

  test("given a 307 after a POST, the method and body are kept", async () => {
    origin.route("/post-307", redirectRoute("/echo-307", 307));
    origin.route("/echo-307", textRoute("ok"));
    await withHarness({}, async (h) => {
      await h.fetcher.fetch(
        { url: origin.url("/post-307"), method: "POST", headers: {}, body: "keep me" },
        { signal: new AbortController().signal },
      );
      const last = origin.requests.at(-1)!;
      expect([last.path, last.method, last.body.toString()]).toEqual(["/echo-307", "POST", "keep me"]);
    });
  });
});

describe("request headers", () => {
  test("given caller headers, hop-by-hop, proxy and credential headers are dropped and the rest forwarded", async () => {
    origin.route("/headers", textRoute("ok"));
    await withHarness({ FETCHER__USER_AGENT: "PT-Test/1" }, async (h) => {
      await get(h, origin.url("/headers"), {
        "X-Custom": "kept",
        Accept: "text/plain",
        Authorization: "Bearer caller-token",
        Cookie: "session=1",
        "X-Signature": "abc",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        Connection: "keep-alive, X-Custom",
        "Keep-Alive": "timeout=5",
        TE: "trailers",
        Upgrade: "websocket",
        Host: "evil.example",
        "Accept-Encoding": "zstd",
      });
      const got = origin.requests.at(-1)!.headers;
      expect(got["x-custom"]).toBe("kept");
      expect(got.accept).toBe("text/plain");
      expect(got["user-agent"]).toBe("PT-Test/1");
      expect(got.host).toBe(`127.0.0.1:${origin.port}`);
      expect(got["accept-encoding"]).toBe("gzip, deflate, br");
      for (const dropped of [
        "authorization",
        "cookie",
        "x-signature",
        "proxy-authorization",
        "keep-alive",
        "te",
        "upgrade",
      ])
        expect(got[dropped]).toBeUndefined();
      // Ours (the keep-alive agent, keepalive.ts), never the caller's "keep-alive, X-Custom".
      expect(got.connection).toBe("keep-alive");
    });
  });

  test("given the caller's own User-Agent, it replaces FETCHER__USER_AGENT", async () => {
    origin.route("/ua", textRoute("ok"));
    await withHarness({}, async (h) => {
      await get(h, origin.url("/ua"), { "user-agent": "Caller/2" });
      expect(origin.requests.at(-1)!.headers["user-agent"]).toBe("Caller/2");
    });
  });

  test("given a header value with CR/LF or a CONNECT method, nothing is sent", async () => {
    const dialer = loopbackDialer();
    await withHarness(
      {},
      async (h) => {
        expect(
          (await fetchError(h, origin.url("/x"), { headers: { "X-A": "a\r\nX-Injected: 1" } })).code,
        ).toBe("bad_request");
        expect((await fetchError(h, origin.url("/x"), { method: "CONNECT" })).code).toBe("bad_request");
        expect((await fetchError(h, origin.url("/x"), { method: "GE T" })).code).toBe("bad_request");
        expect(dialer.calls).toEqual([]);
      },
      { dial: dialer.dial },
    );
  });
});
