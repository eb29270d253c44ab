/**
 * The webhook outbox, all in SQL.
 *
 * Writing: `outboxInserts` returns INSERT … SELECT statements that the code changing a status puts
 * in the same `db.batch` (one transaction) as that change, placed BEFORE the status UPDATE and
 * conditioned on the same predicate (e.g. the lease token), so the rows exist exactly when the
 * change happens. One row per (event, destination): the request's `callback_url`, and every
 * enabled endpoint of the request's owner whose filter takes the event. The JSON body is built
 * in SQL at that moment and never changes afterwards.
 *
 * Delivering: nodes claim due rows with a lease and a fresh token (like jobs); every later write
 * is fenced by that token, so a node whose lease ran out cannot overwrite the outcome of the node
 * that claimed the row after it.
 */
import { and, eq, exists, inArray, isNull, or, type SQL, sql } from "drizzle-orm";
import { alias } from "drizzle-orm/sqlite-core";
import type { Clock } from "../clock";
import type { Database } from "../db";
import {
  fetchJobs,
  fetchRequests,
  requestCallbacks,
  type WebhookAttempt,
  type WebhookDelivery,
  type WebhookEventType,
  webhookAttempts,
  webhookDeliveries,
  webhookEndpoints,
} from "../db/schema";
import { batchLast, insertSelect } from "../db/sql";

export interface DeliveryLease {
  id: string;
  leaseToken: string;
}

/** The `data.status` each event reports (the request's status as the API shows it). */
const EVENT_STATUS: Record<WebhookEventType, string> = {
  "request.ready": "ready",
  "request.failed": "error",
  "request.cancelled": "cancelled",
  "request.expired": "expired",
};

/** The rows an outbox insert reads: a request (`r`) joined with its job (`j`). */
const r = alias(fetchRequests, "r");
const j = alias(fetchJobs, "j");
export type OutboxCondition = (request: typeof r, job: typeof j) => SQL | undefined;

/**
 * Outbox rows for `type`, one per destination of every request matched by `where`, a condition
 * over a request and its job (given as the aliased tables the statements read). Put the returned
 * statements in the status change's batch, before the UPDATE they report.
 */
export function outboxInserts(db: Database, type: WebhookEventType, now: number, where: OutboxCondition) {
  const status = EVENT_STATUS[type];
  const iso = new Date(now).toISOString();
  const cond = where(r, j);
  if (!cond) throw new Error("outboxInserts needs a condition");
  const e = alias(webhookEndpoints, "e");
  const c = alias(requestCallbacks, "c");
  // json_object keeps key order: the body reads as documented in docs/webhooks.md.
  const row = (endpointId: SQL | null, url: SQL) => ({
    id: sql`'msg_' || lower(hex(randomblob(16)))`,
    eventType: type,
    requestId: r.id,
    tenant: r.userId,
    endpointId,
    url,
    payload: sql`json_object(
        'type', ${type},
        'timestamp', ${iso},
        'data', json_object(
          'id', ${r.id},
          'status', ${status},
          'infohash', ${j.infohash},
          'magnet_link', CASE WHEN ${status} = 'ready' THEN ${j.magnetLink} END,
          'content_hash', ${j.contentHash},
          'content_size', ${j.contentSize},
          'url', ${r.url},
          'scan', json(CASE WHEN ${j.scanVerdict} IS NOT NULL THEN json_object(
            'verdict', ${j.scanVerdict},
            'engine', ${j.scanEngine},
            -- integer arithmetic for the milliseconds: exactly what the status body's toISOString shows
            'scanned_at', strftime('%Y-%m-%dT%H:%M:%S', ${j.scannedAt} / 1000, 'unixepoch')
              || printf('.%03dZ', ${j.scannedAt} % 1000)) END)))`,
    traceId: sql`coalesce(${r.requestId}, ${j.traceId})`,
    status: "pending" as const,
    attempts: 0,
    nextAttemptAt: now,
    createdAt: now,
    updatedAt: now,
  });
  const toCallback = insertSelect(
    db,
    webhookDeliveries,
    row(null, sql`${c.url}`),
    sql`FROM ${fetchRequests} ${r}
      JOIN ${fetchJobs} ${j} ON ${j.id} = ${r.jobId}
      JOIN ${requestCallbacks} ${c} ON ${c.requestId} = ${r.id}
     WHERE ${cond}`,
  );
  const toEndpoints = insertSelect(
    db,
    webhookDeliveries,
    row(sql`${e.id}`, sql`${e.url}`),
    sql`FROM ${fetchRequests} ${r}
      JOIN ${fetchJobs} ${j} ON ${j.id} = ${r.jobId}
      JOIN ${webhookEndpoints} ${e} ON ${e.tenant} IS ${r.userId}
     WHERE ${e.disabledAt} IS NULL
       AND (${e.events} IS NULL OR EXISTS (SELECT 1 FROM json_each(${e.events}) WHERE json_each.value = ${type}))
       AND (${cond})`,
  );
  return [toCallback, toEndpoints] as const;
}

