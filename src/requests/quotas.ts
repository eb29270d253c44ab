/**
 * Quotas per tenant (`fetch_requests.user_id`): stored bytes and active requests.
 *
 * Limits come from the API key a request is made with (`api_keys.max_bytes` / `max_active`, set by
 * `proxytorrent keys create|set`), else from QUOTA__MAX_BYTES / QUOTA__MAX_ACTIVE; 0 = unlimited.
 * Callers without a key (static tokens, JWTs, auth disabled) get the defaults. When one tenant has
 * several keys, the key used for a POST decides the limits, applied to the tenant's whole usage:
 * each key is a credential the operator handed out with its own terms, and usage is the tenant's.
 *
 * Usage:
 * - active: the tenant's requests not cancelled whose job is queued, fetching, packaging or seeding;
 * - stored bytes: `content_size` of the tenant's live ready requests, each content hash once (the
 *   store is content-addressed: the same bytes are stored once however often they are asked for);
 *   an expired request no longer counts, from the instant it expires (liveRequest).
 * Both read the partial index `fetch_requests_live_user` (user_id, job_id WHERE not cancelled),
 * then each job by its primary key.
 *
 * A new request's size is unknown at POST, so the bytes quota refuses while usage is already at or
 * over the limit: a tenant just under it may go over by one response (bounded by FETCHER__MAX_SIZE).
 * The active quota is also checked inside the INSERT that records the request (see createRequest),
 * so concurrent POSTs cannot all slip past it.
 */
import { and, desc, eq, inArray, isNull, type SQL, sql } from "drizzle-orm";
import { alias } from "drizzle-orm/sqlite-core";
import type { Database } from "../db";
import { apiKeys, fetchJobs, fetchRequests } from "../db/schema";
import { liveRequest } from "./expiry";

export type Quota = "bytes" | "active";

/** A tenant's limits; null = unlimited. */
export interface QuotaLimits {
  maxBytes: number | null;
  maxActive: number | null;
}

export interface Usage {
  activeRequests: number;
  storedBytes: number;
}

/** A POST refused by a quota: which one, the tenant's usage and the limit. */
export class QuotaExceeded extends Error {
  constructor(
    readonly quota: Quota,
    readonly used: number,
    readonly limit: number,
    /** Bytes held for requests still being fetched (part of `used`). */
    readonly reserved = 0,
  ) {
    super(
      quota === "active"
        ? `Active request quota reached: ${used} of ${limit} (QUOTA__MAX_ACTIVE or keys set --max-active)`
        : `Stored bytes quota reached: ${used} of ${limit} bytes${reserved ? ` (${used - reserved} stored, ${reserved} held for requests still being fetched)` : ""}; cancel requests to free some (QUOTA__MAX_BYTES or keys set --max-bytes)`,
    );
    this.name = "QuotaExceeded";
  }
}

const ACTIVE_STATUSES = ["queued", "fetching", "packaging", "seeding"] as const;

const r = alias(fetchRequests, "qr");
const j = alias(fetchJobs, "qj");

const liveOf = (tenant: string | null) =>
  and(tenant === null ? isNull(r.userId) : eq(r.userId, tenant), isNull(r.cancelledAt));

/** `SELECT count(*)` of the tenant's active requests, as a subquery for a condition. */
export const activeCountSql = (tenant: string | null): SQL =>
  sql`SELECT count(*) FROM ${fetchRequests} ${r} JOIN ${fetchJobs} ${j} ON ${j.id} = ${r.jobId}
    WHERE ${liveOf(tenant)} AND ${inArray(j.status, [...ACTIVE_STATUSES])}`;

const storedBytesSql = (tenant: string | null, now: number): SQL =>
  sql`SELECT coalesce(sum(size), 0) FROM (
    SELECT max(${j.contentSize}) AS size FROM ${fetchRequests} ${r} JOIN ${fetchJobs} ${j} ON ${j.id} = ${r.jobId}
    WHERE ${liveOf(tenant)} AND ${liveRequest(r, now)} AND ${eq(j.status, "ready")}
    GROUP BY ${j.contentHash})`;

