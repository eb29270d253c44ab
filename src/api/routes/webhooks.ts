/**
 * /v1/webhooks: a tenant's registered endpoints (create, list, read, update the event filter or
 * re-enable, delete, rotate the secret), each endpoint's delivery log, and redelivery of one
 * message. Endpoints and deliveries belong to the principal; another tenant's id is 404.
 * Events themselves are written by the status changes (src/webhooks/outbox.ts) and sent by nodes.
 */
import { Hono } from "hono";
import { describeRoute, validator } from "hono-openapi";
import { iso } from "../../clock";
import type { WebhookEndpoint } from "../../db/schema";
import { targetUrlRefusal } from "../../egress";
import { ownerPayload } from "../../torrents/access";
import { webhookEgressPolicy } from "../../webhooks/destination";
import {
  countEndpoints,
  createEndpoint,
  deleteEndpoint,
  getEndpoint,
  listEndpoints,
  MAX_ENDPOINTS_PER_TENANT,
  rotateSecret,
  updateEndpoint,
} from "../../webhooks/endpoints";
import {
  type DeliveryWithAttempts,
  deliveriesForEndpoint,
  getDelivery,
  redeliver,
} from "../../webhooks/outbox";
import {
  createEndpointSchema,
  deliveryListResponse,
  deliveryResponse,
  endpointListResponse,
  endpointResponse,
  endpointWithSecretResponse,
  rotateSecretSchema,
  updateEndpointSchema,
} from "../../webhooks/schemas";
import type { AppDeps, AppEnv } from "../app";
import { ApiError } from "../errors";
import { type Principal, requireScope } from "../middleware/auth";
import { jsonBody } from "../middleware/body";
import { err, fieldError, invalid, json } from "./shared";

export function endpointBody(e: WebhookEndpoint, now: number) {
  const rotating =
    e.previousSecret !== null && e.previousSecretExpiresAt !== null && e.previousSecretExpiresAt > now;
  return {
    id: e.id,
    url: e.url,
    description: e.description,
    events: e.events ?? null,
    enabled: e.disabledAt === null,
    disabled_at: iso(e.disabledAt),
    disabled_reason: e.disabledReason,
    previous_secret_expires_at: rotating ? iso(e.previousSecretExpiresAt) : null,
    created_at: iso(e.createdAt)!,
    updated_at: iso(e.updatedAt)!,
  };
}

/** Deliveries as the API shows them, with the payload their owner is sent (see `ownerPayload`). */
export async function deliveryBodies(deps: Pick<AppDeps, "db" | "config">, list: DeliveryWithAttempts[]) {
  return Promise.all(
    list.map(async (d) =>
      deliveryBody(d, await ownerPayload(deps.db, deps.config.torrent.access, d.requestId, d.payload)),
    ),
  );
}

function deliveryBody(d: DeliveryWithAttempts, sent: string) {
  let payload: unknown = sent;
  try {
    payload = JSON.parse(sent);
  } catch {
    /* shown as stored */
  }
  return {
    id: d.id,
    event: d.eventType,
    request_id: d.requestId,
    endpoint_id: d.endpointId,
    url: d.url,
    status: d.status,
    attempts: d.attempts,
    next_attempt_at: d.status === "pending" ? iso(d.nextAttemptAt) : null,
    last_status_code: d.lastStatusCode,
    last_error: d.lastError,
    delivered_at: iso(d.deliveredAt),
    created_at: iso(d.createdAt)!,
    payload,
    log: d.log.map((a) => ({
      outcome: a.outcome as "delivered" | "retry" | "failed" | "abandoned",
      status_code: a.statusCode,
      error: a.error,
      node: a.nodeName,
      started_at: iso(a.startedAt)!,
      finished_at: iso(a.finishedAt)!,
    })),
  };
}

