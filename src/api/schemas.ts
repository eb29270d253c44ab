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
  progress: v.pipe(v.number(), v.description("0, 10, 40, 50, 70, 80, 100")),
  expires_at: v.pipe(
    v.nullable(timestamp),
    v.description(
      "When the request expires (or expired): its `retention` after it became ready; null before.",
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
