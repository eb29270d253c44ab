/**
 * Wire schemas of the v1 API. The same valibot schemas validate requests and generate the OpenAPI
 * document. Field names and status strings are the original ProxyTorrent's.
 */
import * as v from "valibot";
import { JOB_STATUSES } from "../db/schema";
import { httpUrlField } from "../egress/url-field";
import { callbackUrlField } from "../webhooks/schemas";

export const METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"] as const;

const targetUrl = v.pipe(
  httpUrlField({
    messages: {
      type: "url must be a string",
      tooLong: "URL is longer than 2083 characters",
      invalid: "Input should be a valid URL",
      scheme: "URL scheme should be 'http' or 'https'",
    },
    problem: (u) => (u.hostname ? null : "URL has no host"),
  }),
  v.description("The URL the node fetches (http or https)."),
);

const routeName = (field: string) =>
  v.pipe(
    v.string(`${field} must be a string`),
    v.regex(/^[A-Za-z0-9._-]{1,64}$/, `${field} must be 1-64 letters, digits, dots, dashes or underscores`),
  );

/** Bounds of the `headers` field of POST /v1/requests (documented in the README, "Limits"). */
export const HEADER_LIMITS = { count: 64, nameLength: 256, valueLength: 8192, totalLength: 32768 } as const;

const headersField = v.pipe(
  v.record(
    v.pipe(
      v.string(),
      v.minLength(1, "header names must not be empty"),
      v.maxLength(
        HEADER_LIMITS.nameLength,
        `header names are at most ${HEADER_LIMITS.nameLength} characters`,
      ),
    ),
    v.pipe(
      v.string("header values must be strings"),
      v.maxLength(
        HEADER_LIMITS.valueLength,
        `header values are at most ${HEADER_LIMITS.valueLength} characters`,
      ),
    ),
  ),
  v.check((h) => Object.keys(h).length <= HEADER_LIMITS.count, `at most ${HEADER_LIMITS.count} headers`),
  v.check(
    (h) =>
      Object.entries(h).reduce((n, [k, val]) => n + k.length + val.length, 0) <= HEADER_LIMITS.totalLength,
    `headers are at most ${HEADER_LIMITS.totalLength} characters in all (names and values)`,
  ),
);

/** Largest `retention` a schema states when STORAGE__MAX_RETENTION is 0 (no cap): about 285 years. */
const UNCAPPED_RETENTION = 2 ** 33;

export const createRequestSchema = (
  { maxTtl, defaultTtl }: { maxTtl: number; defaultTtl: number },
  { maxRetention, defaultRetention }: { maxRetention: number; defaultRetention: number },
) =>
  v.object({
    url: targetUrl,
    method: v.pipe(
      v.optional(v.picklist(METHODS, `method should be one of ${METHODS.join(", ")}`), "GET"),
      v.description("HTTP method used towards the origin."),
    ),
    headers: v.pipe(
      v.optional(v.nullable(headersField), null),
      v.description(
        `Headers sent to the origin (Authorization, Cookie and hop-by-hop headers are dropped). At most ${HEADER_LIMITS.count}, names up to ${HEADER_LIMITS.nameLength} and values up to ${HEADER_LIMITS.valueLength} characters, ${HEADER_LIMITS.totalLength} in all.`,
      ),
    ),
    body: v.pipe(
      v.optional(v.nullable(v.pipe(v.string(), v.maxLength(1_048_576, "body is larger than 1 MiB"))), null),
      v.description("Body sent to the origin (at most 1 MiB)."),
    ),
    region: v.pipe(
      v.optional(v.nullable(routeName("region")), null),
      v.description(
        "Only a node of this region may fetch (NODE__REGION). Default: any node without a region.",
      ),
    ),
    pool: v.pipe(
      v.optional(v.nullable(routeName("pool")), null),
      v.description("Only a node of this proxy pool may fetch (NODE__POOL)."),
    ),
    callback_url: callbackUrlField,
    ttl: v.pipe(
      v.optional(
        v.pipe(
          v.number("ttl must be a number"),
          v.integer("ttl must be a whole number"),
          v.minValue(0, "ttl must be at least 0"),
          v.maxValue(maxTtl, `ttl must be at most ${maxTtl}`),
        ),
        defaultTtl,
      ),
      v.description(
        "Seconds a ready result may be reused for an identical request (same method, URL, headers, body). 0 = always fetch fresh.",
      ),
    ),
    retention: v.pipe(
      v.optional(
        v.pipe(
          v.number("retention must be a number"),
          v.integer("retention must be a whole number"),
          v.minValue(1, "retention must be at least 1"),
          maxRetention > 0
            ? v.maxValue(maxRetention, `retention must be at most ${maxRetention} (STORAGE__MAX_RETENTION)`)
            : v.maxValue(UNCAPPED_RETENTION, `retention must be at most ${UNCAPPED_RETENTION}`),
        ),
        defaultRetention,
      ),
      v.description(
        "Seconds the content stays stored and seeded for this request once it is ready; then the request reads `expired`, its torrent and magnet answer 410 and its passkey stops working.",
      ),
    ),
    expected_sha256: v.pipe(
      v.optional(
        v.nullable(
          v.pipe(
            v.string("expected_sha256 must be a string"),
            v.regex(/^[0-9a-fA-F]{64}$/, "expected_sha256 must be 64 hexadecimal characters"),
            v.toLowerCase(),
          ),
        ),
        null,
      ),
      v.description(
        "SHA-256 (64 hex) the body must have: other bytes end the request in `error` with `integrity_mismatch` and are not stored. A node already holding content of this hash makes the torrent from it without fetching.",
      ),
    ),
    expected_size: v.pipe(
      v.optional(
        v.nullable(
          v.pipe(
            v.number("expected_size must be a number"),
            v.integer("expected_size must be a whole number"),
            v.minValue(1, "expected_size must be at least 1"),
          ),
        ),
        null,
      ),
      v.description(
        "Size in bytes the body must have: refused from Content-Length or as soon as it grows past it (`integrity_mismatch`).",
      ),
    ),
  });

