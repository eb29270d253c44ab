/**
 * Nonces of signed requests, remembered in the database for the signature window so a replay is
 * refused by every API process that shares the database (edge isolates and Bun alike).
 */
import { lt } from "drizzle-orm";
import type { Database } from "../db";
import { authNonces } from "../db/schema";
import { excluded } from "../db/sql";

/** Share of calls that also delete expired nonces (keeps the table at about one window's worth). */
const PURGE_PROBABILITY = 0.02;

/**
 * Insert (key, nonce). The primary key turns the insert into a no-op while the pair is remembered,
 * and SQLite applies the statement atomically, so of two concurrent requests carrying one nonce
 * exactly one gets `true`. A row whose window has passed (not purged yet) may be taken over: any
 * signature that used it is stale by then.
 */
export async function rememberNonce(
  db: Database,
  keyId: string,
  nonce: string,
  expiresAt: number,
  now: number,
): Promise<boolean> {
  if (Math.random() < PURGE_PROBABILITY) await db.delete(authNonces).where(lt(authNonces.expiresAt, now));
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
