/**
 * Row garbage collection: what the database no longer needs goes, in bounded batches so a large
 * backlog never holds the (single-writer) database for long. Seeder nodes run it on every GC tick
 * (seeder/node/gc.ts); it lives here so any process with the database (an API alone, a Worker's
 * scheduled handler) could run it too.
 *
 * Each batch first reads the keys of up to `batch` rows that may go (a plain read: it takes no
 * write lock, however many rows it has to look at), then deletes those keys in one statement (or
 * one transaction) that checks the same conditions again. The write therefore only touches rows
 * by key and holds the database's single write lock for a few milliseconds. Measured (2 cores,
 * libSQL file): a tick with nothing to delete over 100,000 requests, jobs and deliveries spent
 * ~75 ms scanning when the scans ran inside the DELETEs (every other writer waiting), ~37 ms as
 * reads that block no one; deleting 10,000 job rows took 100-250 ms in 20 batches.
 *
 * Safe to run on any number of processes at once, with no leader: the write re-checks every
 * condition inside itself, and SQLite runs one write at a time, so a row a concurrent write made
 * live again (a request linked to a job, a delivery sent again) is never deleted; two processes
 * deleting the same batch simply find fewer rows.
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
import { liveRequest } from "../requests/expiry";

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
  /** Checked before each batch: a process shutting down stops starting new ones. */
  stopped?: () => boolean;
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
 * history, and so is an expired one (src/requests/expiry.ts), even while its job still seeds for others.
 */
const requestLive = (
  now: number,
) => sql`${liveRequest(fetchRequests, now)} AND EXISTS (SELECT 1 FROM ${fetchJobs}
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

  /** Keys of up to `n` rows of `table` matching `where` (a read): how many, and as an SQL list. */
  const pick = async (table: SQLiteTable, key: SQL, where: SQL) => {
    const rows = await db.all<{ k: string | number }>(
      sql`SELECT ${key} AS k FROM ${table} WHERE ${where} LIMIT ${n}`,
    );
    const list = sql`(${sql.join(
      rows.map((r) => sql`${r.k}`),
      sql`, `,
    )})`;
    return { count: rows.length, list };
  };

  /**
   * Batches of `table`'s rows matching `where` (picked, then `remove`d with the conditions checked
   * again) until a batch comes back short or the time budget is spent.
   */
  const drain = async (
    table: SQLiteTable,
    key: SQL,
    where: SQL,
    remove: (keys: SQL) => Promise<void>,
  ): Promise<void> => {
    for (;;) {
      if (!done) return;
      if (wall() >= deadline || opts.stopped?.()) {
        done = false;
        return;
      }
      const keys = await pick(table, key, where);
      if (keys.count === 0) return;
      await remove(keys.list);
      if (keys.count < n) return;
    }
  };

  /** Rows of one table: one DELETE per batch. */
  const single = (table: SQLiteTable, name: PurgedTable, key: SQL, where: SQL) =>
    drain(table, key, where, async (keys) => {
      add(name, (await db.run(sql`DELETE FROM ${table} WHERE ${key} IN ${keys} AND ${where}`)).rowsAffected);
    });

  const ROWID = sql`rowid`;
  await single(authNonces, "auth_nonces", ROWID, sql`${authNonces.expiresAt} < ${now}`);
  await single(rateLimits, "rate_limits", ROWID, sql`${rateLimits.expiresAt} < ${now}`);
  await single(nodes, "nodes", ROWID, sql`${nodes.lastSeenAt} < ${now - retention.nodeMs}`);

  if (retention.webhookMs > 0) {
    const old = sql`${ENDED_DELIVERY} AND ${webhookDeliveries.updatedAt} < ${now - retention.webhookMs}`;
    await drain(webhookDeliveries, sql`${webhookDeliveries.id}`, old, async (keys) => {
      // The picked deliveries that still match, in both statements of one transaction.
      const still = sql`SELECT ${webhookDeliveries.id} FROM ${webhookDeliveries}
        WHERE ${webhookDeliveries.id} IN ${keys} AND ${old}`;
      const [attempts, deliveries] = await db.batch([
        db.run(sql`DELETE FROM ${webhookAttempts} WHERE ${webhookAttempts.deliveryId} IN (${still})`),
        db.run(sql`DELETE FROM ${webhookDeliveries} WHERE ${webhookDeliveries.id} IN (${still})`),
      ]);
      add("webhook_attempts", attempts.rowsAffected);
      add("webhook_deliveries", deliveries.rowsAffected);
    });
  }

  if (retention.historyMs > 0) {
    // Requests with what hangs off them, in one transaction; the request rows go last, so every
    // statement's sub-select sees the same requests.
    const old = sql`${fetchRequests.createdAt} < ${now - retention.historyMs} AND NOT (${requestLive(now)})`;
    await drain(fetchRequests, sql`${fetchRequests.id}`, old, async (keys) => {
      const still = sql`SELECT ${fetchRequests.id} FROM ${fetchRequests}
        WHERE ${fetchRequests.id} IN ${keys} AND ${old}`;
      // Deliveries still pending stay: they finish (or fail) and go with STORAGE__WEBHOOK_RETENTION.
      const ended = sql`SELECT ${webhookDeliveries.id} FROM ${webhookDeliveries}
        WHERE ${webhookDeliveries.requestId} IN (${still}) AND ${ENDED_DELIVERY}`;
      const [attempts, deliveries, callbacks, requests] = await db.batch([
        db.run(sql`DELETE FROM ${webhookAttempts} WHERE ${webhookAttempts.deliveryId} IN (${ended})`),
        db.run(sql`DELETE FROM ${webhookDeliveries} WHERE ${webhookDeliveries.id} IN (${ended})`),
        db.run(sql`DELETE FROM ${requestCallbacks} WHERE ${requestCallbacks.requestId} IN (${still})`),
        db.run(sql`DELETE FROM ${fetchRequests} WHERE ${fetchRequests.id} IN (${still})`),
      ]);
      add("webhook_attempts", attempts.rowsAffected);
      add("webhook_deliveries", deliveries.rowsAffected);
      add("request_callbacks", callbacks.rowsAffected);
      add("fetch_requests", requests.rowsAffected);
    });
  }
  // A job no request references (its requests went as history, or it was made for a request a
  // quota then refused) is nobody's. NOT EXISTS is evaluated inside the DELETE: a request that
  // links to the job first keeps it; one that links after finds the job gone (createRequest links
  // only to an existing job, in one statement) and makes a new one. Active jobs stay whatever
  // references them (a request is being linked to a new one).
  await single(
    fetchJobs,
    "fetch_jobs",
    sql`${fetchJobs.id}`,
    sql`${fetchJobs.status} IN ('ready', 'error', 'cancelled', 'expired') AND NOT EXISTS (SELECT 1 FROM ${fetchRequests}
      WHERE ${fetchRequests.jobId} = ${fetchJobs.id})`,
  );
  return { counts, done };
}
