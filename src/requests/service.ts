/**
 * What the API does with a caller's request: create (sharing a fetch with identical requests in
 * flight, or answering from a ready result younger than `ttl`), read, cancel, and expire (once its
 * `retention` has passed since its content was ready).
 */
import type { InArgs } from "@libsql/client";
import {
  and,
  desc,
  eq,
  gte,
  inArray,
  isNotNull,
  isNull,
  lte,
  notExists,
  notInArray,
  type SQL,
  sql,
} from "drizzle-orm";
import { sha256Hex } from "../auth/crypto";
import type { Clock } from "../clock";
import type { Database } from "../db";
import {
  apiKeys,
  type FetchJob,
  fetchJobs,
  fetchRequests,
  type JobEgress,
  type JobStatus,
  type ScanVerdict,
} from "../db/schema";
import { insertSelect, sqlQuery, sqlText } from "../db/sql";
import { newPasskey } from "../torrents/passkey";
import { callbackInsert, outboxInserts } from "../webhooks/outbox";
import { liveRequest, notExpired } from "./expiry";
import { activeCountSql, activeRequests, QuotaExceeded } from "./quotas";

export interface NewRequest {
  url: string;
  method: string;
  headers: Record<string, string> | null;
  body: string | null;
  ttl: number;
  userId: string | null;
  clientIp: string | null;
  requestId: string | null;
  maxAttempts: number;
  /** Only nodes of this region / proxy pool may do the fetch. */
  region?: string | null;
  pool?: string | null;
  /** Where to POST this request's webhook events (signed with WEBHOOK__SECRET). */
  callbackUrl?: string | null;
  /**
   * CACHE__SHARE_ACROSS_TENANTS: when false (the default) a ready result (`ttl`) and a fetch in
   * flight are shared only among requests of the same tenant (`userId`).
   */
  shareAcrossTenants?: boolean;
  /** "proxy": only a node fetching through a proxy may do this fetch (see `requiredEgress`). */
  egress?: JobEgress | null;
  /** The API key the caller used, if any: revoking that key cancels this request. */
  apiKeyId?: string | null;
  /**
   * The tenant's active-request quota (null/absent = unlimited): checked in the INSERT that records
   * the request, so concurrent POSTs cannot all pass a check made before it (QuotaExceeded).
   */
  maxActive?: number | null;
  /**
   * Seconds the content stays stored and seeded for this request once it is ready (POST
   * `retention`, default STORAGE__DEFAULT_RETENTION); then the request expires. Null/absent: never.
   */
  retention?: number | null;
  /**
   * POST `expected_sha256` (lower-case hex) and `expected_size`: the job's body must be exactly
   * these bytes, else it ends in `integrity_mismatch`.
   */
  expectedSha256?: string | null;
  expectedSize?: number | null;
}

/**
 * The egress a new request's job needs. A proxy is required when this process is configured with
 * one (embedded mode: the node's egress when the request is made) or when EGRESS__REQUIRE_PROXY
 * says so (an API without a proxy of its own, e.g. the Worker, in front of proxied nodes).
 */
export function requiredEgress(config: {
  proxy: unknown;
  egress: { requireProxy: boolean };
}): JobEgress | null {
  return config.egress.requireProxy || config.proxy ? "proxy" : null;
}

export interface RequestView {
  id: string;
  status: JobStatus;
  url: string;
  method: string;
  userId: string | null;
  createdAt: number;
  updatedAt: number;
  completedAt: number | null;
  infohash: string | null;
  contentHash: string | null;
  contentSize: number | null;
  contentType: string | null;
  errorMessage: string | null;
  /** Machine-readable reason of an `error` (e.g. `insufficient_storage`, `http_status`); null otherwise. */
  errorCode: string | null;
  progress: number;
  torrentName: string | null;
  magnetLink: string | null;
  jobId: string;
  seedNode: string | null;
  /** When the request expires (or expired): set once its content is ready, if it has a retention. */
  expiresAt: number | null;
  /** The origin's digests the content matched (Content-Digest, Repr-Digest, Content-MD5); null: none. */
  verifiedDigests: string[] | null;
  /** The virus scan of its content (SCAN__CLAMD), or null when none was made. */
  scan: { verdict: ScanVerdict; engine: string | null; scannedAt: number | null } | null;
  /** How the request was satisfied: a new fetch, a fetch already in flight, or a cached result. */
  source?: "fetch" | "inflight" | "cache";
}

