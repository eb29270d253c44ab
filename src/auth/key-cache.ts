/**
 * API keys this process verified a moment ago, so a client polling a status does not cost a
 * database read, a hash comparison and a last-used write on every request.
 *
 * The trade-off is revocation: `keys revoke` (in any process) writes the database, and this
 * process believes its earlier verdict until the entry expires. A revoked key therefore keeps
 * working for at most SECURITY__API_KEY_CACHE_SECONDS in each API process that verified it just
 * before; 0 turns the cache off (every request reads the database, as before).
 *
 * Entries are found by the SHA-256 of the presented key, never by the key itself, so a lookup
 * compares digests, not secrets. Only successes are remembered: a wrong or unknown key goes to
 * the database every time (and counts towards the failure limit). The scopes and tenant of a key
 * cannot change after creation, so a cached verdict can only be stale about revocation.
 * last_used_at is written when an entry is (re)filled, i.e. still about once a minute per key.
 */
import type { Database } from "../db";
import { sha256Hex } from "./crypto";
import { type ApiKeyInfo, verifyApiKey } from "./keys";

/** Keys remembered at most; the oldest verdict goes first. */
const MAX_ENTRIES = 1000;

export class VerifiedKeyCache {
  private readonly entries = new Map<string, { key: ApiKeyInfo; until: number }>();

  constructor(
    private readonly db: Database,
    private readonly ttlMs: number,
    private readonly secret?: string,
  ) {}

  /** As verifyApiKey, answered from memory when this key verified less than the TTL ago. */
  async verify(key: string, now: number): Promise<ApiKeyInfo | null> {
    if (this.ttlMs <= 0) return verifyApiKey(this.db, key, now, this.secret);
    const digest = await sha256Hex(key);
    const hit = this.entries.get(digest);
    // (A clock that went back does not stretch an entry past its TTL.)
    if (hit && now < hit.until && now >= hit.until - this.ttlMs) return hit.key;
    if (hit) this.entries.delete(digest);
    const info = await verifyApiKey(this.db, key, now, this.secret);
    if (info) {
      if (this.entries.size >= MAX_ENTRIES) this.entries.delete(this.entries.keys().next().value!);
      this.entries.set(digest, { key: info, until: now + this.ttlMs });
    }
    return info;
  }
}
