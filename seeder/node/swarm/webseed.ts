/**
 * BEP 19 web seed: plain HTTP GET/HEAD with byte ranges over a CAS blob.
 *
 * URL layout (src/torrents/links.ts): a torrent's url-list entry is `<publicUrl>/webseed/<key>/`
 * (trailing slash), the key being a request's passkey or, with TORRENT__ACCESS=open, the content
 * hash. For single-file torrents BEP 19 clients append the torrent name, so requests arrive as
 * `/webseed/<key>/<name>`; some clients use the URL as is (`/webseed/<key>/` or without the
 * slash). We serve by key only and ignore whatever follows it.
 *
 * The body is `Bun.file(path).slice(...)`, which Bun.serve sends with sendfile(2): no copies
 * through JavaScript (measured ~4 GB/s raw on loopback).
 */

/**
 * Browsers may fetch the web seed from any page (a later in-browser download does): the URL itself
 * is the credential, no cookie is involved, so `*` is safe. Range needs these headers exposed.
 */
export const WEBSEED_CORS = {
  "access-control-allow-origin": "*",
  "access-control-expose-headers": "Accept-Ranges, Content-Range, Content-Length, Content-Disposition",
};

/** A CORS preflight (a Range header that is not a single simple range needs one). */
export function webSeedPreflight(): Response {
  return new Response(null, {
    status: 204,
    headers: {
      ...WEBSEED_CORS,
      "access-control-allow-methods": "GET, HEAD, OPTIONS",
      "access-control-allow-headers": "Range",
      "access-control-max-age": "86400",
    },
  });
}

type Range = { start: number; end: number } | "unsatisfiable" | null;

/**
 * One `bytes=` range (RFC 9110 14.1.2). null = serve the whole file (no header, a unit we do not
 * know, a malformed header, or several ranges: a server may always ignore Range, and no BitTorrent
 * client sends multi-ranges).
 */
export function parseRange(header: string | null, size: number): Range {
  if (!header) return null;
  const m = header.trim().match(/^bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i);
  if (!m) return null;
  const [, a = "", b = ""] = m;
  if (a === "" && b === "") return null;
  if (a === "") {
    // Suffix range: the last N bytes.
    const n = Number(b);
    if (n === 0 || size === 0) return "unsatisfiable";
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  if (!Number.isSafeInteger(start)) return null;
  if (b !== "" && Number(b) < start) return null; // "5-3" is not a valid range: ignore the header
  if (start >= size) return "unsatisfiable";
  return { start, end: b === "" ? size - 1 : Math.min(Number(b), size - 1) };
}

/** `attachment; filename="ascii"; filename*=UTF-8''percent-encoded` (RFC 6266 / 8187). */
function contentDisposition(name: string): string {
  // Controls must not reach a header; quotes and backslashes would end the quoted string.
  const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, "_");
  const encoded = encodeURIComponent(name).replace(
    /['()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encoded}`;
}

/**
 * Answer a web seed request for the blob at `path` (`size` bytes) downloaded as `name`.
 * GET and HEAD; one byte range -> 206, unsatisfiable -> 416, otherwise 200 with the whole file.
 */
export function webSeedResponse(req: Request, path: string, size: number, name: string): Response {
  const headers = new Headers({
    ...WEBSEED_CORS,
    "accept-ranges": "bytes",
    "content-type": "application/octet-stream",
    "content-disposition": contentDisposition(name),
    // The blob is whatever some website sent (HTML included); never let a browser render it as
    // our origin's page.
    "x-content-type-options": "nosniff",
  });
  if (req.method !== "GET" && req.method !== "HEAD") {
    headers.set("allow", "GET, HEAD, OPTIONS");
    return new Response("method not allowed", { status: 405, headers });
  }
  const range = parseRange(req.headers.get("range"), size);
  if (range === "unsatisfiable") {
    headers.set("content-range", `bytes */${size}`);
    return new Response(null, { status: 416, headers });
  }
  const start = range ? range.start : 0;
  const end = range ? range.end : size - 1;
  const length = end - start + 1;
  if (range) headers.set("content-range", `bytes ${start}-${end}/${size}`);
  const status = range ? 206 : 200;
  if (req.method === "HEAD") {
    headers.set("content-length", String(length));
    return new Response(null, { status, headers });
  }
  // Bun sets Content-Length from the slice and streams it with sendfile.
  const body = length > 0 ? Bun.file(path).slice(start, end + 1) : null;
  return new Response(body, { status, headers });
}