/** Record a request's `callback_url`, only if the request row exists (put after its INSERT). */
export function callbackInsert(db: Database, requestId: string, url: string, now: number) {
  return insertSelect(
    db,
    requestCallbacks,
    { requestId, url, createdAt: now },
    sql`WHERE EXISTS (SELECT 1 FROM ${fetchRequests} WHERE ${fetchRequests.id} = ${requestId})`,
  );
}

// ---- delivering ----

/** Due rows: pending ones whose time has come, and in-flight ones whose node stopped (lease expired). */
function runnable(now: number, limit: number) {
  const d = alias(webhookDeliveries, "d");
  const e = alias(webhookEndpoints, "e");
  return sql`SELECT ${d.id} FROM ${webhookDeliveries} ${d}
     WHERE ((${d.status} = 'pending' AND ${d.nextAttemptAt} <= ${now})
         OR (${d.status} = 'delivering' AND ${d.leaseExpiresAt} < ${now}))
       AND (${d.endpointId} IS NULL
         OR EXISTS (SELECT 1 FROM ${webhookEndpoints} ${e} WHERE ${e.id} = ${d.endpointId} AND ${e.disabledAt} IS NULL))
     ORDER BY ${d.nextAttemptAt}, ${d.id}
     LIMIT ${limit}`;
}

/**
 * Claim up to `limit` due deliveries for `nodeName`. Deliveries whose lease expired get an
 * `abandoned` line in the log first. Both statements run in one transaction and pick the same
 * rows (same snapshot, deterministic order); SQLite has one writer at a time, so two nodes can
 * never claim the same row, exactly as with jobs.
 */
export async function claimDeliveries(
  db: Database,
  clock: Clock,
  opts: { nodeName: string; limit: number; leaseMs: number },
): Promise<WebhookDelivery[]> {
  const now = clock.now();
  // A plain read first: an idle node polling must not take the write lock every time.
  const due = await db.all(runnable(now, 1));
  if (due.length === 0) return [];
  const abandoned = insertSelect(
    db,
    webhookAttempts,
    {
      deliveryId: webhookDeliveries.id,
      nodeName: webhookDeliveries.nodeName,
      outcome: "abandoned",
      statusCode: null,
      error: "The node sending this attempt stopped before it finished; the message was sent again",
      startedAt: sql`coalesce(${webhookDeliveries.lastAttemptAt}, ${now})`,
      finishedAt: now,
    },
    sql`FROM ${webhookDeliveries}
       WHERE ${webhookDeliveries.id} IN (${runnable(now, opts.limit)}) AND ${webhookDeliveries.status} = 'delivering'`,
  );
  return batchLast(
    db,
    [abandoned],
    db
      .update(webhookDeliveries)
      .set({
        status: "delivering",
        nodeName: opts.nodeName,
        leaseToken: sql`lower(hex(randomblob(16)))`,
        leaseExpiresAt: now + opts.leaseMs,
        attempts: sql`${webhookDeliveries.attempts} + 1`,
        lastAttemptAt: now,
        updatedAt: now,
      })
      .where(sql`${webhookDeliveries.id} IN (${runnable(now, opts.limit)})`)
      .returning(),
  );
}

export type AttemptOutcome =
  | { outcome: "delivered"; statusCode: number }
  | {
      outcome: "retry";
      statusCode: number | null;
      error: string;
      nextAttemptAt: number;
    }
  | {
      outcome: "failed";
      statusCode: number | null;
      error: string;
      /** Disable the delivery's endpoint too (410 Gone), failing its other pending deliveries. */
      disableEndpoint?: string;
    };

