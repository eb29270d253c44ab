/**
 * URL parsing, host patterns and the pre-connection half of the egress guard, as tables.
 * Pure functions: nothing here resolves a name or opens a socket.
 */
import { describe, expect, test } from "bun:test";
import {
  checkAddresses,
  checkHostLists,
  checkTarget,
  compileHostPatterns,
  createEgressPolicy,
  type EgressPolicySettings,
  EgressRefusedError,
  hostMatches,
  internalHostnameKind,
  parseAndCheckTarget,
  parseTargetUrl,
} from "../../src/egress";

describe("parseTargetUrl", () => {
  // [raw URL, hostname judged, ip literal?]
  const SPELLINGS: [string, string, boolean][] = [
    ["http://2130706433/", "127.0.0.1", true],
    ["http://0x7f000001/", "127.0.0.1", true],
    ["http://0177.0.0.1/", "127.0.0.1", true],
    ["http://017700000001/", "127.0.0.1", true],
    ["http://0x7f.0x0.0x0.0x1/", "127.0.0.1", true],
    ["http://127.1/", "127.0.0.1", true],
    ["http://127.0.0.1./", "127.0.0.1", true],
    ["http://%31%32%37.0.0.1/", "127.0.0.1", true],
    ["http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/", "127.0.0.1", true], // full-width digits
    ["http://127.0.0.1\\@public.example/", "127.0.0.1", true], // backslash is a path separator
    ["http://0/", "0.0.0.0", true],
    ["http://[::1]/", "::1", true],
    ["http://[0:0:0:0:0:ffff:127.0.0.1]/", "::ffff:7f00:1", true],
    ["http://[::127.0.0.1]/", "::7f00:1", true],
    ["HTTP://LOCALHOST./", "localhost", false],
    ["http://\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3/", "localhost", false], // ⓛⓞⓒⓐⓛⓗⓞⓢⓣ
    ["https://Example.COM:8443/a?b=1#frag", "example.com", false],
  ];

  test.each(SPELLINGS.map(([raw, host, ip]) => ({ raw, host, ip })))(
    "given $raw, the host judged is $host",
    ({ raw, host, ip }) => {
      const t = parseTargetUrl(raw);
      expect(t.hostname).toBe(host);
      expect(t.ip !== null).toBe(ip);
    },
  );

  test("given a URL, the fragment is dropped and the default port filled in", () => {
    const t = parseTargetUrl("https://example.com/a?b=1#frag");
    expect(t.url.href).toBe("https://example.com/a?b=1");
    expect(t.port).toBe(443);
    expect(parseTargetUrl("http://example.com:8080/").port).toBe(8080);
  });

  const REFUSED: [string, string][] = [
    ["ftp://example.com/", "scheme"],
    ["file:///etc/passwd", "scheme"],
    ["gopher://127.0.0.1:25/", "scheme"],
    ["javascript:alert(1)", "scheme"],
    ["http://user@example.com/", "userinfo"],
    ["http://user:pass@example.com/", "userinfo"],
    ["http://public.example@127.0.0.1/", "userinfo"],
    ["http://example.com:0/", "port"],
    ["http://1.2.3.4.5/", "invalid"],
    ["http://[fe80::1%25eth0]/", "invalid"],
    ["http://exa mple.com/", "invalid"],
    ["not a url", "invalid"],
    ["", "invalid"],
  ];
  test.each(REFUSED.map(([raw, problem]) => ({ raw, problem })))(
    "given $raw, it is refused ($problem)",
    ({ raw, problem }) => {
      expect(() => parseTargetUrl(raw)).toThrow();
      try {
        parseTargetUrl(raw);
      } catch (e) {
        expect((e as { problem: string }).problem).toBe(problem);
      }
    },
  );

  test("given a relative Location, it resolves against the current URL", () => {
    expect(parseTargetUrl("/next?x=1", "http://example.com/a/b").url.href).toBe(
      "http://example.com/next?x=1",
    );
    expect(parseTargetUrl("//127.1:8080/", "https://example.com/").hostname).toBe("127.0.0.1");
  });
});