const timestamp = v.pipe(v.string(), v.description("ISO 8601, UTC"));

export const createRequestResponse = v.object({
  id: v.string(),
  status: v.picklist(JOB_STATUSES),
  estimated_ready: v.pipe(v.number(), v.description("Rough seconds until ready (0 when already ready).")),
  created_at: timestamp,
});

export const requestStatusResponse = v.object({
  id: v.string(),
  status: v.picklist(JOB_STATUSES),
  url: v.string(),
  method: v.string(),
  created_at: timestamp,
  updated_at: timestamp,
  completed_at: v.nullable(timestamp),
  infohash: v.nullable(v.pipe(v.string(), v.description("v1 BitTorrent infohash, 40 hex"))),
  content_hash: v.nullable(v.pipe(v.string(), v.description("SHA-256 of the body, 64 hex"))),
  content_size: v.nullable(v.number()),
  content_type: v.nullable(v.string()),
  error_message: v.nullable(v.string()),
  error_code: v.pipe(
    v.nullable(v.string()),
    v.description(
      "Why a request ended in `error`, for programs: e.g. `http_status`, `timeout`, `too_large`, `mime_refused`, `egress_refused`, `insufficient_storage`, `integrity_mismatch`, `digest_mismatch`, `content_rejected`, `scan_unavailable` (README, States); null otherwise",
    ),
  ),
  progress: v.pipe(v.number(), v.description("0, 10, 40, 50, 70, 80, 100")),
  expires_at: v.pipe(
    v.nullable(timestamp),
    v.description(
      "When the request expires (or expired): its `retention` after it became ready; null before.",
    ),
  ),
  verified_digests: v.pipe(
    v.nullable(v.array(v.string())),
    v.description(
      "The origin's digests the stored body matched, as `content-digest: sha-256=:…:`, `repr-digest: sha-512=:…:` or `content-md5: …`; null when the origin sent none that could be checked.",
    ),
  ),
  scan: v.pipe(
    v.nullable(
      v.object({
        verdict: v.picklist(["clean", "infected", "unscanned"]),
        engine: v.pipe(
          v.nullable(v.string()),
          v.description("clamd's version: `ClamAV 1.4.6/<signatures>/<date>`"),
        ),
        scanned_at: v.nullable(timestamp),
      }),
    ),
    v.description(
      "The virus scan of the content (SCAN__CLAMD): `unscanned` when clamd failed and SCAN__FAIL_OPEN let it through; null when scanning is off or not done yet.",
    ),
  ),
});

export const magnetResponse = v.object({
  id: v.string(),
  magnet_link: v.string(),
  infohash: v.string(),
});

export const errorResponse = v.object({
  detail: v.union([
    v.string(),
    v.array(
      v.object({
        type: v.string(),
        loc: v.array(v.union([v.string(), v.number()])),
        msg: v.string(),
        input: v.unknown(),
      }),
    ),
  ]),
});

export const healthResponse = v.object({
  status: v.picklist(["healthy", "degraded"]),
  version: v.string(),
  runtime: v.picklist(["bun", "workerd"]),
  uptime: v.number(),
  checks: v.record(v.string(), v.object({ status: v.string() })),
});

export const usageResponse = v.object({
  tenant: v.nullable(
    v.pipe(v.string(), v.description("The tenant (null with SECURITY__AUTH_ENABLED=false)")),
  ),
  active_requests: v.pipe(
    v.number(),
    v.description("Requests not cancelled whose job is queued, fetching, packaging or seeding"),
  ),
  max_active_requests: v.nullable(
    v.pipe(v.number(), v.description("Active-request quota; null = unlimited")),
  ),
  stored_bytes: v.pipe(
    v.number(),
    v.description("content_size of live ready requests, each content hash once"),
  ),
  max_stored_bytes: v.nullable(v.pipe(v.number(), v.description("Stored-bytes quota; null = unlimited"))),
});

