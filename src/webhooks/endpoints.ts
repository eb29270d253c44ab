/**
 * Registered webhook endpoints (`/v1/webhooks`): per tenant, each with its own `whsec_` secret
 * and an optional event filter. Rotating keeps the old secret signing alongside the new one for
 * a grace period, so receivers can switch without rejecting a message.
 */
import { and, count, eq, isNull, sql } from "drizzle-orm";
import type { SQLiteUpdateSetSource } from "drizzle-orm/sqlite-core";
import { randomHex } from "../auth/crypto";
import type { Clock } from "../clock";
import type { Database } from "../db";
import {
  type WebhookEndpoint,
  type WebhookEventType,
  webhookDeliveries,
  webhookEndpoints,
} from "../db/schema";
import { batchLast } from "../db/sql";
import { generateSecret } from "./signing";

/** Endpoints one tenant may register: each event fans out to all of them. */
export const MAX_ENDPOINTS_PER_TENANT = 20;

export function newEndpointId(): string {
  return `ep_${randomHex(16)}`;
}

export async function countEndpoints(db: Database, tenant: string | null): Promise<number> {
  const rows = await db
    .select({ n: count() })
    .from(webhookEndpoints)
    .where(tenant === null ? isNull(webhookEndpoints.tenant) : eq(webhookEndpoints.tenant, tenant));
  return Number(rows[0]?.n ?? 0);
}

export async function createEndpoint(
  db: Database,
  clock: Clock,
  input: {
    tenant: string | null;
    url: string;
    description: string | null;
    events: WebhookEventType[] | null;
    secret?: string | null;
  },
): Promise<WebhookEndpoint> {
  const now = clock.now();
  const rows = await db
    .insert(webhookEndpoints)
    .values({
      id: newEndpointId(),
      tenant: input.tenant,
      url: input.url,
      description: input.description,
      events: input.events,
      secret: input.secret ?? generateSecret(),
      createdAt: now,
      updatedAt: now,
    })
    .returning();
  return rows[0]!;
}

/** Every endpoint of a tenant (or of all tenants when `tenant` is undefined), oldest first. */
export async function listEndpoints(
  db: Database,
  tenant: string | null | undefined,
): Promise<WebhookEndpoint[]> {
  const q = db.select().from(webhookEndpoints);
  const filtered =
    tenant === undefined
      ? q
      : q.where(tenant === null ? isNull(webhookEndpoints.tenant) : eq(webhookEndpoints.tenant, tenant));
  return filtered.orderBy(webhookEndpoints.createdAt, webhookEndpoints.id);
}

export async function getEndpoint(db: Database, id: string): Promise<WebhookEndpoint | null> {
  const rows = await db.select().from(webhookEndpoints).where(eq(webhookEndpoints.id, id)).limit(1);
  return rows[0] ?? null;
}

/** Change URL, description, filter, or enable/disable. Re-enabling clears the disabled reason. */
export async function updateEndpoint(
  db: Database,
  clock: Clock,
  id: string,
  patch: {
    url?: string;
    description?: string | null;
    events?: WebhookEventType[] | null;
    enabled?: boolean;
  },
): Promise<WebhookEndpoint | null> {
  const now = clock.now();
  const set: SQLiteUpdateSetSource<typeof webhookEndpoints> = { updatedAt: now };
  if (patch.url !== undefined) set.url = patch.url;
  if (patch.description !== undefined) set.description = patch.description;
  if (patch.events !== undefined) set.events = patch.events;
  if (patch.enabled === true) {
    set.disabledAt = null;
    set.disabledReason = null;
  } else if (patch.enabled === false) {
    set.disabledAt = sql`coalesce(${webhookEndpoints.disabledAt}, ${now})`;
    set.disabledReason = sql`coalesce(${webhookEndpoints.disabledReason}, 'Disabled by its owner')`;
  }
  const rows = await db.update(webhookEndpoints).set(set).where(eq(webhookEndpoints.id, id)).returning();
  return rows[0] ?? null;
}

/**
 * A new secret now; the old one keeps signing (a second signature) for `graceSeconds`, 0 = stop
 * at once. Returns the endpoint with its new secret.
 */
export async function rotateSecret(
  db: Database,
  clock: Clock,
  id: string,
  opts: { graceSeconds: number; secret?: string | null },
): Promise<WebhookEndpoint | null> {
  const now = clock.now();
  const keep = opts.graceSeconds > 0;
  const rows = await db
    .update(webhookEndpoints)
    .set({
      previousSecret: keep ? sql`${webhookEndpoints.secret}` : null,
      previousSecretExpiresAt: keep ? now + opts.graceSeconds * 1000 : null,
      secret: opts.secret ?? generateSecret(),
      updatedAt: now,
    })
    .where(eq(webhookEndpoints.id, id))
    .returning();
  return rows[0] ?? null;
}

/** Delete an endpoint; its messages not yet delivered are failed (their log stays readable). */
export async function deleteEndpoint(db: Database, clock: Clock, id: string): Promise<boolean> {
  const now = clock.now();
  const deleted = await batchLast(
    db,
    [
      db
        .update(webhookDeliveries)
        .set({ status: "failed", lastError: "Endpoint deleted", updatedAt: now })
        .where(and(eq(webhookDeliveries.endpointId, id), eq(webhookDeliveries.status, "pending"))),
    ],
    db.delete(webhookEndpoints).where(eq(webhookEndpoints.id, id)),
  );
  return deleted.rowsAffected === 1;
}

/** The secrets that sign a message to this endpoint now: current, plus the previous during a rotation. */
export function signingSecrets(
  e: Pick<WebhookEndpoint, "secret" | "previousSecret" | "previousSecretExpiresAt">,
  now: number,
): string[] {
  const out = [e.secret];
  if (e.previousSecret && e.previousSecretExpiresAt !== null && e.previousSecretExpiresAt > now)
    out.push(e.previousSecret);
  return out;
}
