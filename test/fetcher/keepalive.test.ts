/**
 * Connection reuse (HTTP/1.1 keep-alive, seeder/node/fetcher/keepalive.ts), counted where it cannot be
 * faked: at the origin (TCP connections accepted) and at the proxy (connections microsocks made,
 * tunnels the CONNECT proxy opened). Reuse must never weaken a guarantee: every request is still
 * resolved and checked, a connection only carries a request that would have opened an identical
 * one (same checked address, port, scheme, host name/SNI, proxy, TLS settings), and a connection
 * whose response was not read to its end, errored, was aborted, or said `Connection: close` is
 * never reused. A reused connection the server had already closed costs one quiet retry, never
 * a failed fetch; a fresh one is never retried.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  bytesRoute,
  compress,
  type Origin,
  redirectRoute,
  stallRoute,
  startOrigin,
  statusRoute,
  textRoute,
} from "../support/origin";
import { until } from "../support/poll";
import { type Microsocks, startMicrosocks } from "../support/socks";
import { startConnectProxy } from "./connect-proxy";
import {
  fetchError,
  get,
  type Harness,
  harness,
  loopbackDialer,
  mapResolver,
  STAND_IN_PUBLIC,
} from "./helpers";
import { ok, type RawOrigin, startRawOrigin } from "./raw-origin";
import { TEST_CERT, TEST_KEY } from "./tls-fixture";

const base = { EGRESS__ALLOW_PRIVATE_NETWORKS: "true", FETCHER__MIME_WHITELIST: "*/*" };

const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function newOrigin(...args: Parameters<typeof startOrigin>): Promise<Origin> {
  const o = await startOrigin(...args);
  cleanups.push(() => o.close());
  return o;
}

async function newRawOrigin(...args: Parameters<typeof startRawOrigin>): Promise<RawOrigin> {
  const o = await startRawOrigin(...args);
  cleanups.push(() => o.close());
  return o;
}

async function withHarness(
  fn: (h: Harness) => Promise<void>,
  env: Record<string, string> = {},
  deps: Parameters<typeof harness>[1] = {},
) {
  const h = await harness({ ...base, ...env }, deps);
  try {
    await fn(h);
    expect(await h.store.tempFiles()).toEqual([]);
  } finally {
    h.fetcher.closeIdleConnections?.();
    await h.cleanup();
  }
}

const text = async (path: string) => Bun.file(path).text();

