/**
 * Row garbage collection: what the database no longer needs goes, in bounded batches so a large
 * backlog never holds the (single-writer) database for long. Seeder nodes run it on every GC tick
 * (seeder/node/gc.ts); it lives here so any process with the database (an API alone, a Worker's
 * scheduled handler) could run it too.
 *
 * Safe to run on any number of processes at once, with no leader: every batch is one DELETE (or
 * one transaction) whose conditions are evaluated inside it, and SQLite runs one write at a time.
 * Two processes deleting the same batch simply find fewer rows; no statement can delete a row that
 * a concurrent write made live again, because that write is ordered wholly before or after it.
 *
 * What goes (retention settings in STORAGE__*):
 * - auth nonces past their expiry and rate-limit windows that ended (both behave exactly like
 *   missing rows once expired, so they go at once);
 * - webhook deliveries that ended (delivered or failed) and were last touched longer than
 *   STORAGE__WEBHOOK_RETENTION ago, with their attempts;
 * - node registry rows not seen (stopped or vanished) for STORAGE__NODE_RETENTION;
 * - request history older than STORAGE__HISTORY_RETENTION (0 = forever) that is no longer live,
 *   with its callback and ended deliveries; then jobs no request references and that are not
 *   running. A job is never deleted while queued, fetching, packaging or seeding, nor while a
 *   request references it.
 */
import { type SQL, sql } from "drizzle-orm";
import type { SQLiteTable } from "drizzle-orm/sqlite-core";
import type { Clock } from "../clock";
import type { Database } from "../db";
import {
  authNonces,
  fetchJobs,
  fetchRequests,
  nodes,
  rateLimits,
  requestCallbacks,
  webhookAttempts,
  webhookDeliveries,
} from "../db/schema";

export const PURGED_TABLES = [
  "auth_nonces",
  "rate_limits",
  "webhook_attempts",
  "webhook_deliveries",
  "request_callbacks",
  "fetch_requests",
  "fetch_jobs",
  "nodes",
] as const;
export type PurgedTable = (typeof PURGED_TABLES)[number];

export interface PurgeRetention {
  /** Request history (ms; 0 = keep forever). */
  historyMs: number;
  /** Ended webhook deliveries and their attempts (ms; 0 = keep forever). */
  webhookMs: number;
  /** Node registry rows not seen for this long (ms). */
  nodeMs: number;
}

export interface PurgeOptions {
  /** Rows per statement (per transaction for the multi-table deletes). */
  batch?: number;
  /** Stop starting new batches after this much wall time; the next run continues. */
  budgetMs?: number;
  /** Wall time for the budget (tests pass their own). */
  now?: () => number;
}

export interface PurgeResult {
  /** Rows deleted, per table (tables with none are absent). */
  counts: Partial<Record<PurgedTable, number>>;
  /** False when the time budget ran out with rows left. */
  done: boolean;
}

/** A batch of 500 rows is a few milliseconds of writing: other writers wait at most that long. */
export const DEFAULT_PURGE_BATCH = 500;
export const DEFAULT_PURGE_BUDGET_MS = 5000;

const ENDED_DELIVERY = sql`${webhookDeliveries.status} IN ('delivered', 'failed')`;

/**
 * A request still in use: not cancelled, and its job is running or ready and seeded. A request
 * whose job ended (error, cancelled) or stopped seeding (no live request wants it any more) is
 * history. (Retention's `expired` requests fall in the second group once their job stops seeding.)
 */
const REQUEST_LIVE = sql`${fetchRequests.cancelledAt} IS NULL AND EXISTS (SELECT 1 FROM ${fetchJobs}
  WHERE ${fetchJobs.id} = ${fetchRequests.jobId}
  AND (${fetchJobs.status} IN ('queued', 'fetching', 'packaging', 'seeding')
    OR (${fetchJobs.status} = 'ready' AND ${fetchJobs.seeding})))`;

