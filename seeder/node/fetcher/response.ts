/**
 * Reading a response head: the status, MIME and size checks every stored response passes, and
 * what the first good response says about resuming (the Representation).
 */
import type { IncomingMessage } from "node:http";
import type { Config } from "../../../src/config";
import type { TargetUrl } from "../../../src/egress";
import { type ContentCoding, contentCoding } from "./body";
import { FetchError, isTransientStatus } from "./errors";
import { isMimeAllowed, mimeEssence } from "./mime";

/** What the first good response told us, to decide whether and how to resume. */
export interface Representation {
  status: number;
  contentType: string;
  coding: ContentCoding;
  /** Encoded length of the whole body, when known. */
  length: number | null;
  /** Strong ETag or Last-Modified, for If-Range; null when the body cannot be resumed. */
  validator: string | null;
}

export function header(res: IncomingMessage, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v.join(", ") : v;
}

function statusText(res: IncomingMessage): string {
  const reason = (res.statusMessage ?? "").replace(/[^\x20-\x7e]/g, "").slice(0, 80);
  return reason ? `${res.statusCode} ${reason}` : String(res.statusCode);
}

function parseLength(v: string | undefined, host: string): number | null {
  if (v === undefined) return null;
  if (!/^\d+$/.test(v.trim())) throw new FetchError("bad_response", `${host} sent an invalid Content-Length`);
  return Number(v.trim());
}

/** Status, MIME and size checks every stored response passes. */
export function acceptResponse(
  res: IncomingMessage,
  target: TargetUrl,
  method: string,
  expectPartial: boolean,
  cfg: Pick<Config["fetcher"], "mimeWhitelist" | "maxSize">,
): Representation {
  const status = res.statusCode ?? 0;
  const ok = expectPartial ? status === 206 || status === 200 : status >= 200 && status < 300;
  if (!ok)
    throw new FetchError("http_status", `Origin answered ${statusText(res)}`, {
      status,
      transient: isTransientStatus(status),
    });
  const contentType = (header(res, "content-type") ?? "").trim();
  if (!isMimeAllowed(contentType, cfg.mimeWhitelist))
    throw new FetchError(
      "mime_refused",
      // Names the setting, so whoever reads this (the operator's log, or a caller asking the
      // operator) knows what would allow it.
      contentType
        ? `Content-Type ${mimeEssence(contentType)} is not allowed (its operator can add it to FETCHER__MIME_WHITELIST)`
        : "The origin sent no Content-Type, and only listed types are allowed (its operator can add */* to FETCHER__MIME_WHITELIST)",
    );
  const coding = contentCoding(header(res, "content-encoding"), target.hostname);
  const length = parseLength(header(res, "content-length"), target.hostname);
  // The decoded size is only known for identity bodies; encoded ones are capped while streaming.
  if (coding === "identity" && length !== null && length > cfg.maxSize && status !== 206 && method !== "HEAD")
    throw new FetchError(
      "too_large",
      `The body is ${length} bytes, larger than the limit of ${cfg.maxSize} bytes`,
    );
  const etag = header(res, "etag")?.trim();
  const lastModified = header(res, "last-modified")?.trim();
  const ranges = (header(res, "accept-ranges") ?? "")
    .toLowerCase()
    .split(",")
    .map((s) => s.trim());
  const strongEtag = etag && !etag.startsWith("W/") ? etag : null;
  const validator =
    coding === "identity" && ranges.includes("bytes") ? (strongEtag ?? lastModified ?? null) : null;
  return { status, contentType, coding, length, validator };
}

/** The body's final size when the origin announced it (identity coding, whole body). */
export const wholeLength = (r: Representation): number | null =>
  r.coding === "identity" && r.status === 200 ? r.length : null;

/** Encoded bytes this response should carry (Content-Length), or null when it does not say. */
export function expectedFor(res: IncomingMessage, rep: Representation): number | null {
  if (res.statusCode === 206) {
    const len = header(res, "content-length");
    return len && /^\d+$/.test(len) ? Number(len) : null;
  }
  return rep.length;
}

/** Does a 206 answer continue exactly where we stopped (and describe the same total length)? */
export function rangeContinues(res: IncomingMessage, from: number, total: number | null): boolean {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec((header(res, "content-range") ?? "").trim());
  if (!m) return false;
  if (Number(m[1]) !== from) return false;
  if (total !== null && m[3] !== "*" && Number(m[3]) !== total) return false;
  return true;
}