/**
 * SHA-256 over (method, URL, headers, body, routing, and the tenant unless results are shared
 * across tenants): two requests with the same fingerprint are the same fetch. The tenant is part
 * of it so that `ttl` reuse and in-flight sharing (both keyed by the fingerprint, the latter through
 * a unique index) never cross tenants: otherwise tenant B's request would be answered at once from
 * A's fetch, telling B that someone fetched that exact URL (with its query) and when, and letting A
 * plant content for B. Identical bytes are still stored once (the store is content-addressed).
 */
export async function fingerprintOf(
  r: Pick<
    NewRequest,
    | "url"
    | "method"
    | "headers"
    | "body"
    | "region"
    | "pool"
    | "userId"
    | "shareAcrossTenants"
    | "egress"
    | "expectedSha256"
    | "expectedSize"
  >,
) {
  const headers = Object.entries(r.headers ?? {})
    .map(([k, v]) => [k.toLowerCase(), v] as const)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const route = r.region || r.pool ? [r.region ?? null, r.pool ?? null] : [];
  const tenant = r.shareAcrossTenants ? [] : [{ tenant: r.userId ?? null }];
  // A request that needs a proxy must never join (or reuse) a fetch a node could make directly.
  const egress = r.egress ? [{ egress: r.egress }] : [];
  // A request that expects certain bytes must never join (or reuse) a fetch that does not check them.
  const expect =
    r.expectedSha256 || r.expectedSize
      ? [{ expect: [r.expectedSha256 ?? null, r.expectedSize ?? null] }]
      : [];
  const canonical = JSON.stringify([
    r.method.toUpperCase(),
    r.url,
    headers,
    r.body ?? null,
    ...route,
    ...egress,
    ...expect,
    ...tenant,
  ]);
  return sha256Hex(canonical);
}

