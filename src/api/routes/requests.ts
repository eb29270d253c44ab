/**
 * /v1/requests: create, status, .torrent, magnet, cancel. Wire-compatible with the original
 * ProxyTorrent (status codes, field names, `{"detail": …}` errors), plus ownership: a caller sees
 * only its own requests (another caller's id is 404, as if it did not exist). The history (list
 * with filters and cursor paging, and export) shows each request as the status route does.
 */
import { Hono } from "hono";
import { describeRoute, resolver, validator } from "hono-openapi";
import * as v from "valibot";
import { iso } from "../../clock";
import { createEgressPolicy, targetUrlRefusal } from "../../egress";
import { EXPORT_BATCH, EXPORT_CONTENT_TYPES, exportFilename, exportStream } from "../../requests/export";
import { isDroppedHeader } from "../../requests/headers";
import { checkQuotas, keyLimits, QuotaExceeded } from "../../requests/quotas";
import {
  cancelRequest,
  createRequest,
  getRequest,
  getTorrent,
  listRequests,
  type RequestFilter,
  type RequestView,
  requiredEgress,
} from "../../requests/service";
import { requestPasskey } from "../../torrents/access";
import { passkeyedMagnet, passkeyedTorrent } from "../../torrents/links";
import { webhookEgressPolicy } from "../../webhooks/destination";
import { deliveriesForRequest } from "../../webhooks/outbox";
import { deliveryListResponse } from "../../webhooks/schemas";
import type { AppDeps, AppEnv } from "../app";
import { ApiError, notFound } from "../errors";
import { type Principal, requireScope } from "../middleware/auth";
import { jsonBody } from "../middleware/body";
import { rateLimitCreates } from "../middleware/rate-limit";
import {
  createRequestResponse,
  createRequestSchema,
  encodeCursor,
  exportRequestsQuery,
  listRequestsQuery,
  magnetResponse,
  requestListResponse,
  requestStatusResponse,
} from "../schemas";
import { err, fieldError, invalid, json } from "./shared";
import { deliveryBodies } from "./webhooks";

/** What GET /v1/requests/{id} shows, and so each item of the list and each row of the export. */
function statusBody(r: RequestView) {
  return {
    id: r.id,
    status: r.status,
    url: withoutUserinfo(r.url),
    method: r.method,
    created_at: iso(r.createdAt)!,
    updated_at: iso(r.updatedAt)!,
    completed_at: iso(r.completedAt),
    infohash: r.infohash,
    content_hash: r.contentHash,
    content_size: r.contentSize,
    content_type: r.contentType,
    error_message: r.errorMessage,
    error_code: r.errorCode,
    progress: r.progress,
    expires_at: iso(r.expiresAt),
    verified_digests: r.verifiedDigests,
    scan: r.scan && { verdict: r.scan.verdict, engine: r.scan.engine, scanned_at: iso(r.scan.scannedAt) },
  };
}

/** The export's CSV columns: the status body's fields, in its order. */
const STATUS_COLUMNS = Object.keys(requestStatusResponse.entries) as (keyof ReturnType<typeof statusBody>)[];

/**
 * A URL without `user:pass@`. New requests with user info are refused (422), but rows written by
 * 0.2, which accepted them, must not show a password either.
 */
export function withoutUserinfo(raw: string): string {
  if (!raw.includes("@")) return raw;
  try {
    const u = new URL(raw);
    u.username = "";
    u.password = "";
    return u.href;
  } catch {
    return raw;
  }
}

