/**
 * The job queue, all in SQL. Every state change is one statement; every change a worker makes after
 * claiming is conditional on its lease token (fencing): a node whose lease expired and whose job was
 * claimed again by another node cannot overwrite that node's work, its writes simply match no row.
 */
import { and, eq, inArray, isNotNull, isNull, lt, lte, not, notInArray, or, sql } from "drizzle-orm";
import type { Clock } from "../clock";
import type { Database } from "../db";
import { type FetchJob, fetchJobs, fetchRequests } from "../db/schema";
import { batchLast, sqlText } from "../db/sql";
import { type OutboxCondition, outboxInserts } from "../webhooks/outbox";

/** A node's hold on a claimed job: every write it makes after the claim is fenced by the token. */
export interface JobLease {
  id: string;
  leaseToken: string;
}

/** The job's requests not cancelled yet, while `lease` still holds the job (the outbox condition). */
const liveRequests =
  (lease: JobLease): OutboxCondition =>
  (r, j) =>
    and(eq(r.jobId, lease.id), isNull(r.cancelledAt), eq(j.leaseToken, lease.leaseToken));

/** Claim up to `limit` runnable jobs for `nodeName`: queued ones whose retry time has come, and
 * in-flight ones whose lease expired (their node died or stalled). */
/**
 * A job that asks for a region or proxy pool is only for nodes of that region / pool; a node
 * without one takes only jobs that do not ask.
 */
const routed = (col: typeof fetchJobs.region | typeof fetchJobs.pool, mine: string | null | undefined) =>
  mine ? or(isNull(col), eq(col, mine)) : isNull(col);

export async function claimJobs(
  db: Database,
  clock: Clock,
  opts: {
    nodeName: string;
    limit: number;
    leaseMs: number;
    region?: string | null;
    pool?: string | null;
    /** True when this node fetches through a proxy: only such a node takes jobs that need one. */
    proxied?: boolean;
  },
): Promise<FetchJob[]> {
  const now = clock.now();
  const runnable = db
    .select({ id: fetchJobs.id })
    .from(fetchJobs)
    .where(
      and(
        or(
          and(eq(fetchJobs.status, "queued"), lte(fetchJobs.nextAttemptAt, now)),
          and(
            inArray(fetchJobs.status, ["fetching", "packaging", "seeding"]),
            lt(fetchJobs.leaseExpiresAt, now),
          ),
        ),
        routed(fetchJobs.region, opts.region),
        routed(fetchJobs.pool, opts.pool),
        opts.proxied ? undefined : isNull(fetchJobs.egress),
      ),
    )
    .orderBy(fetchJobs.createdAt)
    .limit(opts.limit);
  // SQLite (and libSQL) run one write transaction at a time, so this UPDATE's sub-select and its
  // writes happen without any other writer in between: two nodes can never claim the same row,
  // and no SKIP LOCKED is needed. The token is generated per row, fresh on every claim.
  return db
    .update(fetchJobs)
    .set({
      status: "fetching",
      progress: 10,
      nodeName: opts.nodeName,
      leaseToken: sql`lower(hex(randomblob(16)))`,
      leaseExpiresAt: now + opts.leaseMs,
      attempts: sql`${fetchJobs.attempts} + 1`,
      // SET expressions see the row as it was: a job that was not queued had a lease that expired.
      // A "waiting for a proxy" note ends when a node with one takes the job.
      errorCode: sql`CASE WHEN ${fetchJobs.errorCode} = ${WAITING_FOR_PROXY} THEN NULL
        WHEN ${fetchJobs.status} = 'queued' THEN ${fetchJobs.errorCode} ELSE 'lease_expired' END`,
      errorMessage: sql`CASE WHEN ${fetchJobs.errorCode} = ${WAITING_FOR_PROXY} THEN NULL
        WHEN ${fetchJobs.status} = 'queued' THEN ${fetchJobs.errorMessage}
        ELSE 'The node working on this request stopped responding; another node took over' END`,
      updatedAt: now,
    })
    .where(inArray(fetchJobs.id, runnable))
    .returning();
}

/** The fields that put a job back in the queue with no lease (retry, hand-back, waiting for a proxy). */
const BACK_IN_QUEUE = { status: "queued", progress: 0, leaseToken: null, leaseExpiresAt: null } as const;

export const WAITING_FOR_PROXY = "waiting_for_proxy";
export const WAITING_FOR_PROXY_MESSAGE =
  "Waiting for a node with a proxy: this request was made while fetches had to go through a proxy, and only a node fetching through one may do it";

