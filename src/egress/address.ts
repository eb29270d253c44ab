/**
 * Which IP addresses an outgoing request may connect to.
 *
 * The policy is an allow-list in spirit: an address is public only if it is ordinary global
 * unicast. IPv6 forms that carry an IPv4 address inside (IPv4-mapped, IPv4-compatible, NAT64,
 * 6to4, Teredo) are judged by the IPv4 address they carry, so `::ffff:127.0.0.1` is loopback.
 *
 * Pure: runs on Workers and Bun (ipaddr.js and the WHATWG URL parser only).
 */
import ipaddr from "ipaddr.js";

export type AddressClass =
  | "public"
  | "loopback"
  | "private"
  | "linkLocal"
  | "uniqueLocal"
  | "siteLocal"
  | "carrierGradeNat"
  | "metadata"
  | "multicast"
  | "unspecified"
  | "broadcast"
  | "reserved"
  | "benchmarking"
  | "documentation"
  | "invalid";

/** How an IPv4 address was carried inside an IPv6 one, when it was. */
export type EmbeddingForm = "ipv4Mapped" | "ipv4Translated" | "ipv4Compatible" | "nat64" | "6to4" | "teredo";

export interface AddressInfo {
  /** Canonical text of the address (dotted quad, or compressed IPv6 without brackets). Connect to this. */
  address: string;
  family: 4 | 6;
  class: AddressClass;
  /** Set when the verdict comes from an IPv4 address embedded in an IPv6 one. */
  via?: EmbeddingForm;
  /** The embedded IPv4 address that was judged, when `via` is set. */
  embedded?: string;
}

/**
 * Cloud metadata and instance-internal endpoints. Refused even with `allowPrivateNetworks`:
 * no test or trusted network needs a fetch service to read instance credentials.
 */
export const METADATA_ADDRESSES: ReadonlySet<string> = new Set([
  "169.254.169.254", // AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle (v2) IMDS
  "169.254.169.253", // AWS VPC DNS
  "169.254.169.123", // AWS time sync
  "169.254.170.2", // AWS ECS task metadata / credentials
  "169.254.170.23", // AWS EKS pod identity agent
  "169.254.0.23", // Tencent Cloud metadata
  "100.100.100.200", // Alibaba Cloud metadata
  "192.0.0.192", // Oracle Cloud (classic) metadata
  "168.63.129.16", // Azure wire server (a public address, hence listed)
  "fd00:ec2::254", // AWS IMDS over IPv6
  "fd00:ec2::23", // AWS EKS pod identity over IPv6
  "fd20:ce::254", // GCP metadata over IPv6
]);

/** Classes that `allowPrivateNetworks: true` lets through (tests, trusted networks). */
export const PRIVATE_NETWORK_CLASSES: ReadonlySet<AddressClass> = new Set<AddressClass>([
  "loopback",
  "private",
  "linkLocal",
  "uniqueLocal",
  "siteLocal",
  "carrierGradeNat",
]);

const V4_CLASS: Record<string, AddressClass> = {
  unicast: "public",
  // Public anycast services (AS112 DNS sinks, AMT relays): globally reachable per IANA.
  as112: "public",
  amt: "public",
  unspecified: "unspecified",
  broadcast: "broadcast",
  multicast: "multicast",
  linkLocal: "linkLocal",
  loopback: "loopback",
  carrierGradeNat: "carrierGradeNat",
  private: "private",
  reserved: "reserved",
};

// ipaddr.js files these under "reserved"; name them precisely so refusals read well.
const V4_DOCUMENTATION: [string, number][] = [
  ["192.0.2.0", 24],
  ["198.51.100.0", 24],
  ["203.0.113.0", 24],
];
const V4_BENCHMARKING: [string, number][] = [["198.18.0.0", 15]];