export async function createRequest(db: Database, clock: Clock, input: NewRequest): Promise<RequestView> {
  const fingerprint = await fingerprintOf(input);
  const requestId = crypto.randomUUID();
  const passkey = await newPasskey();
  // Each pass either links the request to a job or finds that the job it picked has just ended
  // (cancelled/failed between the read and the link); a few passes always settle.
  for (let pass = 0; pass < 5; pass++) {
    const now = clock.now();
    let job: FetchJob | undefined;
    let source: RequestView["source"] = "fetch";
    // A ready job all of whose requests have passed their expiry but that no sweep has marked
    // `expired` yet may still be reused: its content is still stored and seeded, and this new
    // request, live, keeps it so (the sweep's NOT EXISTS sees it). Once marked, it is not `ready`.
    if (input.ttl > 0) {
      job = (
        await db
          .select()
          .from(fetchJobs)
          .where(
            and(
              eq(fetchJobs.fingerprint, fingerprint),
              eq(fetchJobs.status, "ready"),
              eq(fetchJobs.seeding, true),
              gte(fetchJobs.completedAt, now - input.ttl * 1000),
            ),
          )
          .orderBy(desc(fetchJobs.completedAt))
          .limit(1)
      )[0];
      if (job) source = "cache";
    }
    if (!job) {
      const newId = crypto.randomUUID();
      // The partial unique index on active fingerprints makes this a no-op when an identical
      // fetch is already queued or running; then we join that one instead.
      await db
        .insert(fetchJobs)
        .values({
          id: newId,
          fingerprint,
          status: "queued",
          progress: 0,
          url: input.url,
          method: input.method,
          headers: input.headers,
          body: input.body,
          traceId: input.requestId,
          region: input.region ?? null,
          pool: input.pool ?? null,
          egress: input.egress ?? null,
          expectedSha256: input.expectedSha256 ?? null,
          expectedSize: input.expectedSize ?? null,
          maxAttempts: input.maxAttempts,
          nextAttemptAt: now,
          createdAt: now,
          updatedAt: now,
        })
        .onConflictDoNothing();
      job = (
        await db
          .select()
          .from(fetchJobs)
          .where(
            and(
              eq(fetchJobs.fingerprint, fingerprint),
              inArray(fetchJobs.status, ["queued", "fetching", "packaging", "seeding"]),
            ),
          )
          .limit(1)
      )[0];
      if (!job) continue; // it finished between the two statements; look again
      source = job.id === newId ? "fetch" : "inflight";
    }
    // Link only while the job is still alive, in one statement, so a concurrent cancel of the
    // job's last request cannot leave this new request attached to a cancelled job.
    // The callback and, when the job is ready already (a cached result), `request.ready` are
    // written in the same transaction, conditioned on the link having happened.
    const link = insertSelect(
      db,
      fetchRequests,
      {
        id: requestId,
        jobId: job.id,
        userId: input.userId,
        clientIp: input.clientIp,
        url: input.url,
        method: input.method,
        ttl: input.ttl,
        requestId: input.requestId,
        createdAt: now,
        passkey: passkey.passkey,
        passkeyHash: passkey.hash,
        apiKeyId: input.apiKeyId ?? null,
        retention: input.retention ?? null,
        // Linked to a job that is ready already (a cached result): its content is ready for this
        // request now. Otherwise completeJob sets it.
        expiresAt: input.retention
          ? sql`(SELECT max(${now}, ${fetchJobs.completedAt}) + ${input.retention * 1000} FROM ${fetchJobs}
              WHERE ${fetchJobs.id} = ${job.id} AND ${fetchJobs.status} = 'ready')`
          : null,
        // An API process trusts a verified key for SECURITY__API_KEY_CACHE_SECONDS: a request made
        // with a key revoked meanwhile is created cancelled, as the revoke would have left it.
        cancelledAt: input.apiKeyId
          ? sql`CASE WHEN EXISTS (SELECT 1 FROM ${apiKeys} WHERE ${apiKeys.id} = ${input.apiKeyId}
              AND ${apiKeys.revokedAt} IS NOT NULL) THEN ${now} END`
          : null,
      },
      sql`WHERE EXISTS (SELECT 1 FROM ${fetchJobs}
        WHERE ${fetchJobs.id} = ${job.id} AND ${fetchJobs.status} NOT IN ('error', 'cancelled', 'expired'))
        ${input.maxActive ? sql`AND (${activeCountSql(input.userId)}) < ${input.maxActive}` : sql``}`,
    );
    // Created cancelled (its key was revoked): the rest of what a cancel writes, in the same
    // transaction, so no crash can leave a job fetched and seeded for nobody. Both statements are
    // no-ops for a request created live (the job still has it).
    const createdCancelled = input.apiKeyId
      ? [
          ...outboxInserts(db, "request.cancelled", now, (r) =>
            and(eq(r.id, requestId), isNotNull(r.cancelledAt)),
          ),
          cancelStatements(db, now, (r) => eq(r.id, requestId)).jobs,
        ]
      : [];
    const [linked] = await db.batch([
      link,
      ...(input.callbackUrl ? [callbackInsert(db, requestId, input.callbackUrl, now)] : []),
      ...outboxInserts(db, "request.ready", now, (r, j) =>
        and(eq(r.id, requestId), eq(j.status, "ready"), isNull(r.cancelledAt)),
      ),
      ...createdCancelled,
    ]);
    if (linked.rowsAffected !== 1) {
      if (input.maxActive) {
        // A write is one serialised statement, so this INSERT saw every request linked before it:
        // at the limit means the quota refused it (other POSTs took the last places meanwhile).
        const active = await activeRequests(db, input.userId);
        if (active >= input.maxActive) {
          // A job made for this request alone must not be fetched for nobody.
          if (source === "fetch") await cancelUnneededJob(db, job.id, clock.now());
          throw new QuotaExceeded("active", active, input.maxActive);
        }
      }
      continue;
    }
    const view = await getRequest(db, requestId, now);
    if (!view) throw new Error("request vanished after insert");
    return { ...view, source };
  }
  throw new Error("could not settle the request after several attempts (database very busy?)");
}

const viewColumns = {
  id: fetchRequests.id,
  cancelledAt: fetchRequests.cancelledAt,
  expiresAt: fetchRequests.expiresAt,
  expiredAt: fetchRequests.expiredAt,
  url: fetchRequests.url,
  method: fetchRequests.method,
  userId: fetchRequests.userId,
  createdAt: fetchRequests.createdAt,
  jobId: fetchRequests.jobId,
  jobStatus: fetchJobs.status,
  updatedAt: fetchJobs.updatedAt,
  completedAt: fetchJobs.completedAt,
  infohash: fetchJobs.infohash,
  contentHash: fetchJobs.contentHash,
  contentSize: fetchJobs.contentSize,
  contentType: fetchJobs.contentType,
  errorMessage: fetchJobs.errorMessage,
  errorCode: fetchJobs.errorCode,
  progress: fetchJobs.progress,
  torrentName: fetchJobs.torrentName,
  magnetLink: fetchJobs.magnetLink,
  seedNode: fetchJobs.seedNode,
  verifiedDigests: fetchJobs.verifiedDigests,
  scanVerdict: fetchJobs.scanVerdict,
  scanEngine: fetchJobs.scanEngine,
  scannedAt: fetchJobs.scannedAt,
};

