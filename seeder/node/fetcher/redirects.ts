/** The redirect loop: follow 3xx answers to the response that will be stored. */
import type { TargetUrl } from "../../../src/egress";
import { FetchError } from "./errors";
import { crossOriginHeaders, withoutHeaders } from "./headers";
import { discardBody } from "./keepalive";
import type { Exchange, Hop, Send } from "./request";
import { header } from "./response";
import type { FetchRun } from "./run";

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** A redirect's body is read (to keep its connection) only up to this size and this long. */
const DISCARD_MAX_BYTES = 64 * 1024;
const DISCARD_TIMEOUT_MS = 1000;

export interface RedirectOptions {
  maxRedirects: number;
  readTimeoutMs: number;
  /** Parse and egress-check a Location against the current URL. */
  checkUrl(raw: string, base: URL): TargetUrl;
  /** Headers added to every hop (a resumed body's Range and If-Range). */
  extra?: Record<string, string>;
}

/**
 * Send `first`, and each redirect's next hop (every one through the full egress gate), until an
 * answer is not a redirect. Returns that exchange and the hop that produced it; its connection
 * is the caller's to settle. On a throw, no connection is left open.
 */
export async function followRedirects(
  send: Send,
  run: FetchRun,
  first: Hop,
  o: RedirectOptions,
): Promise<{ ex: Exchange; hop: Hop }> {
  let hop = first;
  for (let redirects = 0; ; redirects++) {
    const ex = await send(run, hop, o.extra);
    const status = ex.res.statusCode ?? 0;
    const location = header(ex.res, "location");
    if (!REDIRECTS.has(status) || !location) return { ex, hop };
    let next: Hop;
    try {
      if (redirects >= o.maxRedirects)
        throw new FetchError("too_many_redirects", `More than ${o.maxRedirects} redirects`, {
          transient: false,
        });
      const target = o.checkUrl(location, hop.target.url);
      next = {
        ...hop,
        target,
        headers: target.url.origin !== hop.target.url.origin ? crossOriginHeaders(hop.headers) : hop.headers,
      };
    } catch (e) {
      ex.conn.destroy();
      throw e;
    }
    // Read the (small) redirect body so the connection can carry the next hop if it goes to the
    // same place; anything else closes it. discardBody settles the lease.
    await discardBody(ex.res, ex.conn, {
      maxBytes: DISCARD_MAX_BYTES,
      timeoutMs: Math.min(DISCARD_TIMEOUT_MS, o.readTimeoutMs),
      signal: run.signal,
      method: hop.method,
    });
    if (run.signal.aborted) throw run.signal.reason;
    if (status === 303 || ((status === 301 || status === 302) && hop.method === "POST")) {
      next = {
        ...next,
        method: hop.method === "HEAD" ? "HEAD" : "GET",
        body: null,
        headers: withoutHeaders(next.headers, ["content-type", "content-encoding", "content-language"]),
      };
    }
    hop = next;
  }
}
