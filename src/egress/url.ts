/**
 * Parse a URL a caller (or a redirect) asks us to fetch, the way the WHATWG URL standard does,
 * so odd spellings are judged as what they really are: `http://2130706433/`, `http://0x7f.1/`,
 * `http://0177.0.0.1/`, `http://127.1/`, `http://１２７.０.０.１/` and `http://127.0.0.1./` are
 * all 127.0.0.1; `http://[::ffff:7f00:1]/` is an IPv6 literal whose brackets are removed.
 * Pure: runs on Workers and Bun.
 */
import ipaddr from "ipaddr.js";

export interface TargetUrl {
  /** The parsed URL (WHATWG-normalised: host lower-cased, IPv4 in dotted quads). */
  url: URL;
  scheme: "http" | "https";
  /** Host without brackets and without a trailing dot: what DNS, SNI and the policy see. */
  hostname: string;
  port: number;
  /** Set when the host is an IP literal. */
  ip: { address: string; family: 4 | 6 } | null;
}

export type UrlProblem = "invalid" | "scheme" | "userinfo" | "host" | "port";

export class TargetUrlError extends Error {
  constructor(
    readonly problem: UrlProblem,
    message: string,
  ) {
    super(message);
    this.name = "TargetUrlError";
  }
}

/** Parse and normalise a target URL; throws TargetUrlError with a caller-readable message. */
export function parseTargetUrl(raw: string, base?: string | URL): TargetUrl {
  let url: URL;
  try {
    url = base === undefined ? new URL(raw) : new URL(raw, base);
  } catch {
    throw new TargetUrlError("invalid", "Not a valid URL");
  }
  const scheme = url.protocol.slice(0, -1).toLowerCase();
  if (scheme !== "http" && scheme !== "https")
    throw new TargetUrlError("scheme", `Only http and https URLs can be fetched (got ${scheme}:)`);
  // `http://user@127.0.0.1` and `http://public.example@10.0.0.1` are classic confusion tricks,
  // and credentials in a URL would end up in logs and torrent names.
  if (url.username !== "" || url.password !== "")
    throw new TargetUrlError("userinfo", "URLs with a user name or password are not accepted");
  const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1").replace(/\.$/, "");
  if (!hostname) throw new TargetUrlError("host", "The URL has no host");
  const port = url.port ? Number(url.port) : scheme === "https" ? 443 : 80;
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    throw new TargetUrlError("port", "The URL's port is not valid");
  let ip: TargetUrl["ip"] = null;
  if (url.hostname.startsWith("[")) ip = { address: ipaddr.IPv6.parse(hostname).toString(), family: 6 };
  else if (ipaddr.IPv4.isValidFourPartDecimal(hostname)) ip = { address: hostname, family: 4 };
  url.hash = "";
  return { url, scheme, hostname, port, ip };
}
