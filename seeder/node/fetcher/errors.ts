/**
 * The one error type a fetch ends with. `message` is written for the caller (it ends up in the
 * request's `error_message`): it names the URL's host when useful, never a proxy's address or
 * credentials, resolved addresses or stack traces. `detail` is for operators' logs (a system
 * error code such as ECONNRESET), still without secrets.
 */

export type FetchErrorCode =
  /** The URL cannot be fetched as written (syntax, scheme, user info, port). Permanent. */
  | "bad_url"
  /** Method or headers the fetcher refuses to send (CONNECT/TRACE, CR/LF in a value). Permanent. */
  | "bad_request"
  /** The egress guard refused the destination (private address, deny list...). Permanent. */
  | "egress_refused"
  /** The configured proxy could not be used (unreachable, handshake refused, bad credentials). */
  | "proxy_failed"
  /** Name resolution, connect or mid-transfer failure (refused, reset, unreachable). */
  | "network"
  /** TLS handshake or certificate verification failed. Permanent. */
  | "tls"
  /** Connect timeout, idle-read timeout or the total deadline. Transient. */
  | "timeout"
  /** The caller's AbortSignal fired (request cancelled). Not retried. */
  | "aborted"
  /** The origin answered a non-2xx status. Transient for 408, 425, 429 and 5xx. */
  | "http_status"
  /** More redirects than FETCHER__MAX_REDIRECTS. Permanent. */
  | "too_many_redirects"
  /** Content-Type not in FETCHER__MIME_WHITELIST. Permanent. */
  | "mime_refused"
  /** Body above FETCHER__MAX_SIZE (decoded bytes), or a decompression bomb. Permanent. */
  | "too_large"
  /** The origin's response could not be parsed or decoded. Permanent. */
  | "bad_response"
  /** Writing the body to the content store failed (permissions, I/O). Transient. */
  | "storage"
  /**
   * The body does not fit: STORAGE__MAX_BYTES or STORAGE__MIN_FREE_BYTES would be crossed even
   * after freeing what no live request needs, or the disk filled up (ENOSPC) mid-write. Permanent:
   * the node already freed what it could, and space comes back only as content expires or an
   * operator acts (hours, not the seconds of a retry's backoff); retrying would fetch the body
   * again each time for nothing. A caller may ask again later.
   */
  | "insufficient_storage"
  /**
   * The body is not what the caller expected (`expected_sha256`, `expected_size`). Permanent: the
   * origin sent other bytes; asking again would fetch the whole body again for the same answer.
   */
  | "integrity_mismatch"
  /**
   * The body does not match the origin's own Content-Digest, Repr-Digest or Content-MD5.
   * Transient (digests.ts): a transfer corrupted on the way may arrive intact next time.
   */
  | "digest_mismatch";

const TRANSIENT_BY_DEFAULT: ReadonlySet<FetchErrorCode> = new Set<FetchErrorCode>([
  "proxy_failed",
  "network",
  "timeout",
  "storage",
]);

export interface FetchErrorOptions {
  /** Overrides the code's default retry verdict. */
  transient?: boolean;
  /** The origin's status code, for `http_status`. */
  status?: number;
  /** Operator-facing detail for logs (an error code, never a secret). */
  detail?: string;
}

export class FetchError extends Error {
  readonly code: FetchErrorCode;
  /** True when trying again later may succeed (the queue retries with backoff). */
  readonly transient: boolean;
  readonly status?: number;
  readonly detail?: string;

  constructor(code: FetchErrorCode, message: string, opts: FetchErrorOptions = {}) {
    super(message);
    this.name = "FetchError";
    this.code = code;
    this.transient = opts.transient ?? TRANSIENT_BY_DEFAULT.has(code);
    if (opts.status !== undefined) this.status = opts.status;
    if (opts.detail !== undefined) this.detail = opts.detail;
  }
}

/** Statuses worth retrying later: request timeout, too early, rate limited, server errors. */
export function isTransientStatus(status: number): boolean {
  return status === 408 || status === 425 || status === 429 || status >= 500;
}