/**
 * Record the outcome of an attempt: a line in the log and the delivery's new state, in one
 * transaction, fenced by the lease token. False when the lease was lost (another node owns the
 * delivery now; nothing was written).
 */
export async function recordAttempt(
  db: Database,
  clock: Clock,
  lease: DeliveryLease,
  result: AttemptOutcome,
): Promise<boolean> {
  const now = clock.now();
  const statusCode = result.statusCode;
  const error = result.outcome === "delivered" ? null : result.error;
  const fenced = and(eq(webhookDeliveries.id, lease.id), eq(webhookDeliveries.leaseToken, lease.leaseToken));
  const log = insertSelect(
    db,
    webhookAttempts,
    {
      deliveryId: webhookDeliveries.id,
      nodeName: webhookDeliveries.nodeName,
      outcome: result.outcome,
      statusCode,
      error,
      startedAt: sql`coalesce(${webhookDeliveries.lastAttemptAt}, ${now})`,
      finishedAt: now,
    },
    sql`FROM ${webhookDeliveries} WHERE ${fenced}`,
  );
  const released = { leaseToken: null, leaseExpiresAt: null, lastStatusCode: statusCode, updatedAt: now };
  const update =
    result.outcome === "delivered"
      ? db
          .update(webhookDeliveries)
          .set({ ...released, status: "delivered", deliveredAt: now, lastError: null })
          .where(fenced)
      : result.outcome === "retry"
        ? db
            .update(webhookDeliveries)
            .set({ ...released, status: "pending", nextAttemptAt: result.nextAttemptAt, lastError: error })
            .where(fenced)
        : db
            .update(webhookDeliveries)
            .set({ ...released, status: "failed", lastError: error })
            .where(fenced);
  if (result.outcome === "failed" && result.disableEndpoint) {
    const reason = result.disableEndpoint;
    const held = alias(webhookDeliveries, "held");
    const endpoint = db
      .select({ id: held.endpointId })
      .from(held)
      .where(and(eq(held.id, lease.id), eq(held.leaseToken, lease.leaseToken)));
    const res = await batchLast(
      db,
      [
        log,
        db
          .update(webhookEndpoints)
          .set({ disabledAt: now, disabledReason: reason, updatedAt: now })
          .where(and(eq(webhookEndpoints.id, endpoint), isNull(webhookEndpoints.disabledAt))),
        db
          .update(webhookDeliveries)
          .set({ status: "failed", lastError: `Endpoint disabled: ${reason}`, updatedAt: now })
          .where(and(eq(webhookDeliveries.endpointId, endpoint), eq(webhookDeliveries.status, "pending"))),
      ],
      update,
    );
    return res.rowsAffected === 1;
  }
  const res = await batchLast(db, [log], update);
  return res.rowsAffected === 1;
}

/** Give a delivery back without counting the attempt (graceful shutdown). */
export async function releaseDelivery(db: Database, clock: Clock, lease: DeliveryLease): Promise<boolean> {
  const now = clock.now();
  const res = await db
    .update(webhookDeliveries)
    .set({
      status: "pending",
      leaseToken: null,
      leaseExpiresAt: null,
      nextAttemptAt: now,
      attempts: sql`max(0, ${webhookDeliveries.attempts} - 1)`,
      updatedAt: now,
    })
    .where(and(eq(webhookDeliveries.id, lease.id), eq(webhookDeliveries.leaseToken, lease.leaseToken)));
  return res.rowsAffected === 1;
}

/**
 * When attempt number `attempt` (1-based) failed: the time of the next one, or null to give up.
 * `delaysMs[i]` is the wait after attempt i+1. A receiver's Retry-After is honoured (never
 * sooner than it asks, at most a day later than now) but does not add attempts.
 */
export function nextAttemptAt(
  attempt: number,
  delaysMs: readonly number[],
  now: number,
  retryAfterMs: number | null,
): number | null {
  if (attempt > delaysMs.length) return null;
  const scheduled = delaysMs[attempt - 1] ?? 0;
  const asked = retryAfterMs === null ? 0 : Math.min(retryAfterMs, MAX_RETRY_AFTER_MS);
  return now + Math.max(scheduled, asked);
}

export const MAX_RETRY_AFTER_MS = 24 * 3600 * 1000;

