/**
 * API keys in the database: create (returns the key once), list, revoke, and the lookups the auth
 * middleware makes. Only SHA-256 of a key is stored; see key-format.ts for the key's shape.
 */
import { and, count, desc, eq, isNull, lt, or, sql } from "drizzle-orm";
import type { Database } from "../db";
import { type ApiKeyRow, apiKeys, fetchRequests } from "../db/schema";
import { cancelStatements } from "../requests/service";
import {
  type Bytes,
  fromBase64,
  fromHex,
  sha256,
  sha256Hex,
  timingSafeEqual,
  toBase64,
  utf8,
} from "./crypto";
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
  /** Quotas of requests made with this key (src/requests/quotas.ts); null = the QUOTA__* default, 0 = unlimited. */
  maxBytes: number | null;
  maxActive: number | null;
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
  maxBytes: r.maxBytes,
  maxActive: r.maxActive,
});

export const defaultTenant = (keyId: string) => `key:${keyId}`;

export async function createApiKey(
  db: Database,
  opts: {
    name: string;
    scopes?: readonly Scope[];
    tenant?: string;
    now: number;
    /** SECURITY__KEY_ENCRYPTION_SECRET: store the hash sealed with it. */
    secret?: string;
    /** Quotas; null or absent = the QUOTA__* default, 0 = unlimited. */
    maxBytes?: number | null;
    maxActive?: number | null;
  },
): Promise<ApiKeyInfo & { key: string }> {
  const { id, key } = generateApiKey();
  const hash = await sha256(key);
  const row: ApiKeyRow = {
    id,
    name: opts.name,
    hash: opts.secret ? await sealHash(opts.secret, id, hash) : await sha256Hex(key),
    scopes: [...(opts.scopes?.length ? opts.scopes : DEFAULT_SCOPES)],
    tenant: opts.tenant ?? defaultTenant(id),
    createdAt: opts.now,
    lastUsedAt: null,
    revokedAt: null,
    maxBytes: opts.maxBytes ?? null,
    maxActive: opts.maxActive ?? null,
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

/**
 * Revoke by id (or by the whole key). "missing" if no such key; revoking twice is harmless. In the
 * same transaction every live request the key created is cancelled exactly as DELETE cancels one
 * (`request.cancelled` webhooks, its job cancelled when no other live request needs it): a leaked
 * key's torrents stop with it. A request an API process accepts with the key afterwards (it trusts a
 * verified key for SECURITY__API_KEY_CACHE_SECONDS) is cancelled as it is created (createRequest).
 */
export async function revokeApiKey(
  db: Database,
  idOrKey: string,
  now: number,
): Promise<{ outcome: "revoked" | "already revoked" | "missing"; cancelledRequests: number }> {
  const id = apiKeyId(idOrKey) ?? idOrKey;
  const cancel = cancelStatements(db, now, (r) => eq(r.apiKeyId, id));
  const [rows, [live]] = await db.batch([
    db
      .update(apiKeys)
      .set({ revokedAt: sql`coalesce(${apiKeys.revokedAt}, ${now})` })
      .where(eq(apiKeys.id, id))
      .returning({ revokedAt: apiKeys.revokedAt }),
    db
      .select({ n: count() })
      .from(fetchRequests)
      .where(and(eq(fetchRequests.apiKeyId, id), isNull(fetchRequests.cancelledAt))),
    ...cancel.outbox,
    cancel.requests,
    cancel.jobs,
  ]);
  const cancelledRequests = live?.n ?? 0;
  if (!rows[0]) return { outcome: "missing", cancelledRequests };
  return { outcome: rows[0].revokedAt === now ? "revoked" : "already revoked", cancelledRequests };
}

/**
 * Change a key's quotas (by id or the whole key): a number sets it (0 = unlimited), null goes back
 * to the QUOTA__* default, absent leaves it. Applies to the next POST made with the key.
 */
export async function setApiKeyQuotas(
  db: Database,
  idOrKey: string,
  quotas: { maxBytes?: number | null; maxActive?: number | null },
): Promise<ApiKeyInfo | null> {
  const id = apiKeyId(idOrKey) ?? idOrKey;
  const set = Object.fromEntries(Object.entries(quotas).filter(([, v]) => v !== undefined));
  const rows = Object.keys(set).length
    ? await db.update(apiKeys).set(set).where(eq(apiKeys.id, id)).returning()
    : await db.select().from(apiKeys).where(eq(apiKeys.id, id));
  return rows[0] ? info(rows[0]) : null;
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
export async function verifyApiKey(
  db: Database,
  key: string,
  now: number,
  secret?: string,
): Promise<ApiKeyInfo | null> {
  const id = apiKeyId(key);
  if (!id) return null;
  const row = await activeKey(db, id);
  if (!row) return null;
  const stored = await storedHash(row, secret);
  const presented = fromHex(await sha256Hex(key));
  if (!stored || !presented || !timingSafeEqual(stored, presented)) return null;
  await touch(db, id, now);
  return info(row);
}

/** For signed requests: the key row and its HMAC key (the stored hash), if the key is active. */
export async function signingKey(
  db: Database,
  id: string,
  secret?: string,
): Promise<{ key: ApiKeyInfo; hmacKey: Bytes } | null> {
  const row = await activeKey(db, id);
  const hmacKey = row ? await storedHash(row, secret) : null;
  if (!row || !hmacKey) return null;
  return { key: info(row), hmacKey };
}

/** Record use of a key whose signature verified (at most one write a minute per key). */
export const markKeyUsed = touch;

// ---- sealed hashes (SECURITY__KEY_ENCRYPTION_SECRET) --------------------------------------------
//
// The stored SHA-256 of a key is the HMAC key of its signed requests, so whoever reads the database
// could sign. With a server-side secret, the hash is stored AES-256-GCM-encrypted under a key
// derived from that secret, with the key id as associated data (a sealed value copied to another
// row does not open). The database alone then neither signs nor authenticates.

const SEALED = "aes256gcm:";
const sealKeys = new Map<string, Promise<CryptoKey>>();

function sealKey(secret: string): Promise<CryptoKey> {
  let k = sealKeys.get(secret);
  if (!k) {
    k = sha256(`proxytorrent api-key-hash sealing v1\0${secret}`).then((raw) =>
      crypto.subtle.importKey("raw", raw as BufferSource, "AES-GCM", false, ["encrypt", "decrypt"]),
    );
    sealKeys.set(secret, k);
  }
  return k;
}

export const isSealed = (stored: string) => stored.startsWith(SEALED);

async function sealHash(secret: string, id: string, hash: Bytes): Promise<string> {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const ct = new Uint8Array(
    await crypto.subtle.encrypt(
      { name: "AES-GCM", iv, additionalData: utf8(id) as BufferSource },
      await sealKey(secret),
      hash as BufferSource,
    ),
  );
  return `${SEALED}${toBase64(iv)}:${toBase64(ct)}`;
}

/** The key's SHA-256 from its row: hex as stored, or opened with the secret (null if it cannot be). */
async function storedHash(row: ApiKeyRow, secret: string | undefined): Promise<Bytes | null> {
  if (!isSealed(row.hash)) return fromHex(row.hash);
  if (!secret) return null;
  const [iv, ct] = row.hash.slice(SEALED.length).split(":").map(fromBase64);
  if (!iv || !ct) return null;
  try {
    return new Uint8Array(
      await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: iv as BufferSource, additionalData: utf8(row.id) as BufferSource },
        await sealKey(secret),
        ct as BufferSource,
      ),
    );
  } catch {
    return null; // another secret, or a tampered value
  }
}

/**
 * Seal every hash stored in clear (keys made before the secret was set, or by a process without
 * it); report the sealed ones that this secret (or its absence) cannot open.
 */
export async function sealStoredHashes(
  db: Database,
  secret: string | undefined,
): Promise<{ sealed: number; unreadable: number }> {
  const rows = await db.select().from(apiKeys).where(isNull(apiKeys.revokedAt));
  let sealed = 0;
  let unreadable = 0;
  for (const row of rows) {
    if (isSealed(row.hash)) {
      if (!(await storedHash(row, secret))) unreadable++;
      continue;
    }
    const hash = fromHex(row.hash);
    if (!secret || !hash) continue;
    // Only if still the clear value read above (another process may be sealing it too).
    await db
      .update(apiKeys)
      .set({ hash: await sealHash(secret, row.id, hash) })
      .where(and(eq(apiKeys.id, row.id), eq(apiKeys.hash, row.hash)));
    sealed++;
  }
  return { sealed, unreadable };
}