describe("host patterns", () => {
  const CASES: [string, string, boolean][] = [
    ["example.com", "example.com", true],
    ["example.com", "EXAMPLE.com.", true],
    ["example.com", "www.example.com", false],
    ["*.example.com", "www.example.com", true],
    ["*.example.com", "a.b.example.com", true],
    ["*.example.com", "example.com", false],
    ["*.example.com", "badexample.com", false],
    ["*.example.com", "example.com.evil.test", false],
    ["127.0.0.1", "2130706433", true],
    ["::1", "[0:0:0:0:0:0:0:1]", true],
    ["bücher.example", "xn--bcher-kva.example", true],
  ];
  test.each(CASES.map(([pattern, host, match]) => ({ pattern, host, match })))(
    "given pattern $pattern and host $host, match is $match",
    ({ pattern, host, match }) => {
      const [p] = compileHostPatterns([pattern]);
      expect(hostMatches(host, p!)).toBe(match);
    },
  );

  test("given a pattern that is not a host, compiling it fails with its text", () => {
    expect(() => compileHostPatterns(["http://example.com/"])).toThrow(/not a host pattern/);
    expect(() => compileHostPatterns(["ex*ample.com"])).toThrow(/not a host pattern/);
  });

  test("given both lists, the deny list wins and a non-empty allow list admits only its hosts", () => {
    const lists = {
      allow: compileHostPatterns(["*.example.com", "example.org"]),
      deny: compileHostPatterns(["secret.example.com"]),
    };
    expect(checkHostLists("www.example.com", lists)).toEqual({ allowed: true });
    expect(checkHostLists("example.org", lists)).toEqual({ allowed: true });
    expect(checkHostLists("secret.example.com", lists)).toEqual({ allowed: false, reason: "denylisted" });
    expect(checkHostLists("example.net", lists)).toEqual({ allowed: false, reason: "not_allowlisted" });
  });

  test.each([
    { host: "localhost", kind: "internal" },
    { host: "api.localhost", kind: "internal" },
    { host: "printer.local", kind: "internal" },
    { host: "db.internal", kind: "internal" },
    { host: "router.home.arpa", kind: "internal" },
    { host: "intranet", kind: "internal" },
    { host: "metadata.google.internal", kind: "metadata" },
    { host: "metadata", kind: "metadata" },
    { host: "example.com", kind: null },
  ])("given host $host, the name kind is $kind", ({ host, kind }) => {
    expect(internalHostnameKind(host)).toBe(kind as "internal" | "metadata" | null);
  });
});

describe("checkTarget (before any network activity)", () => {
  const policy = (s: Partial<EgressPolicySettings> = {}) =>
    createEgressPolicy({ allowPrivateNetworks: false, ...s });
  const reason = (raw: string, p = policy()) => checkTarget(parseTargetUrl(raw), p)?.reason ?? null;

  test.each([
    "http://127.0.0.1/",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::127.0.0.1]/",
    "http://[64:ff9b::127.0.0.1]/",
    "http://[2002:7f00:1::]/",
    "http://10.0.0.1/",
    "http://[fd00:ec2::254]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://0/",
  ])("given %s, it is refused as an address", (raw) => {
    expect(reason(raw)).toBe("address");
  });

  test("given internal names, they are refused unless private networks are allowed; metadata names always", () => {
    expect(reason("http://localhost:8080/")).toBe("internal_name");
    expect(reason("http://localhost:8080/", policy({ allowPrivateNetworks: true }))).toBeNull();
    expect(reason("http://metadata.google.internal/", policy({ allowPrivateNetworks: true }))).toBe(
      "metadata_name",
    );
    expect(reason("http://169.254.169.254/", policy({ allowPrivateNetworks: true }))).toBe("address");
    expect(reason("http://127.0.0.1/", policy({ allowPrivateNetworks: true }))).toBeNull();
  });

  test("given allow and deny lists, they apply to names and literals alike", () => {
    const p = policy({ urlAllowlist: ["*.example.com"], urlDenylist: ["bad.example.com"] });
    expect(reason("https://www.example.com/", p)).toBeNull();
    expect(reason("https://bad.example.com/", p)).toBe("denylisted");
    expect(reason("https://example.net/", p)).toBe("not_allowlisted");
  });

  test("given a refusal, its message names the host and nothing internal", () => {
    try {
      parseAndCheckTarget("http://0x7f.1:8080/admin", policy());
      throw new Error("not refused");
    } catch (e) {
      expect(e).toBeInstanceOf(EgressRefusedError);
      expect((e as Error).message).toBe(
        "Refused: 127.0.0.1 is a loopback address; this service does not fetch private networks (its operator can allow them with EGRESS__ALLOW_PRIVATE_NETWORKS=true)",
      );
    }
  });
});

