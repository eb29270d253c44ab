/**
 * The egress guard inside the fetcher: refusals happen before any connection. Every URL below
 * that names loopback points at a live loopback origin, so "no connection" is measured at the
 * origin itself (its accepted-connection count), not assumed. Non-loopback addresses are never
 * dialled: the test dialler refuses them and records every attempt, which must stay empty.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { type Origin, redirectRoute, startOrigin, textRoute } from "../support/origin";
import { startMicrosocks } from "../support/socks";
import {
  fetchError,
  get,
  harness,
  loopbackDialer,
  mapResolver,
  STAND_IN_PUBLIC,
  STAND_IN_PUBLIC_2,
} from "./helpers";

let internal: Origin; // stands for a service on the node's own loopback that must stay unreachable
beforeAll(async () => {
  internal = await startOrigin({ "/secret": textRoute("internal secret") });
});
afterAll(async () => {
  await internal.close();
});

async function strictHarness(extraEnv: Record<string, string> = {}, routes: Record<string, number> = {}) {
  const dialer = loopbackDialer(routes);
  const dns = mapResolver({
    "public.test": [STAND_IN_PUBLIC],
    "public2.test": [STAND_IN_PUBLIC_2],
    "rebind.test": ["127.0.0.1"],
    "mixed.test": [STAND_IN_PUBLIC, "10.0.0.7"],
    "mapped.test": ["::ffff:127.0.0.1"],
    "meta.test": ["169.254.169.254"],
    localhost: ["127.0.0.1"],
  });
  const h = await harness(
    { FETCHER__MIME_WHITELIST: "*/*", ...extraEnv },
    { dial: dialer.dial, resolve: dns.resolve },
  );
  return { h, dialer, dns };
}

describe("loopback in every spelling is refused before connecting", () => {
  const P = () => internal.port;
  const SPELLINGS: [string, () => string][] = [
    ["dotted quad", () => `http://127.0.0.1:${P()}/secret`],
    ["other 127/8 address", () => `http://127.9.8.7:${P()}/secret`],
    ["decimal", () => `http://2130706433:${P()}/secret`],
    ["hex", () => `http://0x7f000001:${P()}/secret`],
    ["dotted hex", () => `http://0x7f.0x0.0x0.0x1:${P()}/secret`],
    ["octal", () => `http://0177.0.0.1:${P()}/secret`],
    ["long octal", () => `http://017700000001:${P()}/secret`],
    ["short", () => `http://127.1:${P()}/secret`],
    ["zero-padded", () => `http://127.000.000.001:${P()}/secret`],
    ["trailing dot", () => `http://127.0.0.1.:${P()}/secret`],
    ["percent-encoded", () => `http://%31%32%37.0.0.1:${P()}/secret`],
    ["full-width digits", () => `http://\uff11\uff12\uff17.0.0.1:${P()}/secret`],
    ["IPv6 loopback", () => `http://[::1]:${P()}/secret`],
    ["IPv6 long form", () => `http://[0:0:0:0:0:0:0:1]:${P()}/secret`],
    ["IPv4-mapped", () => `http://[::ffff:127.0.0.1]:${P()}/secret`],
    ["IPv4-mapped hex", () => `http://[::ffff:7f00:1]:${P()}/secret`],
    ["IPv4-compatible", () => `http://[::127.0.0.1]:${P()}/secret`],
    ["IPv4-translated", () => `http://[::ffff:0:127.0.0.1]:${P()}/secret`],
    ["NAT64", () => `http://[64:ff9b::127.0.0.1]:${P()}/secret`],
    ["6to4", () => `http://[2002:7f00:1::1]:${P()}/secret`],
    ["Teredo", () => `http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:${P()}/secret`],
    ["unspecified (0)", () => `http://0:${P()}/secret`],
    ["unspecified (0.0.0.0)", () => `http://0.0.0.0:${P()}/secret`],
    ["unspecified IPv6", () => `http://[::]:${P()}/secret`],
    ["localhost", () => `http://localhost:${P()}/secret`],
    ["LOCALHOST with trailing dot", () => `http://LOCALHOST.:${P()}/secret`],
    ["subdomain of localhost", () => `http://api.localhost:${P()}/secret`],
    [
      "enclosed alphanumerics",
      () => `http://\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3:${P()}/secret`,
    ],
    ["backslash userinfo trick", () => `http://127.0.0.1:${P()}\\@public.test/secret`],
    ["name resolving to loopback", () => `http://rebind.test:${P()}/secret`],
    ["name resolving to IPv4-mapped loopback", () => `http://mapped.test:${P()}/secret`],
  ];

  test.each(SPELLINGS.map(([name, url]) => ({ name, url })))(
    "given $name, it is refused",
    async ({ url }) => {
      const { h, dialer } = await strictHarness();
      try {
        const before = internal.connections;
        // When fetching it with private networks not allowed
        const e = await fetchError(h, url());
        // Then it is refused by the guard, nothing was dialled, the origin saw no connection
        expect(e.code).toBe("egress_refused");
        expect(e.transient).toBe(false);
        expect(e.message).toStartWith("Refused: ");
        expect(dialer.calls).toEqual([]);
        expect(internal.connections).toBe(before);
        expect(await h.store.tempFiles()).toEqual([]);
      } finally {
        await h.cleanup();
      }
    },
  );
});