// ---------- history: GET /v1/requests and /v1/requests/export ----------

/** Most requests one page of GET /v1/requests holds, and the default. */
export const LIST_LIMITS = { max: 200, default: 50 } as const;

/**
 * The cursor is opaque to clients: base64url of `[created_at, id]`, the keyset of the last request
 * of the page. Anything that does not decode to that shape is refused (422). A well-formed cursor
 * someone made up only moves where the page starts: the tenant and filters still apply.
 */
export function encodeCursor(p: { createdAt: number; id: string }): string {
  return btoa(JSON.stringify([p.createdAt, p.id]))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");
}

export function decodeCursor(cursor: string): { createdAt: number; id: string } | null {
  if (!/^[A-Za-z0-9_-]{1,200}$/.test(cursor)) return null;
  try {
    const p: unknown = JSON.parse(atob(cursor.replace(/-/g, "+").replace(/_/g, "/")));
    if (!Array.isArray(p) || p.length !== 2) return null;
    const [createdAt, id] = p as unknown[];
    if (!Number.isSafeInteger(createdAt) || (createdAt as number) < 0) return null;
    if (typeof id !== "string" || !/^[A-Za-z0-9-]{1,64}$/.test(id)) return null;
    return { createdAt: createdAt as number, id };
  } catch {
    return null;
  }
}

/** A query parameter given more than once arrives as an array: refused, except for `status`. */
const once = (field: string) => v.string(`${field} must be given once`);

const instant = (field: string, description: string) =>
  v.optional(
    v.pipe(
      once(field),
      v.isoTimestamp(`${field} must be an ISO 8601 instant with a time zone, e.g. 2026-01-31T12:00:00Z`),
      v.transform((s) => Date.parse(s)),
      v.check((ms) => Number.isFinite(ms), `${field} is not a date this service can read`),
      v.description(description),
    ),
  );

const historyFilters = {
  status: v.optional(
    v.pipe(
      v.union([v.string(), v.array(v.string())]),
      v.transform((s) =>
        (Array.isArray(s) ? s : [s])
          .flatMap((x) => x.split(","))
          .map((x) => x.trim())
          .filter(Boolean),
      ),
      v.array(v.picklist(JOB_STATUSES, `status should be one of ${JOB_STATUSES.join(", ")}`)),
      v.description(
        "Only requests in these statuses: one, or several comma-separated (`status=ready,error`).",
      ),
    ),
  ),
  since: instant("since", "Only requests created at or after this instant (ISO 8601 with a time zone)."),
  until: instant("until", "Only requests created before this instant (ISO 8601 with a time zone)."),
  q: v.optional(
    v.pipe(
      once("q"),
      v.maxLength(2083, "q is longer than 2083 characters"),
      v.description("Only requests whose URL contains this text (ASCII letters match either case)."),
    ),
  ),
  tenant: v.optional(
    v.pipe(
      once("tenant"),
      v.minLength(1, "tenant must not be empty"),
      v.maxLength(256, "tenant is longer than 256 characters"),
      v.description("Admins only: only this tenant's requests (others get 422)."),
    ),
  ),
};

export const listRequestsQuery = v.object({
  ...historyFilters,
  limit: v.optional(
    v.pipe(
      once("limit"),
      v.regex(/^\d{1,6}$/, "limit must be a whole number"),
      v.transform(Number),
      v.minValue(1, "limit must be at least 1"),
      v.maxValue(LIST_LIMITS.max, `limit must be at most ${LIST_LIMITS.max}`),
      v.description(`Requests per page, 1-${LIST_LIMITS.max} (default ${LIST_LIMITS.default}).`),
    ),
    String(LIST_LIMITS.default),
  ),
  cursor: v.optional(
    v.pipe(
      once("cursor"),
      v.rawTransform(({ dataset, addIssue, NEVER }) => {
        const p = decodeCursor(dataset.value);
        if (p) return p;
        addIssue({ message: "cursor is not valid: pass the previous page's next_cursor unchanged" });
        return NEVER;
      }),
      v.description("The previous page's `next_cursor`, to get the next (older) page."),
    ),
  ),
});

export const EXPORT_FORMATS = ["csv", "ndjson", "json"] as const;

export const exportRequestsQuery = v.object({
  ...historyFilters,
  format: v.pipe(
    v.optional(v.picklist(EXPORT_FORMATS, `format should be one of ${EXPORT_FORMATS.join(", ")}`), "json"),
    v.description("csv (with a header row), ndjson (one object per line) or json (one array). Default json."),
  ),
});

export const requestListResponse = v.object({
  items: v.array(requestStatusResponse),
  next_cursor: v.pipe(
    v.nullable(v.string()),
    v.description("Pass as `cursor` for the next (older) page; null on the last page."),
  ),
});