/**
 * Run by a node without a proxy: jobs it may not take because they need one (and that would
 * otherwise be its to take: same region and pool) say so in their status. That covers queued jobs
 * and jobs whose proxied node died (lease expired), which go back to `queued` so they do not read
 * `fetching` while nothing fetches them. Returns how many jobs were marked; a job is marked once.
 */
export async function markWaitingForProxy(
  db: Database,
  clock: Clock,
  opts: { region?: string | null; pool?: string | null },
): Promise<number> {
  const now = clock.now();
  const res = await db
    .update(fetchJobs)
    .set({
      ...BACK_IN_QUEUE,
      errorCode: WAITING_FOR_PROXY,
      errorMessage: WAITING_FOR_PROXY_MESSAGE,
      updatedAt: now,
    })
    .where(
      and(
        eq(fetchJobs.egress, "proxy"),
        or(
          and(
            eq(fetchJobs.status, "queued"),
            or(isNull(fetchJobs.errorCode), sql`${fetchJobs.errorCode} != ${WAITING_FOR_PROXY}`),
          ),
          and(
            inArray(fetchJobs.status, ["fetching", "packaging", "seeding"]),
            lt(fetchJobs.leaseExpiresAt, now),
          ),
        ),
        routed(fetchJobs.region, opts.region),
        routed(fetchJobs.pool, opts.pool),
      ),
    );
  return res.rowsAffected;
}

/** Extend a lease. Returns null when the lease is lost (expired and claimed elsewhere). */
export async function heartbeat(
  db: Database,
  clock: Clock,
  lease: JobLease,
  leaseMs: number,
): Promise<{ cancelRequested: boolean } | null> {
  const now = clock.now();
  const rows = await db
    .update(fetchJobs)
    .set({ leaseExpiresAt: now + leaseMs })
    .where(and(eq(fetchJobs.id, lease.id), eq(fetchJobs.leaseToken, lease.leaseToken)))
    .returning({ cancelRequested: fetchJobs.cancelRequested });
  return rows[0] ?? null;
}

type JobPatch = Partial<
  Pick<
    FetchJob,
    | "status"
    | "progress"
    | "contentHash"
    | "contentSize"
    | "scanVerdict"
    | "scanEngine"
    | "scannedAt"
    | "contentType"
    | "finalUrl"
    | "verifiedDigests"
    | "infohash"
    | "torrentName"
    | "pieceLength"
    | "torrent"
    | "magnetLink"
    | "seedNode"
    | "errorMessage"
    | "errorCode"
  >
>;

/** Record progress. False when the lease is lost: the caller must stop working on the job. */
export async function advance(
  db: Database,
  clock: Clock,
  lease: JobLease,
  patch: JobPatch,
): Promise<boolean> {
  const res = await db
    .update(fetchJobs)
    .set({ ...patch, updatedAt: clock.now() })
    .where(and(eq(fetchJobs.id, lease.id), eq(fetchJobs.leaseToken, lease.leaseToken)));
  return res.rowsAffected === 1;
}

/** The job is seeded and downloadable. If every request was cancelled meanwhile, it ends cancelled. */
export async function completeJob(
  db: Database,
  clock: Clock,
  lease: JobLease,
  seedNode: string,
): Promise<"ready" | "cancelled" | null> {
  const now = clock.now();
  // Webhook outbox rows for the job's live requests go in the same transaction, before the UPDATE
  // and under the same lease predicate: they exist exactly when the job really becomes ready.
  const live = liveRequests(lease);
  const rows = await batchLast(
    db,
    [
      ...outboxInserts(db, "request.ready", now, (r, j) => and(live(r, j), not(j.cancelRequested))),
      ...outboxInserts(db, "request.cancelled", now, (r, j) => and(live(r, j), eq(j.cancelRequested, true))),
      // The content is ready for the job's requests now: each one's retention starts counting
      // (from its own creation if later, e.g. another node's clock ahead). Same lease predicate.
      db
        .update(fetchRequests)
        .set({ expiresAt: sql`max(${fetchRequests.createdAt}, ${now}) + ${fetchRequests.retention} * 1000` })
        .where(
          and(
            eq(fetchRequests.jobId, lease.id),
            isNotNull(fetchRequests.retention),
            isNull(fetchRequests.expiresAt),
            sql`EXISTS (SELECT 1 FROM ${fetchJobs} WHERE ${fetchJobs.id} = ${lease.id}
              AND ${fetchJobs.leaseToken} = ${lease.leaseToken} AND NOT ${fetchJobs.cancelRequested})`,
          ),
        ),
    ],
    db
      .update(fetchJobs)
      .set({
        status: sql`CASE WHEN ${fetchJobs.cancelRequested} THEN 'cancelled' ELSE 'ready' END`,
        seeding: sql`NOT ${fetchJobs.cancelRequested}`,
        progress: 100,
        seedNode,
        completedAt: now,
        updatedAt: now,
        leaseToken: null,
        leaseExpiresAt: null,
        errorCode: null,
        errorMessage: null,
      })
      .where(and(eq(fetchJobs.id, lease.id), eq(fetchJobs.leaseToken, lease.leaseToken)))
      .returning({ status: fetchJobs.status }),
  );
  return (rows[0]?.status as "ready" | "cancelled" | undefined) ?? null;
}