describe("reuse where HTTP/1.1 allows it", () => {
  test("given two sequential fetches to the same origin, one TCP connection carries both", async () => {
    const data = bytesRoute({ size: 300_000, seed: 3 });
    const origin = await newOrigin({ "/hello": textRoute("hello"), "/data": data });
    await withHarness(async (h) => {
      expect(await text((await get(h, origin.url("/hello"))).path)).toBe("hello");
      expect((await get(h, origin.url("/data"))).contentHash).toBe(data.body.sha256());
      expect(origin.connections).toBe(1);
      const [a, b] = origin.requests;
      expect(b!.remotePort).toBe(a!.remotePort);
    });
  });

  test("given many sequential fetches, they all share the connection and every name is resolved each time", async () => {
    const origin = await newOrigin({ "/hello": textRoute("hello") });
    const dns = mapResolver({ "origin.test": ["127.0.0.1"] });
    await withHarness(
      async (h) => {
        for (let i = 0; i < 5; i++) await get(h, `http://origin.test:${origin.port}/hello`);
        expect(origin.connections).toBe(1);
        // Reuse never skips the gate: resolve + check ran for every request.
        expect(dns.calls.length).toBe(5);
      },
      {},
      { resolve: dns.resolve },
    );
  });

  test("given a redirect to the same origin, the next hop rides the same connection", async () => {
    const origin = await newOrigin({
      "/moved": redirectRoute("/final", 302),
      "/final": textRoute("arrived"),
    });
    await withHarness(async (h) => {
      const r = await get(h, origin.url("/moved"));
      expect(r.finalUrl).toBe(origin.url("/final"));
      expect(await text(r.path)).toBe("arrived");
      expect(origin.count()).toBe(2);
      expect(origin.connections).toBe(1);
    });
  });

  test("given a resumed body, the resume request needs a new connection but the next fetch reuses it", async () => {
    const route = bytesRoute({ size: 2_000_000, seed: 9, ranges: true, dropAfter: 700_000 });
    const origin = await newOrigin({ "/cut": route, "/hello": textRoute("hello") });
    await withHarness(async (h) => {
      expect((await get(h, origin.url("/cut"))).contentHash).toBe(route.body.sha256());
      expect(origin.connections).toBe(2); // the cut one, and the one the Range request opened
      await get(h, origin.url("/hello"));
      expect(origin.connections).toBe(2);
    });
  });

  test("given https, the TLS connection is reused for the same host name", async () => {
    const tlsOrigin = await newOrigin(
      { "/hello": textRoute("hello over tls") },
      { tls: { cert: TEST_CERT, key: TEST_KEY } },
    );
    const dialer = loopbackDialer({ [STAND_IN_PUBLIC]: tlsOrigin.port });
    const dns = mapResolver({ "public.test": [STAND_IN_PUBLIC] });
    await withHarness(
      async (h) => {
        await get(h, "https://public.test/hello");
        await get(h, "https://public.test/hello");
        expect(tlsOrigin.connections).toBe(1);
        expect(dialer.calls.length).toBe(1);
        expect(dns.calls.length).toBe(2);
      },
      { EGRESS__ALLOW_PRIVATE_NETWORKS: "false" },
      { dial: dialer.dial, resolve: dns.resolve, tlsCa: TEST_CERT },
    );
  });

  test("given a HEAD redirect announcing a large length, the hop still reuses the connection", async () => {
    const origin = await newOrigin({
      "/moved": (_req, res) => {
        res.writeHead(301, { location: "/final", "content-type": "text/plain", "content-length": "5000000" });
        res.end();
      },
      "/final": textRoute("arrived"),
    });
    await withHarness(async (h) => {
      const r = await h.fetcher.fetch(
        { url: origin.url("/moved"), method: "HEAD", headers: {} },
        { signal: new AbortController().signal },
      );
      expect(r.finalUrl).toBe(origin.url("/final"));
      expect(origin.requests.map((q) => q.method)).toEqual(["HEAD", "HEAD"]);
      expect(origin.connections).toBe(1);
    });
  });

  test("given many concurrent fetches in rounds, every body is right and connections are shared", async () => {
    const routes = Object.fromEntries(
      Array.from({ length: 8 }, (_, i) => [`/b${i}`, bytesRoute({ size: 20_000 + i * 1000, seed: 100 + i })]),
    );
    const origin = await newOrigin(routes);
    await withHarness(async (h) => {
      for (let round = 0; round < 3; round++) {
        const results = await Promise.all(Object.keys(routes).map((p) => get(h, origin.url(p))));
        expect(results.map((r) => r.contentHash)).toEqual(Object.values(routes).map((r) => r.body.sha256()));
      }
      expect(origin.count()).toBe(24);
      // At most 8 at once; 4 of them stay idle between rounds (maxIdlePerKey), so at most 8 + 4 + 4.
      expect(origin.connections).toBeLessThanOrEqual(16);
      expect(origin.connections).toBeGreaterThanOrEqual(8);
    });
  });

  test("given POST requests, each gets a fresh connection (never retried on a stale one)", async () => {
    const origin = await newOrigin({ "/post": textRoute("posted") });
    await withHarness(async (h) => {
      const post = () =>
        h.fetcher.fetch(
          { url: origin.url("/post"), method: "POST", headers: {}, body: "x" },
          { signal: new AbortController().signal },
        );
      await post();
      await post();
      expect(origin.connections).toBe(2);
      // Both went back to the pool: a GET takes one of them.
      await get(h, origin.url("/post"));
      expect(origin.connections).toBe(2);
    });
  });

  test("given FETCHER limits with idleTimeoutMs 0, every request opens its own connection and says close", async () => {
    const origin = await newOrigin({ "/hello": textRoute("hello") });
    await withHarness(
      async (h) => {
        await get(h, origin.url("/hello"));
        await get(h, origin.url("/hello"));
        expect(origin.connections).toBe(2);
        expect(origin.requests.at(-1)!.headers.connection).toBe("close");
      },
      {},
      { limits: { idleTimeoutMs: 0 } },
    );
  });
});

