/**
 * When a request counts as live, in SQL, for every query that must agree with the status the API
 * shows (toView in ./service.ts): the passkey checks (tracker, web seed, BitTorrent port), quotas'
 * stored bytes, and "does any live request still need this job". A request is live while it is not
 * cancelled and not expired, where expired means the sweep recorded it (`expired_at`) or its
 * `expires_at` has passed by the caller's clock: the instant it passes, everything stops at once,
 * whatever the sweep interval.
 */
import { and, gt, isNull, or, type SQL } from "drizzle-orm";
import type { SQLiteColumn } from "drizzle-orm/sqlite-core";

interface RequestExpiryColumns {
  cancelledAt: SQLiteColumn;
  expiresAt: SQLiteColumn;
  expiredAt: SQLiteColumn;
}

/** Not cancelled, not expired at `now`. */
export const liveRequest = (r: RequestExpiryColumns, now: number): SQL =>
  and(isNull(r.cancelledAt), notExpired(r, now))!;

/** Not expired at `now` (cancelled or not). */
export const notExpired = (r: RequestExpiryColumns, now: number): SQL =>
  and(isNull(r.expiredAt), or(isNull(r.expiresAt), gt(r.expiresAt, now)))!;
