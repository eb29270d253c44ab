/**
 * The caller's address, from trusted sources only. The runtime gives the peer (the socket's remote
 * address on Bun, CF-Connecting-IP on Workers, which Cloudflare sets). `X-Forwarded-For` is read
 * only when that peer is one of SECURITY__TRUSTED_PROXIES, and then from the right: each trusted
 * proxy appends the address it saw, so the first untrusted entry from the right is the client. Any
 * entries further left were written by the client and are ignored.
 */
import ipaddr from "ipaddr.js";

type Range = [ipaddr.IPv4 | ipaddr.IPv6, number];

/** Parse an address, unwrapping IPv4-mapped IPv6 (`::ffff:1.2.3.4` is 1.2.3.4); null if invalid. */
function parseIp(raw: string): ipaddr.IPv4 | ipaddr.IPv6 | null {
  const s = raw.trim().replace(/^\[(.*)\](:\d+)?$/, "$1");
  if (!ipaddr.isValid(s)) return null;
  return ipaddr.process(s);
}

export function parseRanges(cidrs: readonly string[]): Range[] {
  return cidrs.map((c) => {
    if (c.includes("/")) {
      const [addr, bits] = ipaddr.parseCIDR(c);
      // A v4 range also covers v4-mapped peers, which parseIp turns into v4.
      if (addr.kind() === "ipv6" && (addr as ipaddr.IPv6).isIPv4MappedAddress() && bits >= 96)
        return [(addr as ipaddr.IPv6).toIPv4Address(), bits - 96] as Range;
      return [addr, bits] as Range;
    }
    const a = ipaddr.process(c);
    return [a, a.kind() === "ipv4" ? 32 : 128] as Range;
  });
}

function inRanges(addr: ipaddr.IPv4 | ipaddr.IPv6, ranges: Range[]): boolean {
  return ranges.some(([base, bits]) => base.kind() === addr.kind() && addr.match(base, bits));
}

export type ClientIpResolver = (peer: string | null, headers: Headers) => string | null;

export function createClientIpResolver(trustedProxies: readonly string[]): ClientIpResolver {
  const trusted = parseRanges(trustedProxies);
  return (peer, headers) => {
    if (!peer) return null;
    const peerAddr = parseIp(peer);
    if (!peerAddr) return peer;
    let client = peerAddr;
    if (trusted.length && inRanges(peerAddr, trusted)) {
      const hops = (headers.get("x-forwarded-for") ?? "")
        .split(",")
        .map((h) => h.trim())
        .filter(Boolean);
      for (let i = hops.length - 1; i >= 0; i--) {
        const hop = parseIp(hops[i]!);
        if (!hop) break; // garbage from an untrusted writer: stop at the last address we believe
        client = hop;
        if (!inRanges(hop, trusted)) break;
      }
    }
    return client.kind() === "ipv6" ? (client as ipaddr.IPv6).toRFC5952String() : client.toString();
  };
}

/**
 * The rate-limit bucket of an address: IPv4 as is, IPv6 by its /64 (one subscriber usually holds a
 * whole /64 and could otherwise rotate through it to escape the limit).
 */
export function ipBucket(ip: string | null): string {
  if (!ip) return "unknown";
  const a = parseIp(ip);
  if (!a) return ip;
  if (a.kind() === "ipv4") return a.toString();
  const parts = (a as ipaddr.IPv6).parts.slice(0, 4).concat([0, 0, 0, 0]);
  return `${new ipaddr.IPv6(parts).toRFC5952String()}/64`;
}