/** Exponential backoff with jitter: 2 s, 4 s, 8 s … capped at 5 minutes. */
export function retryDelayMs(attempt: number, random = Math.random): number {
  const base = Math.min(300_000, 2000 * 2 ** Math.max(0, attempt - 1));
  return Math.round(base * (0.75 + random() * 0.5));
}

/**
 * A failed attempt. Transient failures go back to the queue with backoff while attempts remain;
 * everything else ends in `error` with a readable message.
 */
export async function failJob(
  db: Database,
  clock: Clock,
  job: JobLease & { attempts: number; maxAttempts: number },
  err: { code: string; message: string; transient: boolean },
): Promise<"queued" | "error" | null> {
  const now = clock.now();
  const retry = err.transient && job.attempts < job.maxAttempts;
  const update = db
    .update(fetchJobs)
    .set(
      retry
        ? {
            ...BACK_IN_QUEUE,
            nextAttemptAt: now + retryDelayMs(job.attempts),
            errorCode: err.code,
            errorMessage: `${err.message} (attempt ${job.attempts} of ${job.maxAttempts}; retrying)`,
            updatedAt: now,
          }
        : {
            status: "error",
            leaseToken: null,
            leaseExpiresAt: null,
            errorCode: err.code,
            errorMessage:
              err.transient && job.attempts > 1
                ? `${err.message} (gave up after ${job.attempts} attempts)`
                : err.message,
            completedAt: null,
            updatedAt: now,
          },
    )
    .where(and(eq(fetchJobs.id, job.id), eq(fetchJobs.leaseToken, job.leaseToken)));
  if (retry) return (await update).rowsAffected === 1 ? "queued" : null;
  // The job ends in error: `request.failed` for its live requests, in the same transaction.
  const res = await batchLast(db, [...outboxInserts(db, "request.failed", now, liveRequests(job))], update);
  return res.rowsAffected === 1 ? "error" : null;
}

/** The worker stopped because every request for the job was cancelled. */
export async function markCancelled(db: Database, clock: Clock, lease: JobLease): Promise<boolean> {
  const now = clock.now();
  // Its requests were cancelled (and reported) one by one; a request that joined after the cancel
  // was requested still reads cancelled now, so it is reported here, in the same transaction.
  const res = await batchLast(
    db,
    [...outboxInserts(db, "request.cancelled", now, liveRequests(lease))],
    db
      .update(fetchJobs)
      .set({ status: "cancelled", seeding: false, leaseToken: null, leaseExpiresAt: null, updatedAt: now })
      .where(and(eq(fetchJobs.id, lease.id), eq(fetchJobs.leaseToken, lease.leaseToken))),
  );
  return res.rowsAffected === 1;
}

/** Give a job back without counting the attempt (graceful shutdown). */
export async function releaseJob(db: Database, clock: Clock, lease: JobLease): Promise<boolean> {
  const now = clock.now();
  const res = await db
    .update(fetchJobs)
    .set({
      ...BACK_IN_QUEUE,
      nextAttemptAt: now,
      attempts: sql`max(0, ${fetchJobs.attempts} - 1)`,
      updatedAt: now,
    })
    .where(and(eq(fetchJobs.id, lease.id), eq(fetchJobs.leaseToken, lease.leaseToken)));
  return res.rowsAffected === 1;
}

/** Jobs this node must seed (ready, still wanted). Torrent bytes are fetched separately. */
export async function listSeedable(db: Database, nodeName: string) {
  return db
    .select({
      id: fetchJobs.id,
      infohash: fetchJobs.infohash,
      contentHash: fetchJobs.contentHash,
      contentSize: fetchJobs.contentSize,
      torrentName: fetchJobs.torrentName,
    })
    .from(fetchJobs)
    .where(and(eq(fetchJobs.seedNode, nodeName), eq(fetchJobs.status, "ready"), eq(fetchJobs.seeding, true)));
}