/**
 * Bytes held for the tenant's requests still being fetched: each active job counts its size once
 * known, else `perJob` (FETCHER__MAX_SIZE, the most it can store). Without this, a burst of POSTs
 * made before any of them is ready would all pass the stored-bytes check.
 */
const reservedBytesSql = (tenant: string | null, perJob: number): SQL =>
  sql`SELECT coalesce(sum(size), 0) FROM (
    SELECT coalesce(max(${j.contentSize}), ${perJob}) AS size FROM ${fetchRequests} ${r} JOIN ${fetchJobs} ${j} ON ${j.id} = ${r.jobId}
    WHERE ${liveOf(tenant)} AND ${inArray(j.status, [...ACTIVE_STATUSES])}
    GROUP BY ${j.id})`;

const firstNumber = (rows: unknown[][]) => Number(rows[0]?.[0] ?? 0);

export async function activeRequests(db: Database, tenant: string | null): Promise<number> {
  return firstNumber(await db.values(activeCountSql(tenant)));
}

export async function tenantUsage(db: Database, tenant: string | null, now: number): Promise<Usage> {
  const [active, bytes] = await db.batch([
    db.values(activeCountSql(tenant)),
    db.values(storedBytesSql(tenant, now)),
  ]);
  return { activeRequests: firstNumber(active), storedBytes: firstNumber(bytes) };
}

/** Key value (null = default) and setting (0 = unlimited) → the limit (null = unlimited). */
const effective = (fromKey: number | null | undefined, fallback: number): number | null =>
  (fromKey ?? fallback) || null;

type Defaults = { quota: { maxBytes: number; maxActive: number } };

const limitsOf = (config: Defaults, row?: { maxBytes: number | null; maxActive: number | null }) => ({
  maxBytes: effective(row?.maxBytes, config.quota.maxBytes),
  maxActive: effective(row?.maxActive, config.quota.maxActive),
});

/** The limits of a POST made with this API key (read fresh: a `keys set` applies at once), or the defaults. */
export async function keyLimits(db: Database, config: Defaults, keyId?: string | null): Promise<QuotaLimits> {
  if (!keyId) return limitsOf(config);
  const [row] = await db
    .select({ maxBytes: apiKeys.maxBytes, maxActive: apiKeys.maxActive })
    .from(apiKeys)
    .where(eq(apiKeys.id, keyId))
    .limit(1);
  return limitsOf(config, row);
}

/**
 * What an admin sees for another tenant: the limits of its newest active key (what a POST with it
 * would get), or the defaults when it has none (static tokens, JWTs).
 */
export async function tenantLimits(db: Database, config: Defaults, tenant: string): Promise<QuotaLimits> {
  const [row] = await db
    .select({ maxBytes: apiKeys.maxBytes, maxActive: apiKeys.maxActive })
    .from(apiKeys)
    .where(and(eq(apiKeys.tenant, tenant), isNull(apiKeys.revokedAt)))
    .orderBy(desc(apiKeys.createdAt))
    .limit(1);
  return limitsOf(config, row);
}

/** Throws QuotaExceeded when the tenant is at a limit already. Reads only what a set limit needs. */
export async function checkQuotas(
  db: Database,
  tenant: string | null,
  limits: QuotaLimits,
  now: number,
  /** FETCHER__MAX_SIZE: what a request still being fetched may add to the stored bytes. */
  maxBodyBytes: number,
): Promise<void> {
  if (limits.maxActive !== null) {
    const active = await activeRequests(db, tenant);
    if (active >= limits.maxActive) throw new QuotaExceeded("active", active, limits.maxActive);
  }
  if (limits.maxBytes !== null) {
    const [stored, reserved] = (
      await db.batch([
        db.values(storedBytesSql(tenant, now)),
        db.values(reservedBytesSql(tenant, maxBodyBytes)),
      ])
    ).map(firstNumber) as [number, number];
    if (stored + reserved >= limits.maxBytes)
      throw new QuotaExceeded("bytes", stored + reserved, limits.maxBytes, reserved);
  }
}
