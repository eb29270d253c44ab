/**
 * Host-name rules: operator allow/deny patterns (`FETCHER__URL_ALLOWLIST`,
 * `FETCHER__URL_DENYLIST`) and names that point inside a network whatever DNS says.
 *
 * Patterns: `example.com` matches that host only; `*.example.com` matches any name below it
 * (`a.example.com`, `a.b.example.com`) but not `example.com` itself; an IP (`127.0.0.3`, `::1`)
 * or a CIDR (`10.0.0.0/8`) matches addresses: an IP literal however the URL spells it, IPv6 forms
 * that carry an IPv4 address (`::ffff:127.0.0.3`, NAT64, 6to4, Teredo) by that address too, and,
 * on every hop, each address a name resolves to (policy.ts `checkAddresses`). Name matching is
 * case-insensitive, ignores a trailing dot and compares IDNs in their ASCII (punycode) form.
 * Pure: runs on Workers and Bun.
 */
import ipaddr from "ipaddr.js";
import { addressForms } from "./address";

/** Lower-cased ASCII form of a host as the WHATWG URL parser gives it, without brackets or a trailing dot. */
export function normaliseHost(host: string): string | null {
  const h = host.trim();
  if (!h) return null;
  try {
    const parsed = new URL(`http://${h.includes(":") && !h.startsWith("[") ? `[${h}]` : h}/`).hostname;
    return parsed.replace(/^\[(.*)\]$/, "$1").replace(/\.$/, "");
  } catch {
    return null;
  }
}

export interface HostPattern {
  /** The pattern as the operator wrote it. */
  source: string;
  /** Normalised host, without the `*.` prefix (for an address entry: its canonical text). */
  host: string;
  /** True for `*.host`: subdomains only. */
  subdomains: boolean;
  /**
   * Set for an IP entry (`127.0.0.3`, `::1`) or a CIDR (`10.0.0.0/8`, `fd00::/8`): it matches
   * addresses, in every form that carries them (see `addressForms`), never names.
   */
  cidr?: [ipaddr.IPv4 | ipaddr.IPv6, number];
}

/** An IP or CIDR entry as a range; IPv4-mapped IPv6 entries become the IPv4 range they cover. */
function parseAddressEntry(body: string): [ipaddr.IPv4 | ipaddr.IPv6, number] | null {
  let range: [ipaddr.IPv4 | ipaddr.IPv6, number];
  if (body.includes("/")) {
    try {
      range = ipaddr.parseCIDR(body.replace(/^\[(.*)\](\/\d+)$/, "$1$2"));
    } catch {
      return null;
    }
  } else {
    const forms = addressForms(body);
    if (forms.length === 0) return null;
    const addr = forms[0]!;
    range = [addr, addr.kind() === "ipv4" ? 32 : 128];
  }
  const [addr, bits] = range;
  if (addr.kind() === "ipv6" && (addr as ipaddr.IPv6).isIPv4MappedAddress() && bits >= 96)
    return [(addr as ipaddr.IPv6).toIPv4Address(), bits - 96];
  return range;
}

/** Compile pattern strings; throws on one that is not a host, `*.host`, an IP or a CIDR. */
export function compileHostPatterns(patterns: readonly string[]): HostPattern[] {
  return patterns.map((source) => {
    const trimmed = source.trim();
    const cidr = trimmed.startsWith("*.") ? null : parseAddressEntry(trimmed);
    if (cidr) return { source, host: `${cidr[0].toString()}/${cidr[1]}`, subdomains: false, cidr };
    const wildcard = trimmed.startsWith("*.");
    const body = wildcard ? trimmed.slice(2) : trimmed;
    const host = body.includes("*") || body.includes("/") ? null : normaliseHost(body);
    if (!host)
      throw new Error(
        `not a host pattern: ${JSON.stringify(source)} (use example.com, *.example.com, an IP or a CIDR)`,
      );
    return { source, host, subdomains: wildcard };
  });
}

function addressMatches(forms: readonly (ipaddr.IPv4 | ipaddr.IPv6)[], pattern: HostPattern): boolean {
  const cidr = pattern.cidr;
  if (!cidr) return false;
  return forms.some((f) => f.kind() === cidr[0].kind() && f.match(cidr));
}

/** Does a URL host (a name or an IP literal in any spelling) match one pattern? */
export function hostMatches(host: string, pattern: HostPattern): boolean {
  const h = normaliseHost(host);
  if (!h) return false;
  if (pattern.cidr) return addressMatches(addressForms(h), pattern);
  return pattern.subdomains ? h.endsWith(`.${pattern.host}`) : h === pattern.host;
}

/** Does a resolved address (in any of its forms) match one pattern? Name patterns never do. */
export function addressMatchesPattern(address: string, pattern: HostPattern): boolean {
  return addressMatches(addressForms(address), pattern);
}

export type HostListVerdict =
  | { allowed: true }
  | { allowed: false; reason: "denylisted" | "not_allowlisted" };

/**
 * The deny list wins; a non-empty allow list admits only hosts that match it. A name that matches
 * no name entry of the allow list, while the list has IP/CIDR entries, is let through here: its
 * resolved addresses decide (`checkAddresses`), or, where nothing is resolved here (socks5h), it
 * is refused (`allowlistNeedsAddresses`).
 */
export function checkHostLists(
  host: string,
  lists: { allow: readonly HostPattern[]; deny: readonly HostPattern[] },
): HostListVerdict {
  if (lists.deny.some((p) => hostMatches(host, p))) return { allowed: false, reason: "denylisted" };
  if (
    lists.allow.length > 0 &&
    !lists.allow.some((p) => hostMatches(host, p)) &&
    !allowlistNeedsAddresses(host, lists)
  )
    return { allowed: false, reason: "not_allowlisted" };
  return { allowed: true };
}

/**
 * True when only the addresses a name resolves to can admit it: the allow list has IP/CIDR
 * entries, and no name entry matches this name.
 */
export function allowlistNeedsAddresses(host: string, lists: { allow: readonly HostPattern[] }): boolean {
  const h = normaliseHost(host);
  if (!h || addressForms(h).length > 0) return false; // an IP literal was judged already
  return lists.allow.some((p) => p.cidr) && !lists.allow.some((p) => !p.cidr && hostMatches(h, p));
}

/** Names of cloud metadata services: refused always, like their addresses. */
export const METADATA_HOSTNAMES: ReadonlySet<string> = new Set([
  "metadata",
  "metadata.google.internal",
  "metadata.goog",
  "metadata.azure.com",
  "instance-data",
  "instance-data.ec2.internal",
]);

/**
 * Names that mean "inside this network" by definition, not by what a resolver says today:
 * `localhost` and `*.localhost` (RFC 6761), `*.local` (mDNS), `*.internal` (ICANN private use),
 * `*.home.arpa` (RFC 8375), and single-label names (resolved through search domains to
 * intranet hosts). With local resolution the addresses would be caught anyway; with `socks5h`
 * (the proxy resolves) these names are the only thing the guard can judge.
 */
export function internalHostnameKind(host: string): "metadata" | "internal" | null {
  const h = normaliseHost(host);
  if (!h) return "internal";
  if (METADATA_HOSTNAMES.has(h)) return "metadata";
  if (!h.includes(".")) return "internal";
  if (/(^|\.)localhost$/.test(h)) return "internal";
  if (/\.(local|internal|intranet|lan|home\.arpa)$/.test(h)) return "internal";
  return null;
}