export function requestRoutes(deps: AppDeps) {
  const { db, clock, config } = deps;
  const app = new Hono<AppEnv>();

  const visible = (r: RequestView | null, who: Principal): r is RequestView =>
    r !== null && (who.admin || r.userId === who.id);

  async function load(id: string, who: Principal): Promise<RequestView> {
    const r = await getRequest(db, id, clock.now());
    if (!visible(r, who)) throw notFound(id);
    return r;
  }

  /**
   * What the request's owner gets: with TORRENT__ACCESS=passkey the stored .torrent or magnet with
   * the node's tracker and web seed URLs carrying this request's passkey; with `open`, as stored.
   */
  async function forOwner<T>(r: RequestView, withPasskey: (passkey: string) => T, open: T): Promise<T> {
    if (config.torrent.access === "open") return open;
    return withPasskey(await requestPasskey(db, r.id));
  }

  function requireReady(r: RequestView) {
    // 410, not 400: an expired request will never be ready again (its content is let go).
    if (r.status === "expired")
      throw new ApiError(
        410,
        `Request expired at ${iso(r.expiresAt)}: its retention ended and its content is no longer stored or seeded`,
      );
    if (r.status !== "ready") throw new ApiError(400, `Request not ready (status: ${r.status})`);
  }

  // url: what the fetcher would refuse before any lookup (user info, IP literals and names such
  // as `localhost` that this service's settings never let it fetch) is a 422 now, not an error
  // after a 201. Names that need resolving are judged at fetch time, on the node. In distributed
  // mode this uses the API's own EGRESS__* / FETCHER__URL_* settings: keep them like the nodes'.
  const fetchPolicy = createEgressPolicy({
    allowPrivateNetworks: config.egress.allowPrivateNetworks,
    urlAllowlist: config.fetcher.urlAllowlist,
    urlDenylist: config.fetcher.urlDenylist,
  });
  function checkTargetUrl(url: string) {
    const refusal = targetUrlRefusal(url, fetchPolicy);
    if (refusal) throw fieldError("url", refusal, withoutUserinfo(url));
  }

  // callback_url: refused destinations (literal private addresses, internal names) are 422 at once.
  const webhookPolicy = webhookEgressPolicy(config);
  function checkCallbackUrl(url: string) {
    const refusal = targetUrlRefusal(url, webhookPolicy);
    if (refusal) throw fieldError("callback_url", refusal, url);
    if (config.webhook.secrets.length === 0)
      throw fieldError("callback_url", "callback_url needs WEBHOOK__SECRET to be set on this service", url);
  }

  // 403, not 429 (rate limits, which clients retry after Retry-After) nor 413 (this body is fine):
  // the tenant must free usage first; the detail says which quota and its figures.
  function refuseOverQuota(e: unknown): never {
    if (!(e instanceof QuotaExceeded)) throw e;
    deps.onQuotaRefused?.(e.quota);
    throw new ApiError(403, e.message);
  }

  app.post(
    "/",
    describeRoute({
      summary: "Create a fetch request",
      description:
        "Records the request; a node fetches the URL, stores it, builds a private torrent and seeds it. Identical requests in flight share one fetch; a ready result younger than `ttl` is reused.",
      responses: {
        201: { description: "Created", content: json(createRequestResponse) },
        401: err("Missing or invalid authentication"),
        403: err(
          "The credentials lack the requests:create scope, or the tenant is at a quota (the detail names it and its figures)",
        ),
        413: err("Request body larger than SECURITY__MAX_BODY_BYTES"),
        415: err("The body is not sent as JSON (Content-Type: application/json)"),
        422: err("Invalid input"),
        429: err("Rate limit exceeded (see Retry-After)"),
      },
    }),
    requireScope("requests:create"),
    jsonBody,
    validator("json", createRequestSchema(config.cache, config.storage), (result, c) => {
      const refused = invalid(result, c);
      if (refused) return refused;
      checkTargetUrl(result.data.url);
      if (result.data.callback_url) checkCallbackUrl(result.data.callback_url);
    }),
    // After validation, as in the original: invalid input is answered 422 without using quota.
    rateLimitCreates(deps),
    async (c) => {
      const input = c.req.valid("json");
      const headers = input.headers
        ? Object.fromEntries(Object.entries(input.headers).filter(([k]) => !isDroppedHeader(k)))
        : null;
      const principal = c.get("principal");
      const limits = await keyLimits(db, config, principal.keyId);
      await checkQuotas(db, principal.id, limits, clock.now(), config.fetcher.maxSize).catch(refuseOverQuota);
      const view = await createRequest(db, clock, {
        url: input.url,
        method: input.method,
        headers: headers && Object.keys(headers).length ? headers : null,
        body: input.body,
        ttl: input.ttl,
        userId: c.get("principal").id,
        clientIp: c.get("clientIp") ?? null,
        requestId: c.get("requestId") ?? null,
        maxAttempts: config.fetcher.maxAttempts,
        region: input.region,
        pool: input.pool,
        callbackUrl: input.callback_url,
        shareAcrossTenants: config.cache.shareAcrossTenants,
        egress: requiredEgress(config),
        apiKeyId: principal.keyId ?? null,
        maxActive: limits.maxActive,
        retention: input.retention,
        expectedSha256: input.expected_sha256,
        expectedSize: input.expected_size,
      }).catch(refuseOverQuota);
      deps.onRequestCreated?.(view.source ?? "fetch");
      return c.json(
        {
          id: view.id,
          status: view.status,
          estimated_ready: view.status === "ready" ? 0 : 5,
          created_at: iso(view.createdAt)!,
        },
        201,
      );
    },
  );

  /**
   * The filter of a history query: the caller's own requests, or (admins) every tenant's or the
   * one named by `tenant`. A non-admin naming a tenant is refused rather than silently answered
   * with their own requests, so a mistaken script does not take them for someone else's.
   */
  function historyFilter(
    q: { status?: RequestFilter["statuses"]; since?: number; until?: number; q?: string; tenant?: string },
    who: Principal,
  ): RequestFilter {
    if (q.tenant !== undefined && !who.admin)
      throw fieldError("tenant", "only an admin may filter by tenant", q.tenant, "query");
    return {
      tenant: who.admin ? q.tenant : who.id,
      statuses: q.status,
      since: q.since,
      until: q.until,
      q: q.q,
    };
  }

  app.get(
    "/",
    describeRoute({
      summary: "List your requests",
      description:
        "Newest first (created_at, then id). Filters combine; `next_cursor` pages to older requests and stays correct while new requests arrive. Admins see every tenant and may filter by `tenant`.",
      responses: {
        200: { description: "A page of requests", content: json(requestListResponse) },
        422: err("Invalid query parameter (including a cursor that was not a next_cursor)"),
      },
    }),
    requireScope("requests:read"),
    validator("query", listRequestsQuery, (result, c) => invalid(result, c, "query")),
    async (c) => {
      const q = c.req.valid("query");
      const filter = historyFilter(q, c.get("principal"));
      // One more than the page: whether it exists decides next_cursor, so the last page says null.
      const rows = await listRequests(db, filter, q.limit + 1, clock.now(), q.cursor);
      const items = rows.slice(0, q.limit);
      const last = items.at(-1);
      return c.json({
        items: items.map(statusBody),
        next_cursor: rows.length > q.limit && last ? encodeCursor(last) : null,
      });
    },
  );

  app.get(
    "/export",
    describeRoute({
      summary: "Export your request history",
      description:
        "Every request matching the filters (as in the list, without paging), newest first, streamed: `csv` (header row, RFC 4180 quoting; a text starting with = + - @ is prefixed with ' against spreadsheet formulas), `ndjson` or `json`. Same fields as the status.",
      responses: {
        200: {
          description: "The download (Content-Disposition: attachment)",
          content: {
            "text/csv": {},
            "application/x-ndjson": {},
            "application/json": { schema: resolver(v.array(requestStatusResponse)) },
          },
        },
        422: err("Invalid query parameter"),
      },
    }),
    requireScope("requests:read"),
    validator("query", exportRequestsQuery, (result, c) => invalid(result, c, "query")),
    (c) => {
      const q = c.req.valid("query");
      const filter = historyFilter(q, c.get("principal"));
      const requestId = c.get("requestId");
      const body = exportStream({
        format: q.format,
        columns: STATUS_COLUMNS,
        page: (after) => listRequests(db, filter, EXPORT_BATCH, clock.now(), after),
        body: statusBody,
        onError: (e) =>
          deps.log.error("export failed", { request_id: requestId, err: (e as Error)?.message ?? String(e) }),
      });
      return c.body(body, 200, {
        "Content-Type": EXPORT_CONTENT_TYPES[q.format],
        "Content-Disposition": `attachment; filename="${exportFilename(q.format, clock.now())}"`,
        "Cache-Control": "no-store",
      });
    },
  );

  app.get(
    "/:id/webhooks",
    describeRoute({
      summary: "Webhook deliveries of a request",
      description:
        "Every event message of this request (callback_url and registered endpoints) with its attempts.",
      responses: {
        200: { description: "Deliveries", content: json(deliveryListResponse) },
        404: err("No such request (or not yours)"),
      },
    }),
    requireScope("requests:read"),
    async (c) => {
      const r = await load(c.req.param("id"), c.get("principal"));
      return c.json({ deliveries: await deliveryBodies(deps, await deliveriesForRequest(db, r.id)) });
    },
  );

  app.get(
    "/:id",
    describeRoute({
      summary: "Status of a request",
      responses: {
        200: { description: "Status", content: json(requestStatusResponse) },
        404: err("No such request (or not yours)"),
      },
    }),
    requireScope("requests:read"),
    async (c) => c.json(statusBody(await load(c.req.param("id"), c.get("principal")))),
  );

  app.get(
    "/:id/torrent",
    describeRoute({
      summary: "Download the .torrent",
      description:
        "With TORRENT__ACCESS=passkey (the default) its tracker and web seed URLs carry this request's own passkey: only its holder can download. Keep it like a password; DELETE the request if it leaks.",
      responses: {
        200: { description: "The .torrent file", content: { "application/x-bittorrent": {} } },
        400: err("Not ready yet"),
        404: err("No such request"),
        410: err("The request expired (its retention ended): the content is no longer stored or seeded"),
      },
    }),
    requireScope("requests:read"),
    async (c) => {
      const r = await load(c.req.param("id"), c.get("principal"));
      requireReady(r);
      const stored = await getTorrent(db, r.jobId);
      if (!stored) throw new ApiError(500, "Torrent file not found");
      const bytes = await forOwner(r, (passkey) => passkeyedTorrent(stored, passkey), stored);
      return new Response(bytes as BodyInit, {
        headers: {
          "Content-Type": "application/x-bittorrent",
          "Content-Disposition": `attachment; filename="${r.infohash}.torrent"`,
          "Content-Length": String(bytes.byteLength),
        },
      });
    },
  );

  app.get(
    "/:id/magnet",
    describeRoute({
      summary: "Magnet link",
      description: "Carries the same passkeyed tracker (`tr`) and web seed (`ws`) as the .torrent.",
      responses: {
        200: { description: "Magnet link", content: json(magnetResponse) },
        400: err("Not ready yet"),
        404: err("No such request"),
        410: err("The request expired (its retention ended): the content is no longer stored or seeded"),
      },
    }),
    requireScope("requests:read"),
    async (c) => {
      const r = await load(c.req.param("id"), c.get("principal"));
      requireReady(r);
      const stored = r.magnetLink;
      if (!r.infohash || !stored) throw new ApiError(500, "Infohash not set");
      const magnet = await forOwner(r, (passkey) => passkeyedMagnet(stored, passkey), stored);
      return c.json({ id: r.id, magnet_link: magnet, infohash: r.infohash });
    },
  );

  app.delete(
    "/:id",
    describeRoute({
      summary: "Cancel a request",
      description:
        "Any state. A running fetch is aborted and a ready torrent stops being seeded once no other live request needs it.",
      responses: { 204: { description: "Cancelled" }, 404: err("No such request") },
    }),
    requireScope("requests:cancel"),
    async (c) => {
      const id = c.req.param("id");
      await load(id, c.get("principal"));
      await cancelRequest(db, clock, id);
      return c.body(null, 204);
    },
  );

  return app;
}