describe("other forbidden destinations are refused without dialling", () => {
  const URLS = [
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://169.254.1.1/",
    "http://169.254.169.254/latest/meta-data/iam/",
    "http://[::ffff:169.254.169.254]/latest/meta-data/",
    "http://2852039166/latest/meta-data/",
    "http://100.100.100.200/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://240.0.0.1/",
    "http://198.18.0.1/",
    "http://192.0.2.1/",
    "http://[2001:db8::1]/",
    "http://[::ffff:10.0.0.1]/",
    "http://[64:ff9b::10.0.0.1]/",
    "http://[2002:a00:1::]/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://db.internal/",
    "http://intranet/",
    "http://mixed.test/",
    "http://meta.test/",
  ];

  test.each(URLS)("given %s, it is refused", async (url) => {
    const { h, dialer } = await strictHarness();
    try {
      const e = await fetchError(h, url);
      expect(e.code).toBe("egress_refused");
      expect(dialer.calls).toEqual([]);
      expect(await h.store.tempFiles()).toEqual([]);
    } finally {
      await h.cleanup();
    }
  });

  test("given metadata addresses, even EGRESS__ALLOW_PRIVATE_NETWORKS=true refuses them", async () => {
    const { h, dialer } = await strictHarness({ EGRESS__ALLOW_PRIVATE_NETWORKS: "true" });
    try {
      for (const url of [
        "http://169.254.169.254/",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/",
      ]) {
        expect((await fetchError(h, url)).code).toBe("egress_refused");
      }
      expect(dialer.calls).toEqual([]);
    } finally {
      await h.cleanup();
    }
  });

  test("given URLs that are not http(s) or carry user info, they are refused as bad URLs", async () => {
    const { h, dialer } = await strictHarness();
    try {
      for (const url of [
        "file:///etc/passwd",
        "gopher://127.0.0.1/",
        "ftp://public.test/",
        "http://public.test@127.0.0.1/",
        "http://user:pw@public.test/",
        "http://",
      ]) {
        const e = await fetchError(h, url);
        expect(e.code).toBe("bad_url");
        expect(e.transient).toBe(false);
      }
      expect(dialer.calls).toEqual([]);
    } finally {
      await h.cleanup();
    }
  });
});