type ViewRow = {
  [K in keyof typeof viewColumns]: (typeof viewColumns)[K]["_"]["data"] | null;
};

/**
 * A request's row as the API shows it at `now`. The one place that decides a request's status:
 * `cancelled` (DELETE, key revoked), else `expired` from the instant `expires_at` passes (the sweep
 * records it later, expireDue; the read does not wait for it), else its job's status.
 */
function toView(r: ViewRow, now: number): RequestView {
  const cancelled = r.cancelledAt != null;
  const expired = r.expiredAt != null || (r.expiresAt != null && now >= r.expiresAt);
  const status = cancelled ? "cancelled" : expired ? "expired" : (r.jobStatus as JobStatus);
  const ready = status === "ready" || status === "expired";
  return {
    id: r.id!,
    status,
    url: r.url!,
    method: r.method!,
    userId: r.userId,
    createdAt: r.createdAt!,
    // A request created after its job last changed (cache hit) was still updated "now".
    // An expired request changed at its expiry, which a read may see before any sweep wrote a row.
    updatedAt: Math.max(
      r.updatedAt ?? 0,
      r.createdAt ?? 0,
      r.cancelledAt ?? 0,
      status === "expired" ? (r.expiresAt ?? 0) : 0,
    ),
    completedAt: ready ? r.completedAt : null,
    infohash: r.infohash,
    contentHash: r.contentHash,
    contentSize: r.contentSize,
    contentType: r.contentType,
    errorMessage: r.errorMessage,
    errorCode: status === "error" ? r.errorCode : null,
    progress: r.progress ?? 0,
    torrentName: r.torrentName,
    magnetLink: r.magnetLink,
    jobId: r.jobId!,
    seedNode: r.seedNode,
    expiresAt: r.expiresAt,
    verifiedDigests: r.verifiedDigests,
    scan: r.scanVerdict ? { verdict: r.scanVerdict, engine: r.scanEngine, scannedAt: r.scannedAt } : null,
  };
}

/**
 * One request as the API shows it. This is the hot read (every status poll), so it asks SQLite for
 * a single JSON column instead of ~20 columns: the libSQL driver's per-column conversion cost more
 * than the query itself (measured about 190 µs -> 55 µs per call on a 2-core machine).
 */
export async function getRequest(db: Database, id: string, now: number): Promise<RequestView | null> {
  const rs = await db.$client.execute({ sql: GET_REQUEST_SQL, args: [id] });
  const raw = rs.rows[0]?.v;
  return typeof raw === "string" ? toView(JSON.parse(raw) as ViewRow, now) : null;
}

const VIEW_JSON = sql`json_object(${sql.join(
  Object.entries(viewColumns).map(
    // A JSON column goes in as JSON (json()), not as the text that holds it.
    ([key, column]) =>
      sql`${sql.raw(`'${key}'`)}, ${key === "verifiedDigests" ? sql`json(${column})` : column}`,
  ),
  sql`, `,
)})`;

const GET_REQUEST_SQL = sqlText(sql`
  SELECT ${VIEW_JSON} AS v
  FROM ${fetchRequests} JOIN ${fetchJobs} ON ${fetchJobs.id} = ${fetchRequests.jobId}
  WHERE ${fetchRequests.id} = ?`);

/** Which requests a history listing or export covers. */
export interface RequestFilter {
  /** Only this tenant's requests (null: those made without authentication); undefined: every tenant. */
  tenant?: string | null;
  /** The status as shown (a cancelled request is `cancelled` whatever its job did). */
  statuses?: readonly JobStatus[];
  /** created_at >= since (ms). */
  since?: number;
  /** created_at < until (ms). */
  until?: number;
  /** Substring of the URL, ASCII case-insensitive; `%` and `_` match themselves. */
  q?: string;
}

/** Where a page of the history ends: the keyset of its last request (newest first). */
export interface ListPosition {
  createdAt: number;
  id: string;
}

