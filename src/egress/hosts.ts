/**
 * Host-name rules: operator allow/deny patterns (`FETCHER__URL_ALLOWLIST`,
 * `FETCHER__URL_DENYLIST`) and names that point inside a network whatever DNS says.
 *
 * Patterns: `example.com` matches that host only; `*.example.com` matches any name below it
 * (`a.example.com`, `a.b.example.com`) but not `example.com` itself; an IP literal matches the
 * same address however the URL spells it. Matching is case-insensitive, ignores a trailing dot
 * and compares IDNs in their ASCII (punycode) form. Pure: runs on Workers and Bun.
 */

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
  /** Normalised host, without the `*.` prefix. */
  host: string;
  /** True for `*.host`: subdomains only. */
  subdomains: boolean;
}

/** Compile pattern strings; throws on one that is not a host or `*.host`. */
export function compileHostPatterns(patterns: readonly string[]): HostPattern[] {
  return patterns.map((source) => {
    const wildcard = source.trim().startsWith("*.");
    const body = wildcard ? source.trim().slice(2) : source.trim();
    const host = body.includes("*") || body.includes("/") ? null : normaliseHost(body);
    if (!host)
      throw new Error(`not a host pattern: ${JSON.stringify(source)} (use example.com or *.example.com)`);
    return { source, host, subdomains: wildcard };
  });
}

export function hostMatches(host: string, pattern: HostPattern): boolean {
  const h = normaliseHost(host);
  if (!h) return false;
  return pattern.subdomains ? h.endsWith(`.${pattern.host}`) : h === pattern.host;
}

export type HostListVerdict =
  | { allowed: true }
  | { allowed: false; reason: "denylisted" | "not_allowlisted" };

/** The deny list wins; a non-empty allow list admits only hosts that match it. */
export function checkHostLists(
  host: string,
  lists: { allow: readonly HostPattern[]; deny: readonly HostPattern[] },
): HostListVerdict {
  if (lists.deny.some((p) => hostMatches(host, p))) return { allowed: false, reason: "denylisted" };
  if (lists.allow.length > 0 && !lists.allow.some((p) => hostMatches(host, p)))
    return { allowed: false, reason: "not_allowlisted" };
  return { allowed: true };
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
