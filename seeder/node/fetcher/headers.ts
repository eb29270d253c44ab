/**
 * What we send to an origin: the caller's headers minus those that are ours to set or that must
 * not cross to the origin, plus our own defaults.
 */
import { isDroppedHeader } from "../../../src/requests/headers";
import { FetchError } from "./errors";

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
// Field values: visible ASCII, obs-text, space and tab; CR, LF and NUL would split the request.
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

export const ACCEPT_ENCODING = "gzip, deflate, br";

const REFUSED_METHODS = new Set(["CONNECT", "TRACE", "TRACK"]);

/** Upper-cased method; CONNECT (tunnels), TRACE/TRACK (reflect headers) are refused. */
export function normaliseMethod(method: string): string {
  const m = method.trim().toUpperCase();
  if (!TOKEN.test(m)) throw new FetchError("bad_request", "The HTTP method is not valid");
  if (REFUSED_METHODS.has(m)) throw new FetchError("bad_request", `The ${m} method cannot be fetched`);
  return m;
}

/**
 * The caller's headers, cleaned; later duplicates (case-insensitive) replace earlier ones.
 * Throws FetchError('bad_request') on a header that could smuggle a second request.
 */
export function callerHeaders(headers: Record<string, string>): Record<string, string> {
  const out = new Map<string, [string, string]>();
  for (const [name, value] of Object.entries(headers)) {
    if (!TOKEN.test(name)) throw new FetchError("bad_request", "A request header name is not valid");
    const v = String(value).trim();
    if (!FIELD_VALUE.test(v))
      throw new FetchError("bad_request", `The value of the ${name} header contains forbidden characters`);
    if (isDroppedHeader(name)) continue;
    out.set(name.toLowerCase(), [name, v]);
  }
  return Object.fromEntries(out.values());
}

/**
 * Caller headers that may follow a redirect to another origin (scheme, host or port differs):
 * content negotiation and the body's own description, nothing that could be a credential.
 * Everything else (`X-Api-Key`, `X-Auth-Token`, custom headers…) was meant for the origin the
 * caller named and is dropped for the rest of the fetch, as browsers and curl do with
 * `Authorization`.
 */
const CROSS_ORIGIN_SAFE = new Set([
  "accept",
  "accept-language",
  "cache-control",
  "content-language",
  "content-type",
  "pragma",
  "range",
  "user-agent",
]);

export function crossOriginHeaders(headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).filter(([k]) => CROSS_ORIGIN_SAFE.has(k.toLowerCase())));
}

export function hasHeader(headers: Record<string, string>, name: string): boolean {
  const n = name.toLowerCase();
  return Object.keys(headers).some((k) => k.toLowerCase() === n);
}

export function withoutHeaders(
  headers: Record<string, string>,
  names: readonly string[],
): Record<string, string> {
  const drop = new Set(names.map((n) => n.toLowerCase()));
  return Object.fromEntries(Object.entries(headers).filter(([k]) => !drop.has(k.toLowerCase())));
}

/** Headers for one request on the wire: cleaned caller headers plus ours. */
export function requestHeaders(
  base: Record<string, string>,
  opts: { host: string; userAgent: string; bodyLength: number | null; extra?: Record<string, string> },
): Record<string, string> {
  const h: Record<string, string> = { Host: opts.host };
  if (!hasHeader(base, "user-agent")) h["User-Agent"] = opts.userAgent;
  if (!hasHeader(base, "accept")) h.Accept = "*/*";
  Object.assign(h, base);
  h["Accept-Encoding"] = ACCEPT_ENCODING;
  // No Connection header: HTTP/1.1 connections persist by default, and node:http's keep-alive
  // agent (keepalive.ts) adds `Connection: keep-alive` itself (or `close` when reuse is turned off).
  if (opts.bodyLength !== null) h["Content-Length"] = String(opts.bodyLength);
  if (opts.extra) Object.assign(h, opts.extra);
  return h;
}