const V6_CLASS: Record<string, AddressClass> = {
  unicast: "public",
  as112v6: "public",
  amt: "public",
  unspecified: "unspecified",
  linkLocal: "linkLocal",
  multicast: "multicast",
  loopback: "loopback",
  uniqueLocal: "uniqueLocal",
  deprecatedSiteLocal: "siteLocal",
  discard: "reserved",
  benchmarking: "benchmarking",
  deprecatedOrchid: "reserved",
  orchid2: "reserved",
  droneRemoteIdProtocolEntityTags: "reserved",
  segmentRouting: "reserved",
  reserved: "reserved",
};

function inRange(addr: ipaddr.IPv4, ranges: [string, number][]): boolean {
  return ranges.some(([base, bits]) => addr.match(ipaddr.IPv4.parse(base), bits));
}

function classifyV4(addr: ipaddr.IPv4): AddressClass {
  const text = addr.toString();
  if (METADATA_ADDRESSES.has(text)) return "metadata";
  if (inRange(addr, V4_DOCUMENTATION)) return "documentation";
  if (inRange(addr, V4_BENCHMARKING)) return "benchmarking";
  return V4_CLASS[addr.range()] ?? "reserved";
}

function v4FromWords(hi: number, lo: number): ipaddr.IPv4 {
  return new ipaddr.IPv4([hi >> 8, hi & 0xff, lo >> 8, lo & 0xff]);
}

/** Pick the stricter of two verdicts (used for Teredo, which carries two IPv4 addresses). */
function worse(a: AddressInfo, b: AddressInfo): AddressInfo {
  return a.class === "public" ? b : a;
}

/**
 * The IPv4 address(es) an IPv6 address carries, and how: IPv4-mapped, IPv4-translated, NAT64
 * (64:ff9b::/96 only), 6to4, Teredo (server and client) and the deprecated IPv4-compatible
 * `::a.b.c.d` (::/96 minus :: and ::1), which some stacks still route to the IPv4 address.
 */
function embeddedIpv4(addr: ipaddr.IPv6): { via: EmbeddingForm; v4: ipaddr.IPv4[] } | null {
  const p = addr.parts;
  const range = addr.range();
  switch (range) {
    case "ipv4Mapped":
      return { via: "ipv4Mapped", v4: [v4FromWords(p[6]!, p[7]!)] };
    case "rfc6145":
      return { via: "ipv4Translated", v4: [v4FromWords(p[6]!, p[7]!)] };
    case "rfc6052":
      // 64:ff9b::/96 carries a public IPv4 address (DNS64); 64:ff9b:1::/48 is for local use only.
      if (p[2] === 0 && p[3] === 0 && p[4] === 0 && p[5] === 0)
        return { via: "nat64", v4: [v4FromWords(p[6]!, p[7]!)] };
      return null;
    case "6to4":
      return { via: "6to4", v4: [v4FromWords(p[1]!, p[2]!)] };
    case "teredo":
      // 2001:0:SSSS:SSSS:flags:port:CCCC:CCCC, client address stored inverted (RFC 4380).
      return { via: "teredo", v4: [v4FromWords(p[2]!, p[3]!), v4FromWords(p[6]! ^ 0xffff, p[7]! ^ 0xffff)] };
  }
  if (p[0] === 0 && p[1] === 0 && p[2] === 0 && p[3] === 0 && p[4] === 0 && p[5] === 0 && range === "unicast")
    return { via: "ipv4Compatible", v4: [v4FromWords(p[6]!, p[7]!)] };
  return null;
}

function classifyV6(addr: ipaddr.IPv6): AddressInfo {
  const text = addr.toString();
  const p = addr.parts;
  const base = { address: text, family: 6 as const };
  if (METADATA_ADDRESSES.has(text)) return { ...base, class: "metadata" };
  const range = addr.range();
  const inner = embeddedIpv4(addr);
  if (inner) {
    // Teredo carries two IPv4 addresses: the stricter verdict wins.
    const verdicts = inner.v4.map(
      (v4): AddressInfo => ({ ...base, class: classifyV4(v4), via: inner.via, embedded: v4.toString() }),
    );
    return verdicts.reduce(worse);
  }
  if (range === "rfc6052") return { ...base, class: "reserved" };
  const cls = V6_CLASS[range] ?? "reserved";
  // Only 2000::/3 is allocated global unicast; anything else ipaddr.js calls "unicast" is not.
  if (cls === "public" && (p[0]! & 0xe000) !== 0x2000) return { ...base, class: "reserved" };
  if (range === "reserved" && p[0] === 0x2001 && p[1] === 0x0db8) return { ...base, class: "documentation" };
  return { ...base, class: cls };
}

