/**
 * Who may download what (TORRENT__ACCESS=passkey): a passkey opens exactly one request's content,
 * and only while that request is live. The node's tracker, web seed and BitTorrent port ask here;
 * the API asks `requestPasskey` for the passkey it writes into the owner's .torrent and magnet.
 *
 * A passkey is live when its request is not cancelled nor expired (its `expires_at` passed, even
 * before a sweep records it: the request reads `expired` from that instant), its job is `ready`,
 * and TORRENT__PASSKEY_TTL_SECONDS (when set) has not passed since the request became ready.
 * Revoking the API key that made the request cancels it, so that needs no check of its own. Every check reads the database, so a DELETE or a key revocation
 * takes effect on the next announce or web seed request, whichever process made it.
 */
import { and, eq, inArray, isNull } from "drizzle-orm";
import { timingSafeEqual, utf8 } from "../auth/crypto";
import type { Database } from "../db";
import { fetchJobs, fetchRequests } from "../db/schema";
import { liveRequest } from "../requests/expiry";
import { passkeyedMagnet } from "./links";
import { newPasskey, PASSKEY_PATTERN, passkeyHash } from "./passkey";

export type TorrentAccess = "passkey" | "open";

/**
 * Request and job rows (joined) whose passkey is live at `now`, apart from
 * TORRENT__PASSKEY_TTL_SECONDS. A revoked API key needs no check of its own here: revoking it
 * cancels its requests in the same transaction (src/auth/keys.ts), and a request accepted with it
 * during the key cache's window is created cancelled (createRequest).
 */
function live(now: number) {
  return and(liveRequest(fetchRequests, now), eq(fetchJobs.status, "ready"));
}

/** TORRENT__PASSKEY_TTL_SECONDS, counted from when the request became ready (or was made, if later). */
const expired = (r: { createdAt: number; completedAt: number | null }, now: number, ttlSeconds: number) =>
  ttlSeconds > 0 && now >= Math.max(r.createdAt, r.completedAt ?? 0) + ttlSeconds * 1000;

/** What a live passkey opens. */
export interface Grant {
  requestId: string;
  /** SHA-256 of the passkey: names the grant in memory without keeping the secret around. */
  passkeyHash: string;
  infohash: string;
  contentHash: string;
  seedNode: string | null;
}

/**
 * The live request `passkey` belongs to, or null (unknown, cancelled, not ready, key revoked,
 * expired). `ttlSeconds` 0 = passkeys do not expire.
 */
export async function passkeyGrant(
  db: Database,
  passkey: string,
  now: number,
  ttlSeconds: number,
): Promise<Grant | null> {
  if (!PASSKEY_PATTERN.test(passkey)) return null;
  const hash = await passkeyHash(passkey);
  const rows = await db
    .select({
      requestId: fetchRequests.id,
      passkey: fetchRequests.passkey,
      createdAt: fetchRequests.createdAt,
      completedAt: fetchJobs.completedAt,
      infohash: fetchJobs.infohash,
      contentHash: fetchJobs.contentHash,
      seedNode: fetchJobs.seedNode,
    })
    .from(fetchRequests)
    .innerJoin(fetchJobs, eq(fetchJobs.id, fetchRequests.jobId))
    .where(and(eq(fetchRequests.passkeyHash, hash), live(now)))
    .limit(1);
  const r = rows[0];
  // The lookup went by hash; comparing the secrets too costs nothing and keeps a hash collision
  // (or a row written by hand) from opening anything.
  if (!r?.passkey || !r.infohash || !r.contentHash || !timingSafeEqual(utf8(r.passkey), utf8(passkey)))
    return null;
  if (expired(r, now, ttlSeconds)) return null;
  return {
    requestId: r.requestId,
    passkeyHash: hash,
    infohash: r.infohash,
    contentHash: r.contentHash,
    seedNode: r.seedNode,
  };
}

/**
 * The passkey of a request, made now for a request written before passkeys existed (0.2 rows).
 * The UPDATE only fills an empty one, so two callers racing get the same passkey.
 */
export async function requestPasskey(db: Database, requestId: string): Promise<string> {
  const passkey = await passkeyIfAny(db, requestId);
  if (!passkey) throw new Error(`request ${requestId} vanished`);
  return passkey;
}

/** requestPasskey, or null when the request row is gone (purged with its history). */
async function passkeyIfAny(db: Database, requestId: string): Promise<string | null> {
  const read = async () =>
    (
      await db.select({ p: fetchRequests.passkey }).from(fetchRequests).where(eq(fetchRequests.id, requestId))
    )[0];
  const existing = await read();
  if (!existing) return null;
  if (existing.p) return existing.p;
  const made = await newPasskey();
  await db
    .update(fetchRequests)
    .set({ passkey: made.passkey, passkeyHash: made.hash })
    .where(and(eq(fetchRequests.id, requestId), isNull(fetchRequests.passkey)));
  return (await read())?.p ?? null;
}

/**
 * Of `hashes` (SHA-256 of passkeys), those whose grant is still live for `infohash`. For a node
 * that remembers which peers announced with which passkey, to forget revoked ones in one query.
 */
export async function liveGrantHashes(
  db: Database,
  hashes: string[],
  now: number,
  ttlSeconds: number,
): Promise<Set<string>> {
  const alive = new Set<string>();
  for (let i = 0; i < hashes.length; i += 200) {
    const chunk = hashes.slice(i, i + 200);
    const rows = await db
      .select({
        hash: fetchRequests.passkeyHash,
        createdAt: fetchRequests.createdAt,
        completedAt: fetchJobs.completedAt,
      })
      .from(fetchRequests)
      .innerJoin(fetchJobs, eq(fetchJobs.id, fetchRequests.jobId))
      .where(and(inArray(fetchRequests.passkeyHash, chunk), live(now)));
    for (const r of rows) if (r.hash && !expired(r, now, ttlSeconds)) alive.add(r.hash);
  }
  return alive;
}

/**
 * A webhook payload as the request's owner gets it: with TORRENT__ACCESS=passkey, `magnet_link`
 * carries the request's passkey (the outbox stores the node's plain magnet, because the rows of
 * every request of a job are written by one INSERT … SELECT). Used where a payload is sent and
 * where it is shown, so both read the same; returned unchanged (byte for byte) otherwise.
 */
export async function ownerPayload(
  db: Database,
  access: TorrentAccess,
  requestId: string,
  payload: string,
): Promise<string> {
  if (access !== "passkey" || !payload.includes('"magnet_link":"magnet:')) return payload;
  const body = JSON.parse(payload) as { data?: { magnet_link?: unknown } };
  const magnet = body.data?.magnet_link;
  if (typeof magnet !== "string") return payload;
  const passkey = await passkeyIfAny(db, requestId);
  // A delivery can outlive its request (history purged while the receiver was down): the stored
  // magnet names no passkey and opens nothing, which is what a purged request deserves.
  if (!passkey) return payload;
  body.data!.magnet_link = passkeyedMagnet(magnet, passkey);
  return JSON.stringify(body);
}
