/**
 * Nonces of signed requests, remembered in the database for the signature window so a replay is
 * refused by every API process that shares the database (edge isolates and Bun alike).
 */
import { lt } from "drizzle-orm";
import type { Database } from "../db";
import { authNonces } from "../db/schema";
import { excluded } from "../db/sql";

/**
 * Insert (key, nonce). The primary key turns the insert into a no-op while the pair is remembered,
 * and SQLite applies the statement atomically, so of two concurrent requests carrying one nonce
 * exactly one gets `true`. A row whose window has passed (not purged yet) may be taken over: any
 * signature that used it is stale by then. Expired rows are deleted by the nodes' garbage
 * collection (src/jobs/purge.ts), in bounded batches, not on this hot path.
 */
export async function rememberNonce(
  db: Database,
  keyId: string,
  nonce: string,
  expiresAt: number,
  now: number,
): Promise<boolean> {
  const res = await db
    .insert(authNonces)
    .values({ keyId, nonce, expiresAt })
    .onConflictDoUpdate({
      target: [authNonces.keyId, authNonces.nonce],
      set: { expiresAt: excluded(authNonces.expiresAt) },
      setWhere: lt(authNonces.expiresAt, now),
    });
  return res.rowsAffected === 1;
}