describe("through a proxy", () => {
  let socks: Microsocks;
  beforeAll(async () => {
    socks = await startMicrosocks({ user: "alice", password: "s3cret" });
  });
  afterAll(async () => {
    await socks.stop();
  });

  for (const scheme of ["socks5", "socks5h"] as const)
    test(`given ${scheme}, two fetches use one SOCKS session and one origin connection`, async () => {
      const origin = await newOrigin({ "/hello": textRoute("hello"), "/other": textRoute("other") });
      const dialer = loopbackDialer();
      const host = scheme === "socks5h" ? "localhost" : "127.0.0.1";
      await withHarness(
        async (h) => {
          await get(h, `http://${host}:${origin.port}/hello`);
          await get(h, `http://${host}:${origin.port}/other`);
          expect(socks.connectedTo(origin.port)).toBe(1);
          expect(origin.connections).toBe(1);
          expect(dialer.calls).toEqual([{ host: "127.0.0.1", port: socks.port }]);
        },
        { PROXY__PROXY_URL: socks.url(scheme) },
        { dial: dialer.dial },
      );
    });

  test("given an HTTP CONNECT proxy, two fetches use one tunnel", async () => {
    const origin = await newOrigin({ "/hello": textRoute("hello") });
    const proxy = await startConnectProxy();
    cleanups.push(() => proxy.close());
    await withHarness(
      async (h) => {
        await get(h, origin.url("/hello"));
        await get(h, origin.url("/hello"));
        expect(proxy.tunnels).toBe(1);
        expect(origin.connections).toBe(1);
      },
      { PROXY__PROXY_URL: proxy.url() },
    );
  });
});

