/**
 * Proxies, fail-closed: a real SOCKS5 server (microsocks, with a password) and a small HTTP
 * CONNECT proxy, both on loopback. Proof that traffic crossed the proxy comes from the proxy's own
 * record (microsocks logs each connection it makes for a client); proof that nothing went around
 * it comes from the origin's connection count when the proxy refuses or is down.
 *
 * Origins here are on loopback, so these tests run with EGRESS__ALLOW_PRIVATE_NETWORKS=true
 * (the guard itself is covered in ssrf.test.ts).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { bytesRoute, type Origin, startOrigin, textRoute } from "../support/origin";
import { freeLoopbackPort, type Microsocks, startMicrosocks } from "../support/socks";
import { type ConnectProxy, startConnectProxy } from "./connect-proxy";
import { fetchError, get, harness, loopbackDialer } from "./helpers";
import { TEST_CERT, TEST_KEY } from "./tls-fixture";

const USER = "alice";
const PASSWORD = "s3cr:t@/%p w"; // every character that breaks naive URL building

const data = bytesRoute({ size: 300_000, seed: 11 });
let origin: Origin;
let tlsOrigin: Origin;
let socks: Microsocks;
beforeAll(async () => {
  origin = await startOrigin({ "/data": data, "/hello": textRoute("hello") });
  tlsOrigin = await startOrigin(
    { "/hello": textRoute("hello over tls") },
    { tls: { cert: TEST_CERT, key: TEST_KEY } },
  );
  socks = await startMicrosocks({ user: USER, password: PASSWORD });
});
afterAll(async () => {
  await socks.stop();
  await origin.close();
  await tlsOrigin.close();
});

const base = { EGRESS__ALLOW_PRIVATE_NETWORKS: "true", FETCHER__MIME_WHITELIST: "*/*" };

describe("SOCKS5 with a password (microsocks)", () => {
  test("given socks5 with the right password, the body arrives and the proxy made the connection", async () => {
    const dialer = loopbackDialer();
    const h = await harness({ ...base, PROXY__PROXY_URL: socks.url("socks5") }, { dial: dialer.dial });
    try {
      const before = socks.connectedTo(origin.port);
      const r = await get(h, origin.url("/data"));
      expect(r.contentHash).toBe(data.body.sha256());
      expect(socks.connectedTo(origin.port)).toBe(before + 1);
      // Fail-closed by construction: the only socket the fetcher opened went to the proxy.
      expect(dialer.calls).toEqual([{ host: "127.0.0.1", port: socks.port }]);
    } finally {
      await h.cleanup();
    }
  });

  test("given socks5h, the proxy resolves the name and makes the connection", async () => {
    const h = await harness({ ...base, PROXY__PROXY_URL: socks.url("socks5h") });
    try {
      const before = socks.connectedTo(origin.port);
      const r = await get(h, `http://localhost:${origin.port}/hello`);
      expect(await Bun.file(r.path).text()).toBe("hello");
      expect(socks.connectedTo(origin.port)).toBe(before + 1);
    } finally {
      await h.cleanup();
    }
  });

  test("given the separate PROXY__* settings, the same proxy is used", async () => {
    const h = await harness({
      ...base,
      PROXY__PROXY_ENABLED: "true",
      PROXY__PROXY_TYPE: "socks5",
      PROXY__PROXY_HOST: "127.0.0.1",
      PROXY__PROXY_PORT: String(socks.port),
      PROXY__PROXY_USERNAME: USER,
      PROXY__PROXY_PASSWORD: PASSWORD,
    });
    try {
      const before = socks.connectedTo(origin.port);
      await get(h, origin.url("/hello"));
      expect(socks.connectedTo(origin.port)).toBe(before + 1);
    } finally {
      await h.cleanup();
    }
  });

  test("given an https origin, TLS runs through the tunnel with SNI and verification", async () => {
    const h = await harness({ ...base, PROXY__PROXY_URL: socks.url("socks5h") }, { tlsCa: TEST_CERT });
    try {
      const before = socks.connectedTo(tlsOrigin.port);
      const r = await get(h, `https://localhost:${tlsOrigin.port}/hello`);
      expect(await Bun.file(r.path).text()).toBe("hello over tls");
      expect(tlsOrigin.requests.at(-1)!.servername).toBe("localhost");
      expect(socks.connectedTo(tlsOrigin.port)).toBe(before + 1);
    } finally {
      await h.cleanup();
    }
  });

  test("given a wrong password, the fetch fails and the origin sees nothing", async () => {
    const wrong = `socks5://${USER}:${encodeURIComponent("wrong-password")}@127.0.0.1:${socks.port}`;
    const h = await harness({ ...base, PROXY__PROXY_URL: wrong });
    try {
      const connections = origin.connections;
      const e = await fetchError(h, origin.url("/data"));
      expect(e.code).toBe("proxy_failed");
      expect(e.transient).toBe(false);
      expect(e.message).toBe("The proxy rejected our credentials");
      expect(origin.connections).toBe(connections);
      expect(await h.store.tempFiles()).toEqual([]);
    } finally {
      await h.cleanup();
    }
  });

  test("given no credentials for a proxy that requires them, the fetch fails and the origin sees nothing", async () => {
    const h = await harness({ ...base, PROXY__PROXY_URL: `socks5://127.0.0.1:${socks.port}` });
    try {
      const connections = origin.connections;
      const e = await fetchError(h, origin.url("/data"));
      expect(e.code).toBe("proxy_failed");
      expect(origin.connections).toBe(connections);
    } finally {
      await h.cleanup();
    }
  });

  test("given the proxy is down, the fetch fails (transient) and the origin sees nothing", async () => {
    const deadPort = await freeLoopbackPort();
    const h = await harness({ ...base, PROXY__PROXY_URL: `socks5h://${USER}:x@127.0.0.1:${deadPort}` });
    try {
      const connections = origin.connections;
      const e = await fetchError(h, origin.url("/data"));
      expect(e.code).toBe("proxy_failed");
      expect(e.transient).toBe(true);
      expect(e.message).toBe("Could not connect to the proxy (connection refused)");
      expect(origin.connections).toBe(connections);
    } finally {
      await h.cleanup();
    }
  });

  test("given the origin refuses the proxy's connection, the error says so without naming the proxy", async () => {
    const deadPort = await freeLoopbackPort();
    const h = await harness({ ...base, PROXY__PROXY_URL: socks.url("socks5") });
    try {
      const e = await fetchError(h, `http://127.0.0.1:${deadPort}/`);
      expect(e.code).toBe("network");
      expect(e.transient).toBe(true);
      expect(e.message).toBe("Could not connect to 127.0.0.1 through the proxy (connection refused)");
    } finally {
      await h.cleanup();
    }
  });

  test("given any proxy failure, the message never contains the credentials or the proxy's port", async () => {
    const wrong = `socks5://${USER}:${encodeURIComponent(PASSWORD)}x@127.0.0.1:${socks.port}`;
    const h = await harness({ ...base, PROXY__PROXY_URL: wrong });
    try {
      const e = await fetchError(h, origin.url("/data"));
      const text = `${e.message} ${e.detail ?? ""} ${JSON.stringify(e)}`;
      expect(text).not.toContain(PASSWORD);
      expect(text).not.toContain(USER);
      expect(text).not.toContain(String(socks.port));
    } finally {
      await h.cleanup();
    }
  });
});