/** `Retry-After` as milliseconds from `now`: delay-seconds or an HTTP-date. Null when absent or invalid. */
export function parseRetryAfter(value: string | null | undefined, now: number): number | null {
  if (!value) return null;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  if (Number.isNaN(at)) return null;
  return Math.max(0, at - now);
}

// ---- reading (the delivery log) and redelivering ----

export interface DeliveryWithAttempts extends WebhookDelivery {
  log: WebhookAttempt[];
}

async function withAttempts(db: Database, rows: WebhookDelivery[]): Promise<DeliveryWithAttempts[]> {
  if (rows.length === 0) return [];
  const attempts = await db
    .select()
    .from(webhookAttempts)
    .where(
      inArray(
        webhookAttempts.deliveryId,
        rows.map((r) => r.id),
      ),
    )
    .orderBy(webhookAttempts.id);
  const by = new Map<string, WebhookAttempt[]>();
  for (const a of attempts) {
    const list = by.get(a.deliveryId) ?? [];
    list.push(a);
    by.set(a.deliveryId, list);
  }
  return rows.map((r) => ({ ...r, log: by.get(r.id) ?? [] }));
}

/** Deliveries not yet delivered or given up (all nodes), and when the oldest of them was created. */
export async function webhookBacklog(db: Database): Promise<{ pending: number; oldestAt: number | null }> {
  const rows = await db
    .select({ n: sql<number>`count(*)`, at: sql<number | null>`min(${webhookDeliveries.createdAt})` })
    .from(webhookDeliveries)
    .where(inArray(webhookDeliveries.status, ["pending", "delivering"]));
  const r = rows[0];
  return {
    pending: Number(r?.n ?? 0),
    oldestAt: r?.at === null || r?.at === undefined ? null : Number(r.at),
  };
}

export async function deliveriesForRequest(db: Database, requestId: string): Promise<DeliveryWithAttempts[]> {
  const rows = await db
    .select()
    .from(webhookDeliveries)
    .where(eq(webhookDeliveries.requestId, requestId))
    .orderBy(webhookDeliveries.createdAt, webhookDeliveries.id);
  return withAttempts(db, rows);
}

export async function deliveriesForEndpoint(
  db: Database,
  endpointId: string,
  limit: number,
): Promise<DeliveryWithAttempts[]> {
  const rows = await db
    .select()
    .from(webhookDeliveries)
    .where(eq(webhookDeliveries.endpointId, endpointId))
    .orderBy(sql`${webhookDeliveries.createdAt} DESC`, sql`${webhookDeliveries.id} DESC`)
    .limit(limit);
  return withAttempts(db, rows);
}

export async function getDelivery(db: Database, id: string): Promise<DeliveryWithAttempts | null> {
  const rows = await db.select().from(webhookDeliveries).where(eq(webhookDeliveries.id, id)).limit(1);
  return (await withAttempts(db, rows))[0] ?? null;
}

/**
 * Send a message again, with the same `webhook-id`, starting a fresh round of retries. A delivery
 * that is being sent right now is left alone ("busy"); a pending one is simply made due now.
 */
export async function redeliver(
  db: Database,
  clock: Clock,
  id: string,
): Promise<"scheduled" | "busy" | "endpoint_disabled" | "not_found"> {
  const now = clock.now();
  const e = alias(webhookEndpoints, "e");
  const rows = await db
    .update(webhookDeliveries)
    .set({ status: "pending", attempts: 0, nextAttemptAt: now, updatedAt: now })
    .where(
      and(
        eq(webhookDeliveries.id, id),
        inArray(webhookDeliveries.status, ["pending", "delivered", "failed"]),
        or(
          isNull(webhookDeliveries.endpointId),
          exists(
            db
              .select({ one: sql`1` })
              .from(e)
              .where(and(eq(e.id, webhookDeliveries.endpointId), isNull(e.disabledAt))),
          ),
        ),
      ),
    );
  if (rows.rowsAffected === 1) return "scheduled";
  const found = await db
    .select({ status: webhookDeliveries.status })
    .from(webhookDeliveries)
    .where(eq(webhookDeliveries.id, id));
  if (!found[0]) return "not_found";
  return found[0].status === "delivering" ? "busy" : "endpoint_disabled";
}