describe("never shared across identities", () => {
  test("given a name that now resolves to another checked address, the old connection is not used", async () => {
    // Given one origin listening on 127.0.0.1 and 127.0.0.2 (same port; Linux routes 127/8 to lo)
    const raw = await newRawOrigin(() => ({ send: ok("hi") }), { hosts: ["127.0.0.1", "127.0.0.2"] });
    const table: Record<string, string[]> = { "moving.test": ["127.0.0.1"] };
    const dns = mapResolver(table);
    await withHarness(
      async (h) => {
        const url = `http://moving.test:${raw.port}/x`;
        await get(h, url);
        // When the name moves to another address
        table["moving.test"] = ["127.0.0.2"];
        await get(h, url);
        // Then the second request went to the new address, on a new connection
        expect(raw.connections).toBe(2);
        expect(raw.requests.map((r) => [r.conn, r.localAddress])).toEqual([
          [1, "127.0.0.1"],
          [2, "127.0.0.2"],
        ]);
        // And back again: the connection to 127.0.0.1 is still the right one for 127.0.0.1
        table["moving.test"] = ["127.0.0.1"];
        await get(h, url);
        expect(raw.connections).toBe(2);
        expect(raw.requests.at(-1)!.conn).toBe(1);
      },
      {},
      { resolve: dns.resolve },
    );
  });

  test("given 127.0.0.1 and 127.0.0.2 URLs on the same port, they never share a connection", async () => {
    const raw = await newRawOrigin(() => ({ send: ok("hi") }), { hosts: ["127.0.0.1", "127.0.0.2"] });
    await withHarness(async (h) => {
      for (let i = 0; i < 2; i++) {
        await get(h, `http://127.0.0.1:${raw.port}/a`);
        await get(h, `http://127.0.0.2:${raw.port}/b`);
      }
      expect(raw.connections).toBe(2);
      for (const r of raw.requests)
        expect(r.localAddress).toBe(r.target === "/a" ? "127.0.0.1" : "127.0.0.2");
    });
  });

  test("given DNS rebinding to loopback after a good fetch, the guard refuses and no idle connection is used", async () => {
    // Given public.test -> a public address (routed to a loopback origin by the test dialler)
    const origin = await newOrigin({ "/hello": textRoute("hello") });
    const dialer = loopbackDialer({ [STAND_IN_PUBLIC]: origin.port });
    const table: Record<string, string[]> = { "public.test": [STAND_IN_PUBLIC] };
    const dns = mapResolver(table);
    await withHarness(
      async (h) => {
        await get(h, "http://public.test/hello");
        expect(origin.count()).toBe(1);
        // When the name now resolves to loopback, while a connection to the old address is idle
        table["public.test"] = ["127.0.0.1"];
        const e = await fetchError(h, "http://public.test/hello");
        // Then the check refused it, and the idle connection carried nothing
        expect(e.code).toBe("egress_refused");
        expect(origin.count()).toBe(1);
        expect(dialer.calls.length).toBe(1);
      },
      { EGRESS__ALLOW_PRIVATE_NETWORKS: "false" },
      { dial: dialer.dial, resolve: dns.resolve },
    );
  });

  test("given two host names on the same address over https, each gets its own connection (SNI, certificate)", async () => {
    const tlsOrigin = await newOrigin(
      { "/hello": textRoute("tls") },
      { tls: { cert: TEST_CERT, key: TEST_KEY } },
    );
    const dialer = loopbackDialer({ [STAND_IN_PUBLIC]: tlsOrigin.port });
    const dns = mapResolver({ "public.test": [STAND_IN_PUBLIC], "other.test": [STAND_IN_PUBLIC] });
    await withHarness(
      async (h) => {
        await get(h, "https://public.test/hello");
        await get(h, "https://other.test/hello");
        expect(tlsOrigin.connections).toBe(2);
        expect(tlsOrigin.requests.map((r) => r.servername)).toEqual(["public.test", "other.test"]);
      },
      { EGRESS__ALLOW_PRIVATE_NETWORKS: "false", FETCHER__VERIFY_SSL: "false" },
      { dial: dialer.dial, resolve: dns.resolve },
    );
  });

  test("given http and https on the same address and port key, they never share", async () => {
    // The scheme is part of the key: an http request never goes out on a TLS connection.
    const tlsOrigin = await newOrigin(
      { "/hello": textRoute("tls") },
      { tls: { cert: TEST_CERT, key: TEST_KEY } },
    );
    await withHarness(
      async (h) => {
        await get(h, `https://127.0.0.1:${tlsOrigin.port}/hello`);
        const e = await fetchError(h, `http://127.0.0.1:${tlsOrigin.port}/hello`);
        expect(["bad_response", "network"]).toContain(e.code);
        expect(tlsOrigin.connections).toBe(2);
      },
      { FETCHER__VERIFY_SSL: "false" },
    );
  });

  test("given two fetchers (different proxy settings), they never share a connection", async () => {
    const origin = await newOrigin({ "/hello": textRoute("hello") });
    const a = await harness(base);
    const b = await harness(base);
    try {
      await get(a, origin.url("/hello"));
      await get(b, origin.url("/hello"));
      expect(origin.connections).toBe(2);
    } finally {
      await a.cleanup();
      await b.cleanup();
    }
  });
});