describe("HTTP CONNECT proxy", () => {
  let proxy: ConnectProxy;
  beforeAll(async () => {
    proxy = await startConnectProxy({ user: USER, password: PASSWORD });
  });
  afterAll(async () => {
    await proxy.close();
  });

  test("given an http proxy with the right credentials, the body arrives through a CONNECT tunnel", async () => {
    const h = await harness({ ...base, PROXY__PROXY_URL: proxy.url() });
    try {
      const tunnels = proxy.tunnels;
      const r = await get(h, origin.url("/data"));
      expect(r.contentHash).toBe(data.body.sha256());
      expect(proxy.tunnels).toBe(tunnels + 1);
      expect(proxy.lines.at(-1)).toBe(`CONNECT 127.0.0.1:${origin.port} HTTP/1.1`);
    } finally {
      await h.cleanup();
    }
  });

  test("given an https origin behind the http proxy, TLS runs inside the tunnel", async () => {
    const h = await harness({ ...base, PROXY__PROXY_URL: proxy.url() }, { tlsCa: TEST_CERT });
    try {
      const r = await get(h, `https://localhost:${tlsOrigin.port}/hello`);
      expect(await Bun.file(r.path).text()).toBe("hello over tls");
      // resolved here, checked, then the tunnel is asked for the address (not the name)
      expect(proxy.lines.at(-1)).toMatch(
        new RegExp(`^CONNECT (127\\.0\\.0\\.1|\\[::1\\]):${tlsOrigin.port} `),
      );
    } finally {
      await h.cleanup();
    }
  });

  test("given an https proxy (TLS to the proxy), http and https origins work through it", async () => {
    const secure = await startConnectProxy(
      { user: USER, password: PASSWORD },
      { cert: TEST_CERT, key: TEST_KEY },
    );
    const h = await harness({ ...base, PROXY__PROXY_URL: secure.url() }, { tlsCa: TEST_CERT });
    try {
      const r = await get(h, origin.url("/hello"));
      expect(await Bun.file(r.path).text()).toBe("hello");
      const r2 = await get(h, `https://localhost:${tlsOrigin.port}/hello`);
      expect(await Bun.file(r2.path).text()).toBe("hello over tls");
      expect(secure.tunnels).toBe(2);
    } finally {
      await h.cleanup();
      await secure.close();
    }
  });

  test("given a wrong password, the proxy answers 407 and the origin sees nothing", async () => {
    const wrong = `http://${USER}:nope@127.0.0.1:${proxy.port}`;
    const h = await harness({ ...base, PROXY__PROXY_URL: wrong });
    try {
      const connections = origin.connections;
      const e = await fetchError(h, origin.url("/data"));
      expect(e.code).toBe("proxy_failed");
      expect(e.message).toBe("The proxy rejected our credentials");
      expect(e.transient).toBe(false);
      expect(origin.connections).toBe(connections);
    } finally {
      await h.cleanup();
    }
  });
});
