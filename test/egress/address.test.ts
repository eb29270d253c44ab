/**
 * The address policy, as a specification table: which class each address falls in, and whether
 * an outgoing request may connect to it with and without EGRESS__ALLOW_PRIVATE_NETWORKS.
 * Pure functions: nothing here touches the network.
 */
import { describe, expect, test } from "bun:test";
import { type AddressClass, classifyAddress, isForbiddenAddress } from "../../src/egress";

const strict = { allowPrivateNetworks: false };
const lenient = { allowPrivateNetworks: true };

// [address as written, expected class, embedded IPv4 judged (if any)]
const TABLE: [string, AddressClass, string?][] = [
  // loopback, in every spelling an IP string can take
  ["127.0.0.1", "loopback"],
  ["127.255.255.254", "loopback"],
  ["2130706433", "loopback"],
  ["0x7f000001", "loopback"],
  ["0177.0.0.1", "loopback"],
  ["0x7f.1", "loopback"],
  ["127.1", "loopback"],
  ["127.000.000.001", "loopback"],
  ["::1", "loopback"],
  ["[::1]", "loopback"],
  ["0:0:0:0:0:0:0:1", "loopback"],
  ["::ffff:127.0.0.1", "loopback", "127.0.0.1"],
  ["::ffff:7f00:1", "loopback", "127.0.0.1"],
  ["::ffff:0:127.0.0.1", "loopback", "127.0.0.1"],
  ["::127.0.0.1", "loopback", "127.0.0.1"],
  ["64:ff9b::127.0.0.1", "loopback", "127.0.0.1"],
  ["2002:7f00:1::1", "loopback", "127.0.0.1"],
  ["2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback", "127.0.0.1"], // Teredo client 127.0.0.1 (inverted)
  // RFC 1918 and friends
  ["10.0.0.1", "private"],
  ["172.16.5.4", "private"],
  ["172.31.255.255", "private"],
  ["192.168.1.1", "private"],
  ["::ffff:10.1.2.3", "private", "10.1.2.3"],
  ["::ffff:192.168.0.1", "private", "192.168.0.1"],
  ["64:ff9b::10.0.0.1", "private", "10.0.0.1"],
  ["2002:c0a8:0101::", "private", "192.168.1.1"],
  ["100.64.0.1", "carrierGradeNat"],
  ["100.127.255.254", "carrierGradeNat"],
  ["169.254.1.1", "linkLocal"],
  ["fe80::1", "linkLocal"],
  ["fc00::1", "uniqueLocal"],
  ["fd12:3456::1", "uniqueLocal"],
  ["fec0::1", "siteLocal"],
  // metadata endpoints (refused even when private networks are allowed)
  ["169.254.169.254", "metadata"],
  ["0xa9fea9fe", "metadata"],
  ["2852039166", "metadata"],
  ["::ffff:169.254.169.254", "metadata", "169.254.169.254"],
  ["169.254.170.2", "metadata"],
  ["fd00:ec2::254", "metadata"],
  ["100.100.100.200", "metadata"],
  ["168.63.129.16", "metadata"],
  // not addresses anyone should fetch from
  ["0.0.0.0", "unspecified"],
  ["0", "unspecified"],
  ["0.1.2.3", "unspecified"],
  ["::", "unspecified"],
  ["255.255.255.255", "broadcast"],
  ["224.0.0.1", "multicast"],
  ["239.255.255.250", "multicast"],
  ["ff02::1", "multicast"],
  ["240.0.0.1", "reserved"],
  ["192.0.0.8", "reserved"],
  ["100::1", "reserved"],
  ["64:ff9b:1::1", "reserved"],
  ["198.18.0.1", "benchmarking"],
  ["198.19.255.255", "benchmarking"],
  ["2001:2::1", "benchmarking"],
  ["192.0.2.1", "documentation"],
  ["198.51.100.7", "documentation"],
  ["203.0.113.9", "documentation"],
  ["2001:db8::1", "documentation"],
  ["fe80::1%eth0", "invalid"],
  ["1.2.3.4.5", "invalid"],
  ["example.com", "invalid"],
  ["", "invalid"],
  // public
  ["5.45.0.10", "public"],
  ["100.128.0.1", "public"],
  ["172.32.0.1", "public"],
  ["2a00:1450:4001:80b::200e", "public"],
  ["::ffff:5.45.0.10", "public", "5.45.0.10"],
  ["64:ff9b::5.45.0.10", "public", "5.45.0.10"],
  ["2002:52d:000a::1", "public", "5.45.0.10"],
];

const ROWS = TABLE.map(([ip, cls, embedded]) => ({ ip, cls, embedded: embedded ?? null }));

describe("classifyAddress", () => {
  test.each(ROWS)("given $ip, it is $cls", ({ ip, cls, embedded }) => {
    const info = classifyAddress(ip);
    expect(info.class).toBe(cls);
    if (embedded) expect(info.embedded).toBe(embedded);
  });

  test("given an odd IPv4 spelling, the canonical address is what a connection would use", () => {
    expect(classifyAddress("0x7f.1").address).toBe("127.0.0.1");
    expect(classifyAddress("[::ffff:127.0.0.1]").address).toBe("::ffff:7f00:1");
  });
});

describe("isForbiddenAddress", () => {
  const PRIVATE_LIKE = new Set<AddressClass>([
    "loopback",
    "private",
    "linkLocal",
    "uniqueLocal",
    "siteLocal",
    "carrierGradeNat",
  ]);

  test.each(ROWS)("given $ip ($cls), strict mode allows only public addresses", ({ ip, cls }) => {
    expect(isForbiddenAddress(ip, strict)).toBe(cls !== "public");
  });

  test.each(ROWS)(
    "given $ip ($cls), allowPrivateNetworks lifts only private-network classes",
    ({ ip, cls }) => {
      expect(isForbiddenAddress(ip, lenient)).toBe(cls !== "public" && !PRIVATE_LIKE.has(cls));
    },
  );
});