describe("never reused after an unfinished response", () => {
  test("given a fetch aborted mid-body, its connection is closed, not reused", async () => {
    const origin = await newOrigin({
      "/stall": stallRoute({ afterHead: true, bytes: 1000 }),
      "/hello": textRoute("hello"),
    });
    await withHarness(async (h) => {
      const ac = new AbortController();
      let received = 0;
      const pending = fetchError(h, origin.url("/stall"), {
        signal: ac.signal,
        onProgress: (n) => (received = n),
      });
      // mid-body: some of the 1000 bytes have been written
      await until(() => received > 0, "the first body bytes", 10_000);
      ac.abort();
      expect((await pending).code).toBe("aborted");
      await get(h, origin.url("/hello"));
      expect(origin.connections).toBe(2);
    });
  });

  test("given a body refused for its size while streaming, the connection is not reused", async () => {
    const origin = await newOrigin({
      "/big": bytesRoute({ size: 500_000, contentLength: false }),
      "/hello": textRoute("hello"),
    });
    await withHarness(
      async (h) => {
        expect((await fetchError(h, origin.url("/big"))).code).toBe("too_large");
        await get(h, origin.url("/hello"));
        expect(origin.connections).toBe(2);
      },
      { FETCHER__MAX_SIZE: "100000" },
    );
  });

  test("given a response refused before its body was read (MIME, status), the connection is not reused", async () => {
    const origin = await newOrigin({
      "/html": textRoute("<p>no</p>", { contentType: "text/html" }),
      "/missing": statusRoute(404),
      "/ok": textRoute("ok"),
    });
    await withHarness(
      async (h) => {
        expect((await fetchError(h, origin.url("/html"))).code).toBe("mime_refused");
        expect((await fetchError(h, origin.url("/missing"))).code).toBe("http_status");
        await get(h, origin.url("/ok"));
        expect(origin.connections).toBe(3);
      },
      { FETCHER__MIME_WHITELIST: "text/plain" },
    );
  });

  test("given a body that fails to decode, the connection is not reused", async () => {
    const good = compress(Buffer.from("x".repeat(10_000)), "gzip");
    const broken = Buffer.concat([good.subarray(0, 20), Buffer.alloc(200, 0x41)]);
    const origin = await newOrigin({
      "/broken": textRoute(broken, { headers: { "content-encoding": "gzip" } }),
      "/hello": textRoute("hello"),
    });
    await withHarness(async (h) => {
      expect((await fetchError(h, origin.url("/broken"))).code).toBe("bad_response");
      await get(h, origin.url("/hello"));
      expect(origin.connections).toBe(2);
    });
  });

  test("given a response that says Connection: close (socket left open), the next fetch opens a new connection", async () => {
    const raw = await newRawOrigin((r) =>
      r.target === "/close" ? { send: ok("bye", { Connection: "close" }) } : { send: ok("hi") },
    );
    await withHarness(async (h) => {
      await get(h, `http://127.0.0.1:${raw.port}/close`);
      await get(h, `http://127.0.0.1:${raw.port}/next`);
      expect(raw.connections).toBe(2);
      expect(raw.requests.map((r) => [r.conn, r.nth])).toEqual([
        [1, 1],
        [2, 1],
      ]);
    });
  });

  test("given a large redirect body, it is not read: the connection is closed and the hop opens another", async () => {
    const origin = await newOrigin({
      "/moved": (_req, res) => {
        const body = Buffer.alloc(1_000_000, 0x61);
        res.writeHead(302, {
          location: "/final",
          "content-type": "text/plain",
          "content-length": body.length,
        });
        res.end(body);
      },
      "/final": textRoute("arrived"),
    });
    await withHarness(async (h) => {
      expect(await text((await get(h, origin.url("/moved"))).path)).toBe("arrived");
      expect(origin.connections).toBe(2);
    });
  });
});

