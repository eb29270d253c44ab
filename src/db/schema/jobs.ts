/**
 * The database is the only channel between the API (edge or embedded) and seeder nodes.
 *
 * Two tables carry the work:
 * - `fetch_jobs`: one fetch of one (method, URL, headers, body) fingerprint. Nodes claim jobs with a
 *   lease; the job carries status, progress, the stored content and the .torrent bytes.
 * - `fetch_requests`: what a caller asked for. Many requests may share one job (identical requests
 *   in flight, or a ready result younger than the request's ttl). A request's status is its job's
 *   status unless the request itself was cancelled.
 *
 * Times are integer milliseconds since the epoch (UTC); the API renders them as ISO 8601.
 */
import { sql } from "drizzle-orm";
import { customType, index, integer, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";

/**
 * BLOB written from a plain Uint8Array. drizzle's own `blob({ mode: "buffer" })` maps through
 * Node's `Buffer`, which does not exist on Workers (without nodejs_compat). Reads of this column go
 * through `torrentBytes()` in src/jobs/queue.ts, which explains why they bypass drizzle.
 */
const bytes = customType<{ data: Uint8Array; driverData: Uint8Array | ArrayBuffer }>({
  dataType: () => "blob",
  fromDriver: (v) => (v instanceof Uint8Array ? v : new Uint8Array(v)),
  toDriver: (v) => v,
});

export const JOB_STATUSES = [
  "queued",
  "fetching",
  "packaging",
  "seeding",
  "ready",
  "error",
  "cancelled",
  // The job's content was ready, and every request for it expired (or was cancelled with at least
  // one expired): it is no longer seeded and its blob is not needed (src/requests/service.ts).
  "expired",
] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export type JobEgress = "proxy";
export type ScanVerdict = "clean" | "infected" | "unscanned";

export const fetchJobs = sqliteTable(
  "fetch_jobs",
  {
    id: text("id").primaryKey(),
    fingerprint: text("fingerprint").notNull(),
    status: text("status").$type<JobStatus>().notNull(),
    progress: integer("progress").notNull().default(0),
    url: text("url").notNull(),
    method: text("method").notNull(),
    headers: text("headers", { mode: "json" }).$type<Record<string, string>>(),
    body: text("body"),
    /** X-Request-Id of the request that created the job, for tracing pipeline logs. */
    traceId: text("trace_id"),
    /** Routing: only nodes of this region / proxy pool may claim the job (null = any node). */
    region: text("region"),
    pool: text("pool"),
    /**
     * The egress the job needs, fixed when it is created: "proxy" = only a node that fetches
     * through a proxy may claim it (the request was made while a proxy was required); null = any
     * node. A node's own settings can change across restarts; this cannot.
     */
    egress: text("egress").$type<JobEgress>(),
    /**
     * What the caller expects the body to be (POST `expected_sha256`, lower-case hex, and
     * `expected_size`): other bytes end the job in `integrity_mismatch`. Part of the fingerprint.
     */
    expectedSha256: text("expected_sha256"),
    expectedSize: integer("expected_size"),

    // Work assignment (leases with fencing tokens).
    nodeName: text("node_name"),
    leaseToken: text("lease_token"),
    leaseExpiresAt: integer("lease_expires_at"),
    attempts: integer("attempts").notNull().default(0),
    maxAttempts: integer("max_attempts").notNull().default(3),
    nextAttemptAt: integer("next_attempt_at").notNull().default(0),
    cancelRequested: integer("cancel_requested", { mode: "boolean" }).notNull().default(false),

    // Results.
    contentHash: text("content_hash"),
    contentSize: integer("content_size"),
    contentType: text("content_type"),
    finalUrl: text("final_url"),
    infohash: text("infohash"),
    torrentName: text("torrent_name"),
    pieceLength: integer("piece_length"),
    torrent: bytes("torrent"),
    /** magnet:?xt=urn:btih:…&dn=…&xl=…&tr=…&ws=… built by the node that made the torrent. */
    magnetLink: text("magnet_link"),
    /** Node whose tracker and web seed the torrent points at, and which seeds it. */
    seedNode: text("seed_node"),
    /** True while some live request still needs this torrent seeded. */
    seeding: integer("seeding", { mode: "boolean" }).notNull().default(false),
    /** The origin's digests the stored body matched, e.g. `content-digest: sha-256=:…:` (null: none sent). */
    verifiedDigests: text("verified_digests", { mode: "json" }).$type<string[]>(),
    errorCode: text("error_code"),
    errorMessage: text("error_message"),
    /**
     * The virus scan of the content (SCAN__CLAMD): "clean", "infected" or "unscanned" (scanner
     * unavailable and SCAN__FAIL_OPEN), the clamd version incl. its signature version, and when.
     */
    scanVerdict: text("scan_verdict").$type<ScanVerdict>(),
    scanEngine: text("scan_engine"),
    scannedAt: integer("scanned_at"),

    createdAt: integer("created_at").notNull(),
    updatedAt: integer("updated_at").notNull(),
    completedAt: integer("completed_at"),
  },
  (t) => [
    // At most one job in flight per fingerprint: this index is what makes concurrent identical
    // requests share one fetch (INSERT … ON CONFLICT DO NOTHING, then read the winner).
    uniqueIndex("fetch_jobs_active_fingerprint")
      .on(t.fingerprint)
      .where(sql`status IN ('queued','fetching','packaging','seeding')`),
    index("fetch_jobs_fingerprint_ready").on(t.fingerprint, t.completedAt),
    index("fetch_jobs_claim").on(t.status, t.nextAttemptAt),
    index("fetch_jobs_lease").on(t.status, t.leaseExpiresAt),
    index("fetch_jobs_seed_node").on(t.seedNode, t.seeding),
    index("fetch_jobs_infohash").on(t.infohash),
    // "Does a live job still need this blob?" (seeder/node/blob-release.ts) on every removal.
    index("fetch_jobs_content_hash").on(t.contentHash),
  ],
);

export const fetchRequests = sqliteTable(
  "fetch_requests",
  {
    id: text("id").primaryKey(),
    jobId: text("job_id")
      .notNull()
      .references(() => fetchJobs.id),
    userId: text("user_id"),
    clientIp: text("client_ip"),
    url: text("url").notNull(),
    method: text("method").notNull(),
    ttl: integer("ttl").notNull(),
    requestId: text("request_id"),
    createdAt: integer("created_at").notNull(),
    cancelledAt: integer("cancelled_at"),
    /**
     * This request's secret passkey (32 lower-case hex, 128 random bits): it goes into the announce
     * and web seed URLs of the .torrent and magnet handed to the owner, and is what the tracker, the
     * web seed and the BitTorrent port check (TORRENT__ACCESS=passkey). Kept so the same .torrent
     * can be handed out again; looked up only by `passkey_hash`. Null on rows from before 0.3
     * until their owner first asks for the torrent.
     */
    passkey: text("passkey"),
    /** SHA-256 (hex) of `passkey`: the lookup key, so no query ever compares the secret itself. */
    passkeyHash: text("passkey_hash"),
    /** The API key that created the request (null for JWTs, static tokens, no auth): revoking it cancels the request. */
    apiKeyId: text("api_key_id"),
    /**
     * Seconds the content stays stored and seeded for this request once it is ready (POST
     * `retention`). Null on rows from before 0008: those never expire (kept until cancelled).
     */
    retention: integer("retention"),
    /**
     * When the request expires: max(created_at, its job's completed_at) + retention, written when
     * the content becomes ready for it (completeJob, or the link to a job already ready). Null
     * while not ready, or without retention. A request is `expired` from this instant on; the
     * status read compares it with the clock, so no sweep delay shows.
     */
    expiresAt: integer("expires_at"),
    /** When a sweep (expireDue) recorded the expiry and wrote `request.expired`: exactly once. */
    expiredAt: integer("expired_at"),
  },
  (t) => [
    index("fetch_requests_job").on(t.jobId),
    // History listing and export (GET /v1/requests, …/export): newest first with `id` breaking
    // ties, one tenant's or (admins) everyone's; the keyset (created_at, id) is read off the index.
    index("fetch_requests_user").on(t.userId, t.createdAt, t.id),
    index("fetch_requests_created").on(t.createdAt, t.id),
    uniqueIndex("fetch_requests_passkey").on(t.passkeyHash),
    index("fetch_requests_api_key").on(t.apiKeyId),
    // A tenant's live requests and their jobs, from the index alone (the quota usage queries);
    // cancelled_at is in it only so SQLite reads no row to check the WHERE.
    index("fetch_requests_live_user").on(t.userId, t.jobId, t.cancelledAt).where(sql`cancelled_at IS NULL`),
    // The expiry sweep's scan: only requests still waiting to expire are in it, so it stays small.
    index("fetch_requests_due")
      .on(t.expiresAt)
      .where(sql`expires_at IS NOT NULL AND expired_at IS NULL AND cancelled_at IS NULL`),
    // Jobs of the requests a sweep just expired (and, later, purges of old expired history).
    index("fetch_requests_expired").on(t.expiredAt).where(sql`expired_at IS NOT NULL`),
  ],
);

export type FetchJob = typeof fetchJobs.$inferSelect;
export type FetchRequest = typeof fetchRequests.$inferSelect;
