/**
 * Which of a caller's headers never travel to an origin. Shared by the API (so they are not even
 * stored with the job) and the fetcher (the last line of defence). Runs on Workers and Bun.
 */

/**
 * Dropped from the caller's headers:
 * - hop-by-hop headers (RFC 9110 §7.6.1) and anything `proxy-*`: they describe one connection,
 *   and proxy credentials must never reach an origin;
 * - `host`, `content-length`, `expect`: framing is ours (Host follows the URL of each hop);
 * - `accept-encoding`: we decode what we ask for (gzip, deflate, br) and store decoded bytes;
 * - `authorization`, `cookie`, `x-signature`: the original dropped these (the last one is our
 *   own API's signature header). A caller's credentials for the origin are therefore NOT
 *   forwarded; this is kept on purpose, since they would also be replayed to every redirect
 *   target and stored in the job row.
 */
const DROPPED = new Set([
  "connection",
  "keep-alive",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "http2-settings",
  "host",
  "content-length",
  "expect",
  "accept-encoding",
  "authorization",
  "cookie",
  "x-signature",
]);

export function isDroppedHeader(name: string): boolean {
  const n = name.toLowerCase();
  return DROPPED.has(n) || n.startsWith("proxy-");
}