/**
 * A job that still needs its content on `nodeName`: not ended in error, cancelled or expired, and
 * fetched (node_name) or seeded (seed_node) by that node. Each node has its own store, so another
 * node's job never keeps this node's blob.
 *
 * Expiry agrees with listSeedable through the job's status: the sweep (expireDue) marks a ready job
 * `expired` in the same statement that finds it has no live request left, so "no longer seeded"
 * and "content no longer needed" flip together. A job still `ready` keeps its blob even when all its
 * requests' times have passed but no sweep has run: a new request may still reuse it (ttl) until
 * the sweep marks it, and the sweep runs on every node's reconcile, so the delay is short.
 */
const needsContentOn = (nodeName: string) =>
  and(
    notInArray(fetchJobs.status, ["error", "cancelled", "expired"]),
    or(eq(fetchJobs.seedNode, nodeName), eq(fetchJobs.nodeName, nodeName)),
  );

/** Whether a live job of this node records `contentHash` (then its blob must stay). */
export async function contentNeeded(db: Database, nodeName: string, contentHash: string): Promise<boolean> {
  const rows = await db
    .select({ one: sql`1` })
    .from(fetchJobs)
    .where(and(eq(fetchJobs.contentHash, contentHash), needsContentOn(nodeName)))
    .limit(1);
  return rows.length > 0;
}

/**
 * Whether these bytes were already found clean by the same scanner and signature version (any
 * job, any node): then they are not scanned again. Infected content is rare and always rescanned,
 * so its refusal names the signature found now.
 */
export async function scannedClean(db: Database, contentHash: string, engine: string): Promise<boolean> {
  const rows = await db
    .select({ one: sql`1` })
    .from(fetchJobs)
    .where(
      and(
        eq(fetchJobs.contentHash, contentHash),
        eq(fetchJobs.scanEngine, engine),
        eq(fetchJobs.scanVerdict, "clean"),
      ),
    )
    .limit(1);
  return rows.length > 0;
}

/** Every content hash a live job of this node records (the start-up sweep keeps these blobs). */
export async function contentNeededOn(db: Database, nodeName: string): Promise<Set<string>> {
  const rows = await db
    .selectDistinct({ hash: fetchJobs.contentHash })
    .from(fetchJobs)
    .where(and(isNotNull(fetchJobs.contentHash), needsContentOn(nodeName)));
  return new Set(rows.map((r) => r.hash!));
}

/**
 * The .torrent bytes of a job. Read through the libSQL client, not drizzle: without Node's Buffer
 * (on Workers) drizzle's libSQL driver turns every ArrayBuffer it reads into a UTF-8 *string*
 * (`normalizeFieldValue` in drizzle-orm/libsql/session.js), which destroys binary data.
 */
export async function torrentBytes(db: Database, jobId: string): Promise<Uint8Array | null> {
  const rs = await db.$client.execute({ sql: TORRENT_SQL, args: [jobId] });
  const v = rs.rows[0]?.torrent;
  if (v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  return null;
}

const TORRENT_SQL = sqlText(
  sql`SELECT ${fetchJobs.torrent} AS torrent FROM ${fetchJobs} WHERE ${fetchJobs.id} = ?`,
);

/** Counts for health and metrics. */
export async function queueDepth(db: Database): Promise<{ queued: number; running: number }> {
  const rows = await db
    .select({ status: fetchJobs.status, n: sql<number>`count(*)` })
    .from(fetchJobs)
    .where(inArray(fetchJobs.status, ["queued", "fetching", "packaging", "seeding"]))
    .groupBy(fetchJobs.status);
  let queued = 0;
  let running = 0;
  for (const r of rows) {
    if (r.status === "queued") queued += Number(r.n);
    else running += Number(r.n);
  }
  return { queued, running };
}

/** When the oldest job still waiting to be claimed was created (epoch ms), or null when none waits. */
export async function oldestQueuedAt(db: Database): Promise<number | null> {
  const rows = await db
    .select({ at: sql<number | null>`min(${fetchJobs.createdAt})` })
    .from(fetchJobs)
    .where(eq(fetchJobs.status, "queued"));
  const at = rows[0]?.at;
  return at === null || at === undefined ? null : Number(at);
}

/** Of these job ids, those whose job has not ended (a node keeps their partial bodies). */
export async function activeJobIds(db: Database, ids: string[]): Promise<Set<string>> {
  const out = new Set<string>();
  for (let i = 0; i < ids.length; i += 500) {
    const rows = await db
      .select({ id: fetchJobs.id })
      .from(fetchJobs)
      .where(
        and(
          inArray(fetchJobs.id, ids.slice(i, i + 500)),
          inArray(fetchJobs.status, ["queued", "fetching", "packaging", "seeding"]),
        ),
      );
    for (const r of rows) out.add(r.id);
  }
  return out;
}