describe("redirects are judged hop by hop", () => {
  let front: Origin; // an allowed public origin (public.test -> stand-in public address -> loopback)
  beforeAll(async () => {
    front = await startOrigin({ "/ok": textRoute("front page") });
  });
  afterAll(async () => {
    await front.close();
  });

  const TARGETS: [string, () => string][] = [
    ["loopback literal", () => `http://127.0.0.1:${internal.port}/secret`],
    ["decimal loopback", () => `http://2130706433:${internal.port}/secret`],
    ["IPv4-mapped loopback", () => `http://[::ffff:127.0.0.1]:${internal.port}/secret`],
    ["localhost", () => `http://localhost:${internal.port}/secret`],
    ["a name resolving to loopback", () => `http://rebind.test:${internal.port}/secret`],
    ["scheme-relative loopback", () => `//127.1:${internal.port}/secret`],
    ["metadata", () => "http://169.254.169.254/latest/meta-data/"],
    ["a file URL", () => "file:///etc/passwd"],
  ];

  test.each(TARGETS.map(([name, loc]) => ({ name, loc })))(
    "given an allowed origin redirecting to $name, the hop is refused",
    async ({ loc }) => {
      // Given public.test, a public origin, answering with a redirect to an internal target
      front.route("/jump", redirectRoute(loc(), 302));
      const { h, dialer } = await strictHarness({}, { [STAND_IN_PUBLIC]: front.port });
      try {
        const before = internal.connections;
        // When fetching it
        const e = await fetchError(h, "http://public.test/jump");
        // Then the first hop was made, the second refused: the internal origin saw nothing
        expect(["egress_refused", "bad_url"]).toContain(e.code);
        expect(front.count("/jump")).toBeGreaterThan(0);
        expect(dialer.calls).toEqual([{ host: STAND_IN_PUBLIC, port: 80 }]);
        expect(internal.connections).toBe(before);
        expect(await h.store.tempFiles()).toEqual([]);
      } finally {
        await h.cleanup();
      }
    },
  );

  test("given a redirect between two public origins, it is followed (the control case)", async () => {
    const second = await startOrigin({ "/final": textRoute("arrived") });
    front.route("/to-second", redirectRoute("http://public2.test/final", 301));
    const { h } = await strictHarness(
      {},
      { [STAND_IN_PUBLIC]: front.port, [STAND_IN_PUBLIC_2]: second.port },
    );
    try {
      const r = await get(h, "http://public.test/to-second");
      expect(r.finalUrl).toBe("http://public2.test/final");
      expect(await Bun.file(r.path).text()).toBe("arrived");
    } finally {
      await h.cleanup();
      await second.close();
    }
  });

  test("given a redirect to a denylisted host, the hop is refused", async () => {
    front.route("/to-denied", redirectRoute("http://public2.test/final", 302));
    const { h, dialer } = await strictHarness(
      { FETCHER__URL_DENYLIST: "public2.test" },
      { [STAND_IN_PUBLIC]: front.port },
    );
    try {
      const e = await fetchError(h, "http://public.test/to-denied");
      expect(e.code).toBe("egress_refused");
      expect(e.message).toBe("Refused: public2.test is on this service's deny list (FETCHER__URL_DENYLIST)");
      expect(dialer.calls.length).toBe(1);
    } finally {
      await h.cleanup();
    }
  });

  test("given an allow list, hosts outside it are refused before resolving", async () => {
    const { h, dialer, dns } = await strictHarness({ FETCHER__URL_ALLOWLIST: "*.example.org" });
    try {
      const e = await fetchError(h, "http://public.test/ok");
      expect(e.code).toBe("egress_refused");
      expect(e.message).toBe(
        "Refused: public.test is not on this service's allow list (FETCHER__URL_ALLOWLIST)",
      );
      expect(dns.calls).toEqual([]);
      expect(dialer.calls).toEqual([]);
    } finally {
      await h.cleanup();
    }
  });
});

describe("EGRESS__ALLOW_PRIVATE_NETWORKS", () => {
  test("given it is true, a loopback origin can be fetched", async () => {
    const { h } = await strictHarness({ EGRESS__ALLOW_PRIVATE_NETWORKS: "true" });
    try {
      const r = await get(h, `http://127.0.0.1:${internal.port}/secret`);
      expect(await Bun.file(r.path).text()).toBe("internal secret");
      const r2 = await get(h, `http://localhost:${internal.port}/secret`);
      expect(r2.contentHash).toBe(r.contentHash);
    } finally {
      await h.cleanup();
    }
  });
});

describe("with a socks5h proxy the guard still judges literals and names", () => {
  test("given socks5h, a literal loopback address is refused before the proxy is even dialled", async () => {
    const socks = await startMicrosocks();
    const { h, dialer } = await strictHarness({ PROXY__PROXY_URL: socks.url("socks5h") });
    try {
      for (const url of [
        `http://127.0.0.1:${internal.port}/secret`,
        `http://0x7f.1:${internal.port}/secret`,
        `http://[::ffff:127.0.0.1]:${internal.port}/secret`,
        `http://localhost:${internal.port}/secret`,
      ]) {
        expect((await fetchError(h, url)).code).toBe("egress_refused");
      }
      expect(dialer.calls).toEqual([]);
      expect(socks.connectedTo(internal.port)).toBe(0);
    } finally {
      await h.cleanup();
      await socks.stop();
    }
  });
});