export async function purgeRows(
  db: Database,
  clock: Clock,
  retention: PurgeRetention,
  opts: PurgeOptions = {},
): Promise<PurgeResult> {
  const n = opts.batch ?? DEFAULT_PURGE_BATCH;
  const wall = opts.now ?? Date.now;
  const deadline = wall() + (opts.budgetMs ?? DEFAULT_PURGE_BUDGET_MS);
  const now = clock.now();
  const counts: Partial<Record<PurgedTable, number>> = {};
  const add = (table: PurgedTable, rows: number) => {
    if (rows > 0) counts[table] = (counts[table] ?? 0) + rows;
  };
  let done = true;

  /** Run `step` (one batch; returns the rows its driving table lost) until a short batch or the budget. */
  const drain = async (step: () => Promise<number>) => {
    if (!done) return;
    for (;;) {
      if (wall() >= deadline) {
        done = false;
        return;
      }
      if ((await step()) < n) return;
    }
  };

  /** One DELETE of up to `n` rows of `table` matching `where`. */
  const single = (table: SQLiteTable, name: PurgedTable, where: SQL) => async () => {
    const res = await db.run(
      sql`DELETE FROM ${table} WHERE rowid IN (SELECT rowid FROM ${table} WHERE ${where} LIMIT ${n})`,
    );
    add(name, res.rowsAffected);
    return res.rowsAffected;
  };

  await drain(single(authNonces, "auth_nonces", sql`${authNonces.expiresAt} < ${now}`));
  await drain(single(rateLimits, "rate_limits", sql`${rateLimits.expiresAt} < ${now}`));
  await drain(single(nodes, "nodes", sql`${nodes.lastSeenAt} < ${now - retention.nodeMs}`));

  if (retention.webhookMs > 0) {
    // The same sub-select in both statements of one transaction picks the same rows: nothing
    // else writes in between, and the first statement does not touch webhook_deliveries.
    const picked = sql`SELECT ${webhookDeliveries.id} FROM ${webhookDeliveries}
      WHERE ${ENDED_DELIVERY} AND ${webhookDeliveries.updatedAt} < ${now - retention.webhookMs} LIMIT ${n}`;
    await drain(async () => {
      const [attempts, deliveries] = await db.batch([
        db.run(sql`DELETE FROM ${webhookAttempts} WHERE ${webhookAttempts.deliveryId} IN (${picked})`),
        db.run(sql`DELETE FROM ${webhookDeliveries} WHERE ${webhookDeliveries.id} IN (${picked})`),
      ]);
      add("webhook_attempts", attempts.rowsAffected);
      add("webhook_deliveries", deliveries.rowsAffected);
      return deliveries.rowsAffected;
    });
  }

  if (retention.historyMs > 0) {
    // Requests first (with what hangs off them), then the jobs that lost their last request.
    // Same reasoning as above: the request rows go in the last statement, so each statement's
    // sub-select sees the same requests.
    const picked = sql`SELECT ${fetchRequests.id} FROM ${fetchRequests}
      WHERE ${fetchRequests.createdAt} < ${now - retention.historyMs} AND NOT (${REQUEST_LIVE}) LIMIT ${n}`;
    // Deliveries still pending stay: they finish (or fail) and go with STORAGE__WEBHOOK_RETENTION.
    const endedDeliveries = sql`SELECT ${webhookDeliveries.id} FROM ${webhookDeliveries}
      WHERE ${webhookDeliveries.requestId} IN (${picked}) AND ${ENDED_DELIVERY}`;
    await drain(async () => {
      const [attempts, deliveries, callbacks, requests] = await db.batch([
        db.run(
          sql`DELETE FROM ${webhookAttempts} WHERE ${webhookAttempts.deliveryId} IN (${endedDeliveries})`,
        ),
        db.run(sql`DELETE FROM ${webhookDeliveries} WHERE ${webhookDeliveries.id} IN (${endedDeliveries})`),
        db.run(sql`DELETE FROM ${requestCallbacks} WHERE ${requestCallbacks.requestId} IN (${picked})`),
        db.run(sql`DELETE FROM ${fetchRequests} WHERE ${fetchRequests.id} IN (${picked})`),
      ]);
      add("webhook_attempts", attempts.rowsAffected);
      add("webhook_deliveries", deliveries.rowsAffected);
      add("request_callbacks", callbacks.rowsAffected);
      add("fetch_requests", requests.rowsAffected);
      return requests.rowsAffected;
    });
  }
  // A job no request references (its requests went as history, or it was made for a request a
  // quota then refused) is nobody's. NOT EXISTS is evaluated inside the DELETE: a request that
  // links to the job first keeps it; one that links after finds the job gone (createRequest links
  // only to an existing job, in one statement) and makes a new one. Active jobs stay whatever
  // references them (a request is being linked to a new one).
  await drain(
    single(
      fetchJobs,
      "fetch_jobs",
      sql`${fetchJobs.status} IN ('ready', 'error', 'cancelled') AND NOT EXISTS (SELECT 1 FROM ${fetchRequests}
        WHERE ${fetchRequests.jobId} = ${fetchJobs.id})`,
    ),
  );
  return { counts, done };
}
