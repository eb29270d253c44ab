/**
 * Rate-limit counters in the database, so every API process (Bun or Worker isolate) shares them.
 * Fixed windows aligned to the epoch (a minute bucket resets at :00), one row per bucket.
 *
 * Admission is one UPSERT … RETURNING per bucket: it either starts a new window at 1 or adds 1, and
 * the request is admitted when the count it got back is within the limit. SQLite runs each statement
 * atomically (one writer at a time), so concurrent requests from any number of processes get
 * distinct counts and exactly `limit` of them are admitted per window. Counts past the limit do not
 * matter: the window starts from 1 again when it rolls over. Rows whose window has ended behave
 * exactly like missing rows; the nodes' garbage collection deletes them (src/jobs/purge.ts).
 */
import { and, eq, gt, sql } from "drizzle-orm";
import type { Database } from "../db";
import { rateLimits } from "../db/schema";
import { excluded } from "../db/sql";

export interface Bucket {
  /** Unique name, e.g. `create:principal:key:ab12…:minute`. */
  name: string;
  limit: number;
  windowMs: number;
  /** The 429 detail when this bucket is exhausted. */
  message: string;
}

export interface BucketState {
  bucket: Bucket;
  count: number;
  allowed: boolean;
  remaining: number;
  /** When the window ends (ms since the epoch). */
  resetAt: number;
}

export const windowStart = (now: number, windowMs: number) => Math.floor(now / windowMs) * windowMs;

const state = (bucket: Bucket, count: number, start: number): BucketState => ({
  bucket,
  count,
  allowed: count <= bucket.limit,
  remaining: Math.max(0, bucket.limit - count),
  resetAt: start + bucket.windowMs,
});

function chargeQuery(db: Database, b: Bucket, now: number) {
  const start = windowStart(now, b.windowMs);
  const end = start + b.windowMs;
  // All SET expressions read the row as it was before this statement (standard SQL), so the
  // window comparison and the count update see the same old values.
  return db
    .insert(rateLimits)
    .values({ bucket: b.name, windowStart: start, count: 1, expiresAt: end })
    .onConflictDoUpdate({
      target: rateLimits.bucket,
      set: {
        count: sql`CASE WHEN ${rateLimits.windowStart} = ${excluded(rateLimits.windowStart)}
          THEN ${rateLimits.count} + 1 ELSE 1 END`,
        windowStart: excluded(rateLimits.windowStart),
        expiresAt: excluded(rateLimits.expiresAt),
      },
    })
    .returning({ count: rateLimits.count });
}

/** Charge one unit without an admission decision (used for failed authentications). */
export async function record(db: Database, b: Bucket, now: number): Promise<BucketState> {
  const rows = await chargeQuery(db, b, now);
  return state(b, Number(rows[0]!.count), windowStart(now, b.windowMs));
}

/**
 * Charge every bucket (one batch: one round trip, one transaction); admitted only if all admit.
 * When one refuses, the others get their unit back, so an IP limit does not eat a tenant's quota
 * (a bug of the original). Between the two steps another request may see a count one too high and
 * be refused: strict, never lenient.
 */
export async function consume(
  db: Database,
  buckets: Bucket[],
  now: number,
): Promise<{ allowed: boolean; states: BucketState[]; refusedBy?: BucketState }> {
  if (!buckets.length) return { allowed: true, states: [] };
  const [first, ...rest] = buckets.map((b) => chargeQuery(db, b, now));
  const results = await db.batch([first!, ...rest]);
  const states = buckets.map((b, i) => state(b, Number(results[i]![0]!.count), windowStart(now, b.windowMs)));
  const refusedBy = states.find((s) => !s.allowed);
  const giveBack = refusedBy ? states.filter((s) => s.allowed) : [];
  if (giveBack.length) {
    const [g, ...gs] = giveBack.map((s) =>
      db
        .update(rateLimits)
        .set({ count: sql`${rateLimits.count} - 1` })
        .where(
          and(
            eq(rateLimits.bucket, s.bucket.name),
            eq(rateLimits.windowStart, s.resetAt - s.bucket.windowMs),
            gt(rateLimits.count, 0),
          ),
        ),
    );
    await db.batch([g!, ...gs]);
  }
  return { allowed: !refusedBy, states, refusedBy };
}

/** The current count of a bucket without charging it. */
export async function peek(db: Database, b: Bucket, now: number): Promise<BucketState> {
  const start = windowStart(now, b.windowMs);
  const rows = await db
    .select({ count: rateLimits.count })
    .from(rateLimits)
    .where(and(eq(rateLimits.bucket, b.name), eq(rateLimits.windowStart, start)));
  const count = Number(rows[0]?.count ?? 0);
  // A peek is a question about the next request: it would be the (count + 1)th.
  return { ...state(b, count + 1, start), remaining: Math.max(0, b.limit - count) };
}