describe("deny and allow lists match addresses in every form, resolved ones included, on every hop", () => {
  // 127.0.0.3 stands for a denied host on the node's own network; the test dialler routes it
  // (in whichever form the fetcher dials it) to the internal origin, so "reached" is measured there.
  const DENIED_V4 = "127.0.0.3";
  const DENIED_MAPPED = "::ffff:7f00:3"; // canonical text of [::ffff:127.0.0.3]

  async function listHarness(env: Record<string, string>) {
    const front = await startOrigin({ "/ok": textRoute("front page") });
    const dialer = loopbackDialer({
      [DENIED_V4]: internal.port,
      [DENIED_MAPPED]: internal.port,
      [STAND_IN_PUBLIC]: front.port,
      [STAND_IN_PUBLIC_2]: internal.port,
    });
    const dns = mapResolver({
      "three.test": [DENIED_V4],
      "public.test": [STAND_IN_PUBLIC],
      "public2.test": [STAND_IN_PUBLIC_2],
    });
    const h = await harness(
      { FETCHER__MIME_WHITELIST: "*/*", ...env },
      { dial: dialer.dial, resolve: dns.resolve },
    );
    return {
      h,
      front,
      dialer,
      async close() {
        await h.cleanup();
        await front.close();
      },
    };
  }

  test("given FETCHER__URL_DENYLIST=127.0.0.3, a redirect to [::ffff:127.0.0.3] is refused", async () => {
    const t = await listHarness({ EGRESS__ALLOW_PRIVATE_NETWORKS: "true", FETCHER__URL_DENYLIST: DENIED_V4 });
    try {
      t.front.route("/jump", redirectRoute(`http://[::ffff:127.0.0.3]:${internal.port}/secret`));
      const before = internal.count("/secret");
      const e = await fetchError(t.h, `http://127.0.0.1:${t.front.port}/jump`);
      expect(e.code).toBe("egress_refused");
      expect(e.message).toBe("Refused: ::ffff:7f00:3 is on this service's deny list (FETCHER__URL_DENYLIST)");
      expect(internal.count("/secret")).toBe(before);
      expect(t.dialer.calls).toEqual([{ host: "127.0.0.1", port: t.front.port }]);
    } finally {
      await t.close();
    }
  });

  test("given FETCHER__URL_DENYLIST=127.0.0.3, a name resolving to 127.0.0.3 is refused, first hop or redirect", async () => {
    const t = await listHarness({ EGRESS__ALLOW_PRIVATE_NETWORKS: "true", FETCHER__URL_DENYLIST: DENIED_V4 });
    try {
      t.front.route("/jump", redirectRoute(`http://three.test:${internal.port}/secret`));
      const before = internal.count("/secret");
      const direct = await fetchError(t.h, `http://three.test:${internal.port}/secret`);
      expect(direct.code).toBe("egress_refused");
      expect(direct.message).toBe(
        "Refused: three.test resolves to an address on this service's deny list (FETCHER__URL_DENYLIST)",
      );
      const hop = await fetchError(t.h, `http://127.0.0.1:${t.front.port}/jump`);
      expect(hop.code).toBe("egress_refused");
      expect(internal.count("/secret")).toBe(before);
      expect(t.dialer.calls).toEqual([{ host: "127.0.0.1", port: t.front.port }]);
    } finally {
      await t.close();
    }
  });

  test("given a CIDR on the deny list, a public name resolving inside it is refused and one outside is fetched", async () => {
    const t = await listHarness({ FETCHER__URL_DENYLIST: "5.45.0.11/32,10.0.0.0/8" });
    try {
      const e = await fetchError(t.h, "http://public2.test/secret");
      expect(e.code).toBe("egress_refused");
      const r = await get(t.h, "http://public.test/ok");
      expect(await Bun.file(r.path).text()).toBe("front page");
      expect(t.dialer.calls).toEqual([{ host: STAND_IN_PUBLIC, port: 80 }]);
    } finally {
      await t.close();
    }
  });

  test("given IP entries on the allow list, a name is admitted only when all its addresses are inside them", async () => {
    const t = await listHarness({ FETCHER__URL_ALLOWLIST: `${STAND_IN_PUBLIC}/32` });
    try {
      const r = await get(t.h, "http://public.test/ok");
      expect(await Bun.file(r.path).text()).toBe("front page");
      t.front.route("/to-other", redirectRoute("http://public2.test/secret"));
      const e = await fetchError(t.h, "http://public.test/to-other");
      expect(e.code).toBe("egress_refused");
      expect(e.message).toBe(
        "Refused: public2.test is not on this service's allow list (FETCHER__URL_ALLOWLIST)",
      );
      expect(t.dialer.calls.every((c) => c.host === STAND_IN_PUBLIC)).toBe(true);
    } finally {
      await t.close();
    }
  });

  test("given IP entries on the allow list and socks5h (the proxy resolves), names are refused before the proxy is dialled", async () => {
    const socks = await startMicrosocks();
    const t = await listHarness({
      FETCHER__URL_ALLOWLIST: STAND_IN_PUBLIC,
      PROXY__PROXY_URL: socks.url("socks5h"),
    });
    try {
      const e = await fetchError(t.h, "http://public.test/ok");
      expect(e.code).toBe("egress_refused");
      expect(t.dialer.calls).toEqual([]);
    } finally {
      await t.close();
      await socks.stop();
    }
  });
});
