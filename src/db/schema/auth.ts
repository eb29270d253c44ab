/**
 * Authentication state that every API process (embedded, Bun API, Worker isolates) must share, so
 * it lives in the database:
 * - `api_keys`: keys made by `proxytorrent keys create`. Only SHA-256 of the key is stored.
 * - `auth_nonces`: nonces of signed requests, remembered for the signature window so a captured
 *   request cannot be replayed, whichever process it is replayed against.
 * - `rate_limits`: fixed-window counters, one row per bucket (e.g. creates per principal per minute).
 *
 * Times are integer milliseconds since the epoch (UTC), as in the other tables.
 */
import { index, integer, primaryKey, sqliteTable, text } from "drizzle-orm/sqlite-core";

export const apiKeys = sqliteTable(
  "api_keys",
  {
    /** Public part of the key (`pt_<id>_<secret>`); also the `keyid` of signed requests. */
    id: text("id").primaryKey(),
    name: text("name").notNull(),
    /** Lower-case hex SHA-256 of the whole key string. The key itself is never stored. */
    hash: text("hash").notNull(),
    /** JSON array of scope names. */
    scopes: text("scopes", { mode: "json" }).$type<string[]>().notNull(),
    /** Principal id the key acts as (owner of the requests it creates); default `key:<id>`. */
    tenant: text("tenant").notNull(),
    createdAt: integer("created_at").notNull(),
    lastUsedAt: integer("last_used_at"),
    revokedAt: integer("revoked_at"),
    /**
     * Quotas of the tenant when a request is made with this key (src/requests/quotas.ts): stored
     * bytes and active requests. Null = the QUOTA__* default; 0 = unlimited.
     */
    maxBytes: integer("max_bytes"),
    maxActive: integer("max_active"),
  },
  (t) => [index("api_keys_tenant").on(t.tenant)],
);

export const authNonces = sqliteTable(
  "auth_nonces",
  {
    keyId: text("key_id").notNull(),
    nonce: text("nonce").notNull(),
    /** After this instant the signature that carried the nonce is stale anyway; the row may go. */
    expiresAt: integer("expires_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.keyId, t.nonce] }), index("auth_nonces_expiry").on(t.expiresAt)],
);

export const rateLimits = sqliteTable(
  "rate_limits",
  {
    /** Bucket name, e.g. `create:principal:key:ab12…:60`. */
    bucket: text("bucket").primaryKey(),
    windowStart: integer("window_start").notNull(),
    count: integer("count").notNull(),
    /** End of the current window; rows whose window ended long ago are purged. */
    expiresAt: integer("expires_at").notNull(),
  },
  (t) => [index("rate_limits_expiry").on(t.expiresAt)],
);

export type ApiKeyRow = typeof apiKeys.$inferSelect;