/**
 * Turn any textual IPv4 spelling the WHATWG URL parser accepts (`2130706433`, `0x7f.1`,
 * `0177.0.0.1`) into its dotted quad, so a string is judged as the address it really is.
 */
function normaliseIpv4Text(ip: string): string | null {
  if (!/^[0-9a-fA-FxX.]+$/.test(ip)) return null;
  try {
    const host = new URL(`http://${ip}/`).hostname;
    return ipaddr.IPv4.isValidFourPartDecimal(host) ? host : null;
  } catch {
    return null;
  }
}

/** Classify one IP address (IPv4 in any WHATWG spelling, or IPv6 with or without brackets). */
export function classifyAddress(ip: string): AddressInfo {
  const raw = ip.trim().replace(/^\[(.*)\]$/, "$1");
  const v4 = normaliseIpv4Text(raw);
  if (v4) {
    const addr = ipaddr.IPv4.parse(v4);
    return { address: addr.toString(), family: 4, class: classifyV4(addr) };
  }
  // Zone ids (`fe80::1%eth0`) select an interface: never acceptable for an outgoing fetch.
  if (!raw.includes("%") && ipaddr.IPv6.isValid(raw)) {
    return classifyV6(ipaddr.IPv6.parse(raw));
  }
  return { address: raw, family: raw.includes(":") ? 6 : 4, class: "invalid" };
}

/**
 * Every form an address is judged in by the operator's allow/deny lists: the address itself and
 * each IPv4 address it carries, so `::ffff:127.0.0.3`, `::127.0.0.3`, `64:ff9b::7f00:3` and
 * `2002:7f00:3::` all match a list entry `127.0.0.3` (or `127.0.0.0/8`). Empty for a non-address.
 */
export function addressForms(ip: string): (ipaddr.IPv4 | ipaddr.IPv6)[] {
  const info = classifyAddress(ip);
  if (info.class === "invalid") return [];
  if (info.family === 4) return [ipaddr.IPv4.parse(info.address)];
  const v6 = ipaddr.IPv6.parse(info.address);
  return [v6, ...(embeddedIpv4(v6)?.v4 ?? [])];
}

export interface AddressPolicyOptions {
  /** Lift the refusal of loopback, RFC 1918, link-local, unique-local, site-local and CGNAT. */
  allowPrivateNetworks: boolean;
}

/** Why an address may not be connected to, or null when it may. */
export function addressRefusal(info: AddressInfo, opts: AddressPolicyOptions): AddressClass | null {
  if (info.class === "public") return null;
  if (opts.allowPrivateNetworks && PRIVATE_NETWORK_CLASSES.has(info.class)) return null;
  return info.class;
}

export function isForbiddenAddress(ip: string, opts: AddressPolicyOptions): boolean {
  return addressRefusal(classifyAddress(ip), opts) !== null;
}

/** Text for a refusal, safe to show a caller. */
export function describeAddressClass(cls: AddressClass): string {
  switch (cls) {
    case "loopback":
      return "a loopback address";
    case "private":
      return "a private network address";
    case "linkLocal":
      return "a link-local address";
    case "uniqueLocal":
      return "a unique-local (private IPv6) address";
    case "siteLocal":
      return "a site-local address";
    case "carrierGradeNat":
      return "a carrier-grade NAT address";
    case "metadata":
      return "a cloud metadata address";
    case "multicast":
      return "a multicast address";
    case "unspecified":
      return "the unspecified address";
    case "broadcast":
      return "the broadcast address";
    case "benchmarking":
      return "a benchmarking address";
    case "documentation":
      return "a documentation address";
    case "invalid":
      return "not a valid IP address";
    case "reserved":
      return "a reserved address";
    case "public":
      return "a public address";
  }
}