/** The status a request shows, as toView computes it, in SQL. */
/** The status toView shows, in SQL (for the `status` filter): cancelled, then expired, then the job's. */
const shownStatus = (now: number) =>
  sql`CASE WHEN ${fetchRequests.cancelledAt} IS NOT NULL THEN 'cancelled'
    WHEN NOT (${notExpired(fetchRequests, now)}) THEN 'expired'
    ELSE ${fetchJobs.status} END`;

/** `q` as a LIKE pattern: a plain substring, so the user's `%`, `_` and `\` are escaped. */
const likePattern = (q: string) => `%${q.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;

/**
 * Up to `limit` requests matching `filter`, newest first (created_at, then id, both descending),
 * strictly after `after`. Keyset paging: each page is one index range scan (fetch_requests_user or
 * fetch_requests_created), so page N costs what page 1 does, and rows created while a client pages
 * never shift or repeat what it sees. Read as one JSON column per row, like getRequest.
 */
export async function listRequests(
  db: Database,
  filter: RequestFilter,
  limit: number,
  now: number,
  after?: ListPosition,
): Promise<RequestView[]> {
  const where: SQL[] = [];
  if (filter.tenant === null) where.push(sql`${fetchRequests.userId} IS NULL`);
  else if (filter.tenant !== undefined) where.push(sql`${fetchRequests.userId} = ${filter.tenant}`);
  if (filter.statuses?.length)
    where.push(
      sql`${shownStatus(now)} IN (${sql.join(
        filter.statuses.map((s) => sql`${s}`),
        sql`, `,
      )})`,
    );
  if (filter.since !== undefined) where.push(sql`${fetchRequests.createdAt} >= ${filter.since}`);
  if (filter.until !== undefined) where.push(sql`${fetchRequests.createdAt} < ${filter.until}`);
  if (filter.q) where.push(sql`${fetchRequests.url} LIKE ${likePattern(filter.q)} ESCAPE '\\'`);
  if (after)
    where.push(sql`(${fetchRequests.createdAt}, ${fetchRequests.id}) < (${after.createdAt}, ${after.id})`);
  const q = sqlQuery(sql`
    SELECT ${VIEW_JSON} AS v
    FROM ${fetchRequests} JOIN ${fetchJobs} ON ${fetchJobs.id} = ${fetchRequests.jobId}
    ${where.length ? sql`WHERE ${sql.join(where, sql` AND `)}` : sql``}
    ORDER BY ${fetchRequests.createdAt} DESC, ${fetchRequests.id} DESC
    LIMIT ${limit}`);
  const rs = await db.$client.execute({ sql: q.sql, args: q.params as InArgs });
  return rs.rows.map((r) => toView(JSON.parse(r.v as string) as ViewRow, now));
}

export { torrentBytes as getTorrent } from "../jobs/queue";

/**
 * Cancel a request (any state, as in the original). When it was the job's last live request, the
 * job is cancelled too: a queued or ready job at once (a ready one stops being seeded), a running
 * one through `cancel_requested`, which its worker sees at its next heartbeat and aborts the fetch.
 */
export async function cancelRequest(db: Database, clock: Clock, id: string): Promise<boolean> {
  const c = cancelStatements(db, clock.now(), (r) => eq(r.id, id));
  const results = await db.batch([...c.outbox, c.requests, c.jobs]);
  return (results[c.outbox.length] as { jobId: string }[]).length > 0;
}

/** The columns `cancelStatements` picks requests by (the table itself, or the outbox's alias of it). */
type RequestColumns = Pick<
  typeof fetchRequests,
  "id" | "apiKeyId" | "cancelledAt" | "expiresAt" | "expiredAt"
>;

/**
 * What cancelling the requests `which` picks writes, for the caller to run in one batch (one
 * transaction), in this order: `outbox` (`request.cancelled` for each request this cancels),
 * `requests` (marks them cancelled; returns each picked request's job), then `jobs`: every job of
 * theirs left without a live request is cancelled as cancelRequest describes. DELETE picks one
 * request by id; revoking an API key picks every request that key made (src/auth/keys.ts).
 * An expired request stays `expired` (its content is gone already, and it got `request.expired`).
 */
export function cancelStatements(db: Database, now: number, which: (r: RequestColumns) => SQL) {
  const picked = and(which(fetchRequests), notExpired(fetchRequests, now))!;
  return {
    // `request.cancelled` only for requests this batch is what cancels.
    outbox: outboxInserts(db, "request.cancelled", now, (r) =>
      and(which(r as unknown as RequestColumns), isNull(r.cancelledAt), notExpired(r, now)),
    ),
    requests: db
      .update(fetchRequests)
      .set({ cancelledAt: sql`coalesce(${fetchRequests.cancelledAt}, ${now})` })
      .where(picked)
      .returning({ jobId: fetchRequests.jobId }),
    jobs: unneededJobsCancel(
      db,
      now,
      inArray(
        fetchJobs.id,
        db.select({ jobId: fetchRequests.jobId }).from(fetchRequests).where(which(fetchRequests)),
      ),
    ),
  };
}

/** Cancel a job no live request needs (see cancelRequest); a no-op while one does. */
async function cancelUnneededJob(db: Database, jobId: string, now: number): Promise<void> {
  await unneededJobsCancel(db, now, eq(fetchJobs.id, jobId));
}

/**
 * Cancels the jobs `picked` selects that no live request (liveRequest: neither cancelled nor
 * expired) needs: a queued or ready one at once, a running one through `cancel_requested`. NOT
 * EXISTS is evaluated inside this one statement, so a request that joined the job a moment ago
 * keeps it alive.
 */
function unneededJobsCancel(db: Database, now: number, picked: SQL) {
  return db
    .update(fetchJobs)
    .set({
      cancelRequested: true,
      seeding: false,
      status: sql`CASE WHEN ${fetchJobs.status} IN ('queued', 'ready') THEN 'cancelled' ELSE ${fetchJobs.status} END`,
      updatedAt: now,
    })
    .where(
      and(
        picked,
        notInArray(fetchJobs.status, ["error", "cancelled"]),
        notExists(
          db
            .select({ one: sql`1` })
            .from(fetchRequests)
            .where(and(eq(fetchRequests.jobId, fetchJobs.id), liveRequest(fetchRequests, now))),
        ),
      ),
    );
}

/**
 * The expiry sweep: records every request whose `expires_at` has passed as expired, writes its
 * `request.expired` webhook rows, and marks `expired` each ready job left without a live request,
 * which stops its seeding (listSeedable) and lets its node remove the blob (needsContentOn), unless
 * another live job of that node records the same content. Returns the requests it expired.
 *
 * Leaderless and exactly-once: one batch (one write transaction; SQLite runs one at a time), every
 * statement conditioned on `expired_at IS NULL`, so of several nodes running it at once the first
 * expires a request and writes its webhook rows, the others find nothing. Cheap when idle: the
 * due scan reads only the partial index `fetch_requests_due` (requests waiting to expire).
 * Run by every node's reconcile loop (NODE__RESEED_INTERVAL_MS); safe to call from anywhere.
 */
export async function expireDue(db: Database, clock: Clock): Promise<{ id: string; jobId: string }[]> {
  const now = clock.now();
  const due = (r: RequestColumns) =>
    and(isNull(r.expiredAt), isNull(r.cancelledAt), isNotNull(r.expiresAt), lte(r.expiresAt, now));
  const results = await db.batch([
    ...outboxInserts(db, "request.expired", now, (r) => due(r as unknown as RequestColumns)),
    db
      .update(fetchRequests)
      .set({ expiredAt: now })
      .where(due(fetchRequests))
      .returning({ id: fetchRequests.id, jobId: fetchRequests.jobId }),
    // A job that is not ready (cancelled meanwhile, say) keeps its status; a ready one with a live
    // request left (a longer retention, a new request reusing it) stays ready and seeded.
    db
      .update(fetchJobs)
      .set({ status: "expired", seeding: false, updatedAt: now })
      .where(
        and(
          inArray(
            fetchJobs.id,
            db
              .select({ jobId: fetchRequests.jobId })
              .from(fetchRequests)
              .where(eq(fetchRequests.expiredAt, now)),
          ),
          // Unary + keeps SQLite from scanning every ready job by the status index: the jobs come
          // from the few requests just expired (fetch_requests_expired), each by its primary key.
          sql`+${fetchJobs.status} = 'ready'`,
          notExists(
            db
              .select({ one: sql`1` })
              .from(fetchRequests)
              .where(and(eq(fetchRequests.jobId, fetchJobs.id), liveRequest(fetchRequests, now))),
          ),
        ),
      ),
  ]);
  return results[2] as { id: string; jobId: string }[];
}