export function webhookRoutes(deps: AppDeps) {
  const { db, clock, config } = deps;
  const app = new Hono<AppEnv>();
  const policy = webhookEgressPolicy(config);

  const owns = (tenant: string | null, who: Principal) => who.admin || tenant === who.id;

  async function loadEndpoint(id: string, who: Principal): Promise<WebhookEndpoint> {
    const e = await getEndpoint(db, id);
    if (!e || !owns(e.tenant, who)) throw new ApiError(404, `Webhook endpoint ${id} not found`);
    return e;
  }

  function checkUrl(url: string) {
    const refusal = targetUrlRefusal(url, policy);
    if (refusal) throw fieldError("url", refusal, url);
  }

  app.post(
    "/",
    describeRoute({
      summary: "Register a webhook endpoint",
      description:
        "Events of your requests (request.ready, request.failed, request.cancelled, request.expired) are POSTed to the URL, signed per Standard Webhooks with the returned secret. Private, loopback and link-local addresses are refused unless the service allows private networks.",
      responses: {
        201: {
          description: "Created (the secret is shown only here)",
          content: json(endpointWithSecretResponse),
        },
        401: err("Missing or invalid authentication"),
        422: err("Invalid input, a refused destination, or too many endpoints"),
      },
    }),
    requireScope("requests:create"),
    jsonBody,
    validator("json", createEndpointSchema, invalid),
    async (c) => {
      const input = c.req.valid("json");
      checkUrl(input.url);
      const tenant = c.get("principal").id;
      if ((await countEndpoints(db, tenant)) >= MAX_ENDPOINTS_PER_TENANT)
        throw new ApiError(422, `At most ${MAX_ENDPOINTS_PER_TENANT} webhook endpoints per tenant`);
      const e = await createEndpoint(db, clock, {
        tenant,
        url: input.url,
        description: input.description,
        events: input.events,
        secret: input.secret,
      });
      return c.json({ ...endpointBody(e, clock.now()), secret: e.secret }, 201);
    },
  );

  app.get(
    "/",
    describeRoute({
      summary: "List webhook endpoints",
      responses: {
        200: { description: "Your endpoints (all tenants' for admins)", content: json(endpointListResponse) },
      },
    }),
    requireScope("requests:read"),
    async (c) => {
      const who = c.get("principal");
      const list = await listEndpoints(db, who.admin ? undefined : who.id);
      const now = clock.now();
      return c.json({ endpoints: list.map((e) => endpointBody(e, now)) });
    },
  );

  // Before "/:id…" so that "deliveries" is never taken for an endpoint id.
  app.get(
    "/deliveries/:id",
    describeRoute({
      summary: "One message and its attempts",
      responses: {
        200: { description: "The delivery", content: json(deliveryResponse) },
        404: err("No such delivery"),
      },
    }),
    requireScope("requests:read"),
    async (c) => {
      const id = c.req.param("id");
      const d = await getDelivery(db, id);
      if (!d || !owns(d.tenant, c.get("principal")))
        throw new ApiError(404, `Webhook delivery ${id} not found`);
      return c.json((await deliveryBodies(deps, [d]))[0]);
    },
  );

  app.post(
    "/deliveries/:id/redeliver",
    describeRoute({
      summary: "Send a message again",
      description:
        "Same webhook-id and body (a fresh signature and timestamp), with a new round of retries. Works for delivered and failed messages; a pending one is made due now.",
      responses: {
        202: { description: "Scheduled", content: json(deliveryResponse) },
        404: err("No such delivery"),
        409: err("Being sent right now, or its endpoint is disabled"),
      },
    }),
    requireScope("requests:create"),
    async (c) => {
      const id = c.req.param("id");
      const d = await getDelivery(db, id);
      if (!d || !owns(d.tenant, c.get("principal")))
        throw new ApiError(404, `Webhook delivery ${id} not found`);
      const res = await redeliver(db, clock, id);
      if (res === "busy") throw new ApiError(409, "This message is being sent right now");
      if (res === "endpoint_disabled")
        throw new ApiError(
          409,
          "The endpoint is disabled or deleted; re-enable it first (PATCH enabled=true)",
        );
      if (res === "not_found") throw new ApiError(404, `Webhook delivery ${id} not found`);
      return c.json((await deliveryBodies(deps, [(await getDelivery(db, id))!]))[0], 202);
    },
  );

  app.get(
    "/:id",
    describeRoute({
      summary: "One webhook endpoint",
      responses: {
        200: { description: "The endpoint", content: json(endpointResponse) },
        404: err("No such endpoint"),
      },
    }),
    requireScope("requests:read"),
    async (c) => c.json(endpointBody(await loadEndpoint(c.req.param("id"), c.get("principal")), clock.now())),
  );

  app.patch(
    "/:id",
    describeRoute({
      summary: "Change an endpoint",
      description:
        "URL, description, event filter (null = every event), or enabled (true re-enables one disabled by 410 Gone).",
      responses: {
        200: { description: "Updated", content: json(endpointResponse) },
        404: err("No such endpoint"),
        422: err("Invalid input or a refused destination"),
      },
    }),
    requireScope("requests:create"),
    jsonBody,
    validator("json", updateEndpointSchema, invalid),
    async (c) => {
      const id = c.req.param("id");
      await loadEndpoint(id, c.get("principal"));
      const input = c.req.valid("json");
      if (input.url !== undefined) checkUrl(input.url);
      const e = await updateEndpoint(db, clock, id, input);
      if (!e) throw new ApiError(404, `Webhook endpoint ${id} not found`);
      return c.json(endpointBody(e, clock.now()));
    },
  );

  app.delete(
    "/:id",
    describeRoute({
      summary: "Delete an endpoint",
      description:
        "Messages not yet delivered to it are failed; its delivery log stays readable through the requests.",
      responses: { 204: { description: "Deleted" }, 404: err("No such endpoint") },
    }),
    requireScope("requests:create"),
    async (c) => {
      const id = c.req.param("id");
      await loadEndpoint(id, c.get("principal"));
      await deleteEndpoint(db, clock, id);
      return c.body(null, 204);
    },
  );

  app.post(
    "/:id/rotate-secret",
    describeRoute({
      summary: "Rotate the signing secret",
      description:
        "Returns the new secret. Until previous_secret_expires_at every message carries two signatures (new and old, space-separated), so receivers can switch without rejecting a message.",
      responses: {
        200: { description: "The endpoint with its new secret", content: json(endpointWithSecretResponse) },
        404: err("No such endpoint"),
      },
    }),
    requireScope("requests:create"),
    jsonBody,
    validator("json", rotateSecretSchema, invalid),
    async (c) => {
      const id = c.req.param("id");
      await loadEndpoint(id, c.get("principal"));
      const input = c.req.valid("json");
      const e = await rotateSecret(db, clock, id, {
        graceSeconds: input.previous_secret_expires_in,
        secret: input.secret,
      });
      if (!e) throw new ApiError(404, `Webhook endpoint ${id} not found`);
      return c.json({ ...endpointBody(e, clock.now()), secret: e.secret });
    },
  );

  app.get(
    "/:id/deliveries",
    describeRoute({
      summary: "An endpoint's delivery log",
      description: "Newest first, with every attempt (status code, error, times).",
      responses: {
        200: { description: "Deliveries", content: json(deliveryListResponse) },
        404: err("No such endpoint"),
      },
    }),
    requireScope("requests:read"),
    async (c) => {
      const id = c.req.param("id");
      await loadEndpoint(id, c.get("principal"));
      const raw = Number(c.req.query("limit") ?? 50);
      const limit = Number.isInteger(raw) ? Math.min(200, Math.max(1, raw)) : 50;
      return c.json({ deliveries: await deliveryBodies(deps, await deliveriesForEndpoint(db, id, limit)) });
    },
  );

  return app;
}
