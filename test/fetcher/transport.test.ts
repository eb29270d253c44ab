/**
 * The transport the fetcher relies on: under Bun, node:http writes a request to the socket an
 * Agent's createConnection returns (and connects nowhere itself), TLS goes over a socket we
 * opened with the SNI and verification we ask for, and the fetcher really uses its own
 * connection to the address the guard checked.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import http from "node:http";
import net from "node:net";
import { exchange } from "../../seeder/node/fetcher/exchange";
import { bytesRoute, type Origin, startOrigin, textRoute } from "../support/origin";
import { fetchError, get, harness, loopbackDialer, mapResolver, STAND_IN_PUBLIC } from "./helpers";
import { TEST_CERT, TEST_KEY } from "./tls-fixture";

let origin: Origin;
let tlsOrigin: Origin;
beforeAll(async () => {
  origin = await startOrigin({
    "/hello": textRoute("hello"),
    "/data": bytesRoute({ size: 200_000, seed: 5 }),
  });
  tlsOrigin = await startOrigin(
    { "/hello": textRoute("hello over tls") },
    { tls: { cert: TEST_CERT, key: TEST_KEY } },
  );
});
afterAll(async () => {
  await origin.close();
  await tlsOrigin.close();
});

function connected(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port });
    s.once("connect", () => resolve(s));
    s.once("error", reject);
  });
}

describe("node:http over our own socket", () => {
  test("given an Agent whose createConnection returns an open socket, the request travels on that socket", async () => {
    // Given a socket we opened to the origin, and node:http told to "connect" to a closed port
    const sock = await connected(origin.port);
    const localPort = sock.localPort;
    class OneSocket extends http.Agent {
      override createConnection() {
        return sock;
      }
    }
    // When a request is made with that agent
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = http.request({ host: "127.0.0.1", port: 9, path: "/hello", agent: new OneSocket() });
      req.on("response", resolve).on("error", reject).end();
    });
    let body = "";
    for await (const c of res) body += c;
    // Then the origin answered it, on the connection we opened
    expect(body).toBe("hello");
    expect(origin.requests.at(-1)!.remotePort).toBe(localPort!);
  });

  test("given the exchange helper, a request and its response head go over the given socket", async () => {
    const sock = await connected(origin.port);
    const res = await exchange(
      sock,
      { method: "GET", path: "/hello", headers: { Host: "public.test" }, body: null },
      new AbortController().signal,
    );
    expect(res.statusCode).toBe(200);
    res.resume();
    expect(origin.requests.at(-1)!.headers.host).toBe("public.test");
    expect(origin.requests.at(-1)!.remotePort).toBe(sock.localPort!);
  });
});

describe("the fetcher connects to the address it checked", () => {
  test("given a name that resolves to a public address, the fetcher dials that address and nothing else", async () => {
    // Given public.test -> a public address, which the test dialler routes to the loopback origin
    const dialer = loopbackDialer({ [STAND_IN_PUBLIC]: origin.port });
    const dns = mapResolver({ "public.test": [STAND_IN_PUBLIC] });
    const h = await harness({ FETCHER__MIME_WHITELIST: "*/*" }, { dial: dialer.dial, resolve: dns.resolve });
    try {
      const before = origin.count("/data");
      // When fetching it
      const r = await get(h, "http://public.test/data");
      // Then the one connection went to the checked address, the name was resolved once,
      // and the origin served the body with the right Host header
      expect(dialer.calls).toEqual([{ host: STAND_IN_PUBLIC, port: 80 }]);
      expect(dns.calls).toEqual(["public.test"]);
      expect(origin.count("/data")).toBe(before + 1);
      expect(origin.requests.at(-1)!.headers.host).toBe("public.test");
      expect(r.contentHash).toBe(bytesRoute({ size: 200_000, seed: 5 }).body.sha256());
    } finally {
      await h.cleanup();
    }
  });
});

describe("TLS over our own connection", () => {
  const tlsHarness = (env: Record<string, string>, ca: boolean) => {
    const dialer = loopbackDialer({ [STAND_IN_PUBLIC]: tlsOrigin.port });
    const dns = mapResolver({ "public.test": [STAND_IN_PUBLIC], "other.test": [STAND_IN_PUBLIC] });
    return harness(
      { FETCHER__MIME_WHITELIST: "*/*", ...env },
      { dial: dialer.dial, resolve: dns.resolve, ...(ca ? { tlsCa: TEST_CERT } : {}) },
    );
  };

  test("given a trusted certificate for the name, https succeeds (SNI and verification)", async () => {
    const h = await tlsHarness({}, true);
    try {
      const r = await get(h, "https://public.test/hello");
      expect(await Bun.file(r.path).text()).toBe("hello over tls");
      expect(tlsOrigin.requests.at(-1)!.servername).toBe("public.test");
    } finally {
      await h.cleanup();
    }
  });

  test("given a certificate for another name, verification refuses it", async () => {
    const h = await tlsHarness({}, true);
    try {
      const before = tlsOrigin.count();
      const e = await fetchError(h, "https://other.test/hello");
      expect(e.code).toBe("tls");
      expect(e.transient).toBe(false);
      expect(e.message).toContain("other.test");
      expect(tlsOrigin.count()).toBe(before);
    } finally {
      await h.cleanup();
    }
  });

  test("given an untrusted (self-signed) certificate, verification refuses it", async () => {
    const h = await tlsHarness({}, false);
    try {
      const e = await fetchError(h, "https://public.test/hello");
      expect(e.code).toBe("tls");
      expect(e.message).toMatch(/could not be verified/);
    } finally {
      await h.cleanup();
    }
  });

  test("given FETCHER__VERIFY_SSL=false, an untrusted certificate is accepted", async () => {
    const h = await tlsHarness({ FETCHER__VERIFY_SSL: "false" }, false);
    try {
      const r = await get(h, "https://other.test/hello");
      expect(r.size).toBe("hello over tls".length);
    } finally {
      await h.cleanup();
    }
  });

  test("given an IP literal URL and a certificate with that IP, verification passes without SNI", async () => {
    const h = await harness(
      { FETCHER__MIME_WHITELIST: "*/*", EGRESS__ALLOW_PRIVATE_NETWORKS: "true" },
      { tlsCa: TEST_CERT },
    );
    try {
      const r = await get(h, `https://127.0.0.1:${tlsOrigin.port}/hello`);
      expect(r.size).toBe("hello over tls".length);
      expect(tlsOrigin.requests.at(-1)!.servername).toBeUndefined();
    } finally {
      await h.cleanup();
    }
  });
});
