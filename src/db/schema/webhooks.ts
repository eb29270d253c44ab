/**
 * Webhooks: where events go, and the outbox nodes deliver from.
 *
 * - `webhook_endpoints`: URLs a tenant registered (`/v1/webhooks`), each with its own signing secret
 *   and an optional event filter. `previous_secret` is still used to sign (a second signature)
 *   until `previous_secret_expires_at`, so receivers can roll over without losing messages.
 * - `request_callbacks`: the `callback_url` given with one request (signed with WEBHOOK__SECRET).
 * - `webhook_deliveries`: the outbox. One row per (event, destination), written in the same
 *   transaction as the status change it reports. Its id is the `webhook-id` of every attempt.
 *   Nodes claim rows with a lease and a fresh token like jobs, so two nodes never send the same
 *   attempt at once, and a node that dies mid-attempt loses nothing: the lease runs out and the
 *   row is claimed again.
 * - `webhook_attempts`: the delivery log, one row per attempt (status code, error, times).
 *
 * Times are integer milliseconds since the epoch (UTC), as in the other tables.
 */
import { index, integer, sqliteTable, text } from "drizzle-orm/sqlite-core";
import { fetchRequests } from "./jobs";

export const WEBHOOK_EVENT_TYPES = [
  "request.ready",
  "request.failed",
  "request.cancelled",
  "request.expired",
] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];

export const DELIVERY_STATUSES = ["pending", "delivering", "delivered", "failed"] as const;
export type DeliveryStatus = (typeof DELIVERY_STATUSES)[number];

export const webhookEndpoints = sqliteTable(
  "webhook_endpoints",
  {
    /** `ep_<32 hex>` */
    id: text("id").primaryKey(),
    /** Principal id of the owner; null when authentication is disabled. */
    tenant: text("tenant"),
    url: text("url").notNull(),
    description: text("description"),
    /** JSON array of event types to send; null means every event. */
    events: text("events", { mode: "json" }).$type<WebhookEventType[]>(),
    secret: text("secret").notNull(),
    previousSecret: text("previous_secret"),
    previousSecretExpiresAt: integer("previous_secret_expires_at"),
    /** Set when the endpoint stops receiving (410 Gone, or by its owner); cleared to re-enable. */
    disabledAt: integer("disabled_at"),
    disabledReason: text("disabled_reason"),
    createdAt: integer("created_at").notNull(),
    updatedAt: integer("updated_at").notNull(),
  },
  (t) => [index("webhook_endpoints_tenant").on(t.tenant)],
);

export const requestCallbacks = sqliteTable("request_callbacks", {
  requestId: text("request_id")
    .primaryKey()
    .references(() => fetchRequests.id),
  url: text("url").notNull(),
  createdAt: integer("created_at").notNull(),
});

export const webhookDeliveries = sqliteTable(
  "webhook_deliveries",
  {
    /** `msg_<32 hex>`: the `webhook-id` header, the same on every attempt. */
    id: text("id").primaryKey(),
    eventType: text("event_type").$type<WebhookEventType>().notNull(),
    requestId: text("request_id").notNull(),
    /** Owner of the request (who may read this delivery's log). */
    tenant: text("tenant"),
    /** Null for the request's own `callback_url`. Not a foreign key: the log outlives the endpoint. */
    endpointId: text("endpoint_id"),
    url: text("url").notNull(),
    /** The exact JSON body sent, fixed when the event happened. */
    payload: text("payload").notNull(),
    /** X-Request-Id of the API request that created the request, sent along for tracing. */
    traceId: text("trace_id"),
    status: text("status").$type<DeliveryStatus>().notNull(),
    /** Attempts in the current round (reset by a redelivery); picks the next retry delay. */
    attempts: integer("attempts").notNull().default(0),
    nextAttemptAt: integer("next_attempt_at").notNull(),
    nodeName: text("node_name"),
    leaseToken: text("lease_token"),
    leaseExpiresAt: integer("lease_expires_at"),
    lastStatusCode: integer("last_status_code"),
    lastError: text("last_error"),
    lastAttemptAt: integer("last_attempt_at"),
    deliveredAt: integer("delivered_at"),
    createdAt: integer("created_at").notNull(),
    updatedAt: integer("updated_at").notNull(),
  },
  (t) => [
    index("webhook_deliveries_claim").on(t.status, t.nextAttemptAt),
    index("webhook_deliveries_lease").on(t.status, t.leaseExpiresAt),
    index("webhook_deliveries_request").on(t.requestId, t.createdAt),
    index("webhook_deliveries_endpoint").on(t.endpointId, t.createdAt),
  ],
);

export const webhookAttempts = sqliteTable(
  "webhook_attempts",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    deliveryId: text("delivery_id")
      .notNull()
      .references(() => webhookDeliveries.id),
    nodeName: text("node_name"),
    /** `delivered`, `retry` (will be tried again), `failed` (given up), `abandoned` (the node stopped). */
    outcome: text("outcome").notNull(),
    statusCode: integer("status_code"),
    error: text("error"),
    startedAt: integer("started_at").notNull(),
    finishedAt: integer("finished_at").notNull(),
  },
  (t) => [index("webhook_attempts_delivery").on(t.deliveryId, t.id)],
);

export type WebhookEndpoint = typeof webhookEndpoints.$inferSelect;
export type WebhookDelivery = typeof webhookDeliveries.$inferSelect;
export type WebhookAttempt = typeof webhookAttempts.$inferSelect;