describe("checkAddresses (after resolving)", () => {
  const p = createEgressPolicy({ allowPrivateNetworks: false });

  test("given only public addresses, all are returned in order, canonical", () => {
    const v = checkAddresses("public.test", ["5.45.0.10", "::ffff:5.45.0.11"], p);
    expect(v.ok && v.addresses.map((a) => a.address)).toEqual(["5.45.0.10", "::ffff:52d:b"]);
  });

  test("given one private address among public ones, the whole name is refused", () => {
    const v = checkAddresses("rebind.test", ["5.45.0.10", "10.0.0.7"], p);
    expect(v.ok).toBe(false);
    if (!v.ok) {
      expect(v.refusal.reason).toBe("address");
      expect(v.refusal.message).toBe(
        "Refused: rebind.test resolves to a private network address; this service does not fetch private networks (its operator can allow them with EGRESS__ALLOW_PRIVATE_NETWORKS=true)",
      );
      expect(v.refusal.message).not.toContain("10.0.0.7");
    }
  });

  test("given no address, it is refused as unresolvable", () => {
    const v = checkAddresses("empty.test", [], p);
    expect(!v.ok && v.refusal.reason).toBe("no_address");
  });
});

describe("IP and CIDR list entries", () => {
  test.each([
    ["127.0.0.3", "http://[::ffff:127.0.0.3]/", true],
    ["127.0.0.3", "http://[::ffff:7f00:3]/", true],
    ["127.0.0.3", "http://[::127.0.0.3]/", true],
    ["127.0.0.3", "http://[64:ff9b::127.0.0.3]/", true],
    ["127.0.0.3", "http://[2002:7f00:3::]/", true],
    ["127.0.0.3", "http://0x7f000003/", true],
    ["127.0.0.3", "http://127.0.0.4/", false],
    ["::ffff:127.0.0.3", "http://127.0.0.3/", true],
    ["127.0.0.0/8", "http://[::ffff:127.9.9.9]/", true],
    ["[fd00::]/8", "http://[fd12::1]/", true],
    ["10.0.0.0/8", "http://11.0.0.1/", false],
  ] as const)("given deny entry %s and URL %s, denied is %p", (entry, url, denied) => {
    const p = createEgressPolicy({ allowPrivateNetworks: true, urlDenylist: [entry] });
    expect(checkTarget(parseTargetUrl(url), p)?.reason === "denylisted").toBe(denied);
  });

  test("given a deny entry, a name resolving to it (in any form) is refused after resolving", () => {
    const p = createEgressPolicy({ allowPrivateNetworks: true, urlDenylist: ["127.0.0.3"] });
    expect(checkTarget(parseTargetUrl("http://three.test/"), p)).toBeNull();
    for (const addrs of [["127.0.0.3"], ["127.0.0.1", "::ffff:127.0.0.3"]]) {
      const v = checkAddresses("three.test", addrs, p);
      expect(!v.ok && v.refusal.reason).toBe("denylisted");
    }
    expect(checkAddresses("one.test", ["127.0.0.1"], p).ok).toBe(true);
  });
});
