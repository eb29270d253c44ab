/**
 * Wire schemas of the webhook API (`/v1/webhooks`, `callback_url`, the delivery log). The same
 * valibot schemas validate input and generate the OpenAPI document.
 */
import * as v from "valibot";
import { DELIVERY_STATUSES, WEBHOOK_EVENT_TYPES } from "../db/schema";
import { httpUrlField } from "../egress/url-field";
import { decodeSecret } from "./signing";

/** An http(s) URL events are POSTed to. Egress rules are checked by the route (they need the config). */
export const webhookUrl = (what: string) =>
  httpUrlField({
    messages: {
      type: `${what} must be a string`,
      tooLong: `${what} is longer than 2083 characters`,
      invalid: `${what} should be a valid URL`,
      scheme: `${what} scheme should be 'http' or 'https'`,
    },
    problem: (u) => (u.username || u.password ? `${what} must not contain a user name or password` : null),
    dropFragment: true,
  });

/** `callback_url` of POST /v1/requests. */
export const callbackUrlField = v.pipe(
  v.optional(v.nullable(webhookUrl("callback_url")), null),
  v.description(
    "Where to POST this request's events (request.ready, request.failed, request.cancelled, request.expired), signed per Standard Webhooks with WEBHOOK__SECRET.",
  ),
);

const eventList = v.pipe(
  v.array(v.picklist(WEBHOOK_EVENT_TYPES, `events must be among ${WEBHOOK_EVENT_TYPES.join(", ")}`)),
  v.minLength(1, "events must name at least one event (or be null for all)"),
  v.maxLength(20, "events lists at most 20 entries"),
  v.transform((list) => [...new Set(list)]),
);

const secretField = v.pipe(
  v.string("secret must be a string"),
  v.maxLength(200, "secret is longer than 200 characters"),
  v.check(
    (s) => !("problem" in decodeSecret(s)),
    "secret must be whsec_ followed by base64 of 24 to 64 bytes",
  ),
);

export const createEndpointSchema = v.object({
  url: v.pipe(webhookUrl("url"), v.description("The receiver (http or https).")),
  events: v.pipe(
    v.optional(v.nullable(eventList), null),
    v.description("Event types to send; null or absent = every event."),
  ),
  description: v.pipe(
    v.optional(
      v.nullable(v.pipe(v.string(), v.maxLength(500, "description is longer than 500 characters"))),
      null,
    ),
    v.description("A note for yourself."),
  ),
  secret: v.pipe(
    v.optional(v.nullable(secretField), null),
    v.description("Your own whsec_ secret; by default one is generated (and returned once)."),
  ),
});

export const updateEndpointSchema = v.object({
  url: v.optional(webhookUrl("url")),
  events: v.optional(v.nullable(eventList)),
  description: v.optional(
    v.nullable(v.pipe(v.string(), v.maxLength(500, "description is longer than 500 characters"))),
  ),
  enabled: v.pipe(
    v.optional(v.boolean("enabled must be true or false")),
    v.description("false pauses deliveries; true re-enables an endpoint (also one disabled by 410 Gone)."),
  ),
});

export const rotateSecretSchema = v.object({
  previous_secret_expires_in: v.pipe(
    v.optional(
      v.pipe(
        v.number("previous_secret_expires_in must be a number"),
        v.integer("previous_secret_expires_in must be a whole number"),
        v.minValue(0, "previous_secret_expires_in must be at least 0"),
        v.maxValue(7 * 86400, "previous_secret_expires_in must be at most 604800"),
      ),
      86400,
    ),
    v.description(
      "Seconds the old secret keeps signing next to the new one (0 = stop now). Default one day.",
    ),
  ),
  secret: v.pipe(
    v.optional(v.nullable(secretField), null),
    v.description("The new secret; default generated."),
  ),
});

const timestamp = v.pipe(v.string(), v.description("ISO 8601, UTC"));

export const endpointResponse = v.object({
  id: v.string(),
  url: v.string(),
  description: v.nullable(v.string()),
  events: v.pipe(v.nullable(v.array(v.picklist(WEBHOOK_EVENT_TYPES))), v.description("null = every event")),
  enabled: v.boolean(),
  disabled_at: v.nullable(timestamp),
  disabled_reason: v.nullable(v.string()),
  previous_secret_expires_at: v.pipe(
    v.nullable(timestamp),
    v.description("Until then messages carry a second signature made with the previous secret."),
  ),
  created_at: timestamp,
  updated_at: timestamp,
});

export const endpointWithSecretResponse = v.object({
  ...endpointResponse.entries,
  secret: v.pipe(v.string(), v.description("whsec_…: verify signatures with it. Shown only here.")),
});

export const endpointListResponse = v.object({ endpoints: v.array(endpointResponse) });

export const attemptResponse = v.object({
  outcome: v.pipe(
    v.picklist(["delivered", "retry", "failed", "abandoned"]),
    v.description("abandoned: the node sending it stopped mid-attempt; the message was sent again."),
  ),
  status_code: v.nullable(v.number()),
  error: v.nullable(v.string()),
  node: v.nullable(v.string()),
  started_at: timestamp,
  finished_at: timestamp,
});

export const deliveryResponse = v.object({
  id: v.pipe(v.string(), v.description("The webhook-id header, the same on every attempt.")),
  event: v.picklist(WEBHOOK_EVENT_TYPES),
  request_id: v.string(),
  endpoint_id: v.pipe(v.nullable(v.string()), v.description("null for the request's callback_url")),
  url: v.string(),
  status: v.picklist(DELIVERY_STATUSES),
  attempts: v.pipe(
    v.number(),
    v.description("Attempts in the current round (a redelivery starts a new one)."),
  ),
  next_attempt_at: v.nullable(timestamp),
  last_status_code: v.nullable(v.number()),
  last_error: v.nullable(v.string()),
  delivered_at: v.nullable(timestamp),
  created_at: timestamp,
  payload: v.pipe(v.unknown(), v.description("The JSON body sent.")),
  log: v.array(attemptResponse),
});

export const deliveryListResponse = v.object({ deliveries: v.array(deliveryResponse) });
