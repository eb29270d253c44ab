/**
 * API keys in the database: create (returns the key once), list, revoke, and the lookups the auth
 * middleware makes. Only SHA-256 of a key is stored; see key-format.ts for the key's shape.
 */
import { and, desc, eq, isNull, lt, or, sql } from "drizzle-orm";
import type { Database } from "../db";
import { type ApiKeyRow, apiKeys } from "../db/schema";
import { type Bytes, fromHex, sha256Hex, timingSafeEqual } from "./crypto";
import { apiKeyId, generateApiKey } from "./key-format";
import { DEFAULT_SCOPES, parseScopes, type Scope } from "./scopes";

export interface ApiKeyInfo {
  id: string;
  name: string;
  scopes: Scope[];
  tenant: string;
  createdAt: number;
  lastUsedAt: number | null;
  revokedAt: number | null;
}

/** Writes of last_used_at happen at most this often per key (reads stay read-only in between). */
const TOUCH_EVERY_MS = 60_000;

const info = (r: ApiKeyRow): ApiKeyInfo => ({
  id: r.id,
  name: r.name,
  scopes: parseScopes(r.scopes).scopes,
  tenant: r.tenant,
  createdAt: r.createdAt,
  lastUsedAt: r.lastUsedAt,
  revokedAt: r.revokedAt,
});

export const defaultTenant = (keyId: string) => `key:${keyId}`;

export async function createApiKey(
  db: Database,
  opts: { name: string; scopes?: readonly Scope[]; tenant?: string; now: number },
): Promise<ApiKeyInfo & { key: string }> {
  const { id, key } = generateApiKey();
  const row: ApiKeyRow = {
    id,
    name: opts.name,
    hash: await sha256Hex(key),
    scopes: [...(opts.scopes?.length ? opts.scopes : DEFAULT_SCOPES)],
    tenant: opts.tenant ?? defaultTenant(id),
    createdAt: opts.now,
    lastUsedAt: null,
    revokedAt: null,
  };
  await db.insert(apiKeys).values(row);
  return { ...info(row), key };
}

export async function listApiKeys(
  db: Database,
  opts: { includeRevoked?: boolean } = {},
): Promise<ApiKeyInfo[]> {
  const rows = await db
    .select()
    .from(apiKeys)
    .where(opts.includeRevoked ? undefined : isNull(apiKeys.revokedAt))
    .orderBy(desc(apiKeys.createdAt));
  return rows.map(info);
}

/** Revoke by id (or by the whole key). "missing" if no such key; revoking twice is harmless. */
export async function revokeApiKey(
  db: Database,
  idOrKey: string,
  now: number,
): Promise<"revoked" | "already revoked" | "missing"> {
  const id = apiKeyId(idOrKey) ?? idOrKey;
  const rows = await db
    .update(apiKeys)
    .set({ revokedAt: sql`coalesce(${apiKeys.revokedAt}, ${now})` })
    .where(eq(apiKeys.id, id))
    .returning({ revokedAt: apiKeys.revokedAt });
  if (!rows[0]) return "missing";
  return rows[0].revokedAt === now ? "revoked" : "already revoked";
}

export async function hasActiveApiKeys(db: Database): Promise<boolean> {
  const rows = await db.select({ id: apiKeys.id }).from(apiKeys).where(isNull(apiKeys.revokedAt)).limit(1);
  return rows.length > 0;
}

async function activeKey(db: Database, id: string): Promise<ApiKeyRow | null> {
  const rows = await db
    .select()
    .from(apiKeys)
    .where(and(eq(apiKeys.id, id), isNull(apiKeys.revokedAt)))
    .limit(1);
  return rows[0] ?? null;
}

async function touch(db: Database, id: string, now: number): Promise<void> {
  await db
    .update(apiKeys)
    .set({ lastUsedAt: now })
    .where(
      and(eq(apiKeys.id, id), or(isNull(apiKeys.lastUsedAt), lt(apiKeys.lastUsedAt, now - TOUCH_EVERY_MS))),
    );
}

/** `Authorization: Bearer pt_…`: the active key row if the presented key hashes to the stored hash. */
export async function verifyApiKey(db: Database, key: string, now: number): Promise<ApiKeyInfo | null> {
  const id = apiKeyId(key);
  if (!id) return null;
  const row = await activeKey(db, id);
  if (!row) return null;
  const stored = fromHex(row.hash);
  const presented = fromHex(await sha256Hex(key));
  if (!stored || !presented || !timingSafeEqual(stored, presented)) return null;
  await touch(db, id, now);
  return info(row);
}

/** For signed requests: the key row and its HMAC key (the stored hash), if the key is active. */
export async function signingKey(
  db: Database,
  id: string,
): Promise<{ key: ApiKeyInfo; hmacKey: Bytes } | null> {
  const row = await activeKey(db, id);
  const hmacKey = row ? fromHex(row.hash) : null;
  if (!row || !hmacKey) return null;
  return { key: info(row), hmacKey };
}

/** Record use of a key whose signature verified (at most one write a minute per key). */
export const markKeyUsed = touch;