describe("idle connections", () => {
  test("given a server that closes idle connections sooner than we would, the next fetch still succeeds", async () => {
    const raw = await newRawOrigin(() => ({ send: ok("hi") }), { idleCloseMs: 50 });
    await withHarness(async (h) => {
      await get(h, `http://127.0.0.1:${raw.port}/a`);
      await until(() => raw.closed === 1, "the server to close the idle connection", 10_000);
      await get(h, `http://127.0.0.1:${raw.port}/b`);
      expect(raw.connections).toBe(2);
    });
  });

  test("given a reused connection the server closes as the request arrives, it is retried once on a fresh connection", async () => {
    // The server answers the first request on a connection and cuts it on the second: what a
    // client sees when its request crosses the server's keep-alive close.
    const raw = await newRawOrigin((r) => (r.nth === 1 ? { send: ok(`hi ${r.conn}`) } : { cut: true }));
    await withHarness(async (h) => {
      await get(h, `http://127.0.0.1:${raw.port}/a`);
      const r = await get(h, `http://127.0.0.1:${raw.port}/b`);
      expect(await text(r.path)).toBe("hi 2");
      expect(raw.requests.map((q) => [q.conn, q.nth, q.target])).toEqual([
        [1, 1, "/a"],
        [1, 2, "/b"],
        [2, 1, "/b"],
      ]);
    });
  });

  test("given a fresh connection cut before any answer, there is no retry", async () => {
    const raw = await newRawOrigin(() => ({ cut: true }));
    await withHarness(async (h) => {
      const e = await fetchError(h, `http://127.0.0.1:${raw.port}/a`);
      expect(e.code).toBe("network");
      expect(raw.connections).toBe(1);
      expect(raw.requests.length).toBe(1);
    });
  });

  test("given a retry that also fails, the fetch fails (one retry only)", async () => {
    // First connection: answers once, then cuts. Every later connection: cuts at once.
    const raw = await newRawOrigin((r) => (r.conn === 1 && r.nth === 1 ? { send: ok("hi") } : { cut: true }));
    await withHarness(async (h) => {
      await get(h, `http://127.0.0.1:${raw.port}/a`);
      const e = await fetchError(h, `http://127.0.0.1:${raw.port}/b`);
      expect(e.code).toBe("network");
      expect(raw.connections).toBe(2);
      expect(raw.requests.length).toBe(3);
    });
  });

  test("given a reused connection that answers partly and then breaks, it is not retried as stale", async () => {
    // Second request on the connection: half a status line, then the cut.
    const raw = await newRawOrigin((r) =>
      r.nth === 1 ? { send: ok("hi") } : { send: "HTTP/1.1 200 O", thenClose: true },
    );
    await withHarness(async (h) => {
      await get(h, `http://127.0.0.1:${raw.port}/a`);
      const e = await fetchError(h, `http://127.0.0.1:${raw.port}/b`);
      expect(["network", "bad_response"]).toContain(e.code);
      expect(raw.connections).toBe(1);
    });
  });

  test("given our idle timeout, an unused connection is closed by us", async () => {
    const raw = await newRawOrigin(() => ({ send: ok("hi") }));
    await withHarness(
      async (h) => {
        await get(h, `http://127.0.0.1:${raw.port}/a`);
        expect(raw.closed).toBe(0);
        const deadline = Date.now() + 3000;
        while (raw.closed === 0 && Date.now() < deadline) await Bun.sleep(20);
        expect(raw.closed).toBe(1);
        await get(h, `http://127.0.0.1:${raw.port}/b`);
        expect(raw.connections).toBe(2);
      },
      {},
      { limits: { idleTimeoutMs: 150 } },
    );
  });

  test("given a Keep-Alive timeout hint from the server, the connection is kept no longer than it allows", async () => {
    // timeout=1 leaves no time after the Agent's 1 s safety margin: not kept at all.
    const raw = await newRawOrigin(() => ({ send: ok("hi", { "Keep-Alive": "timeout=1" }) }));
    await withHarness(async (h) => {
      await get(h, `http://127.0.0.1:${raw.port}/a`);
      await get(h, `http://127.0.0.1:${raw.port}/b`);
      expect(raw.connections).toBe(2);
    });
  });

  test("given maxIdleTotal 1, a second origin's connection is not kept while the first is idle", async () => {
    const a = await newOrigin({ "/hello": textRoute("a") });
    const b = await newOrigin({ "/hello": textRoute("b") });
    await withHarness(
      async (h) => {
        await get(h, a.url("/hello"));
        await get(h, b.url("/hello")); // the pool is full (a's connection): b's is closed
        await get(h, a.url("/hello"));
        await get(h, b.url("/hello"));
        expect(a.connections).toBe(1);
        expect(b.connections).toBe(2);
      },
      {},
      { limits: { maxIdleTotal: 1 } },
    );
  });

  test("given concurrent fetches, at most maxIdlePerKey connections are kept", async () => {
    const slow = bytesRoute({ size: 64 * 1024 * 4, chunkDelayMs: 30 });
    const origin = await newOrigin({ "/slow": slow });
    await withHarness(
      async (h) => {
        await Promise.all([1, 2, 3].map(() => get(h, origin.url("/slow"))));
        expect(origin.connections).toBe(3);
        // the pool settles: the two connections over maxIdlePerKey are closed
        await until(() => origin.open === 1, "one idle connection left", 10_000);
        await Promise.all([1, 2, 3].map(() => get(h, origin.url("/slow"))));
        // Only one of the three stayed idle: two more connections were needed.
        expect(origin.connections).toBe(5);
      },
      {},
      { limits: { maxIdlePerKey: 1 } },
    );
  });
});
