/**
 * The Hono application, built by a factory from its dependencies so the embedded server, the
 * Bun-only API process, the Worker and the tests all construct it the same way.
 *
 * Order: request id → canonical request log line → body size limit → authentication (once, for
 * everything under the API prefix except the public paths) → routes (root, docs, health, v1
 * requests, v1 webhooks) → one error renderer.
 */
import { Hono } from "hono";
import { requestId } from "hono/request-id";
import { openAPIRouteHandler } from "hono-openapi";
import { createClientIpResolver } from "../auth/client-ip";
import type { Clock } from "../clock";
import type { Config } from "../config";
import type { Database } from "../db";
import type { Logger } from "../log";
import type { Quota } from "../requests/quotas";
import { DOCS_ASSET_PATHS, type DocsAssets, mountDocs } from "./docs";
import { renderError } from "./errors";
import { auth, type Principal } from "./middleware/auth";
import { requestBodyLimit } from "./middleware/body";
import { healthRoutes } from "./routes/health";
import { requestRoutes } from "./routes/requests";
import { usageRoutes } from "./routes/usage";
import { webhookRoutes } from "./routes/webhooks";

export type Runtime = "bun" | "workerd";

export interface HealthCheck {
  name: string;
  check(): Promise<{ status: "healthy" | "unhealthy" | string; [k: string]: unknown }>;
}

export interface AppDeps {
  db: Database;
  config: Config;
  clock: Clock;
  log: Logger;
  runtime: Runtime;
  startedAt: number;
  /**
   * Where the caller's address comes from (socket peer on Bun, CF-Connecting-IP on Workers).
   * X-Forwarded-For is applied on top only when this peer is in SECURITY__TRUSTED_PROXIES.
   */
  clientIp: (req: Request) => string | null;
  /** Extra health checks (storage, seeding) contributed by a co-located node. */
  healthChecks?: HealthCheck[];
  /** Called after a request was recorded, so an embedded node can start at once instead of polling. */
  onRequestCreated?: (source: "fetch" | "inflight" | "cache") => void;
  /** Called when a POST is refused by a tenant quota (metrics). */
  onQuotaRefused?: (quota: Quota) => void;
  /** Called once per HTTP response (metrics). `route` is the matched pattern, not the raw path. */
  onResponse?: (info: { route: string; method: string; status: number; seconds: number }) => void;
  /** Swagger UI's files for /docs, read per runtime (seeder/process/docs-assets.ts, edge/docs-assets.ts). */
  docsAssets?: DocsAssets;
}

export type AppEnv = {
  Variables: {
    principal: Principal;
    requestId: string;
    /** The client's address from trusted sources only (see src/auth/client-ip.ts). */
    clientIp: string | null;
  };
};

export function createApp(deps: AppDeps) {
  const { config, log } = deps;
  const app = new Hono<AppEnv>();
  const resolveClientIp = createClientIpResolver(config.security.trustedProxies);

  app.use(requestId({ headerName: "X-Request-Id" }));
  app.use(async (c, next) => {
    c.set("clientIp", resolveClientIp(deps.clientIp(c.req.raw), c.req.raw.headers));
    return next();
  });
  app.use(async (c, next) => {
    const started = performance.now();
    await next();
    const ms = performance.now() - started;
    // One canonical line per request; never headers (they carry credentials).
    log.info("http request", {
      request_id: c.get("requestId"),
      method: c.req.method,
      path: c.req.path,
      status: c.res.status,
      duration_ms: Math.round(ms * 100) / 100,
      principal: c.get("principal")?.id ?? undefined,
    });
    deps.onResponse?.({
      route: c.req.routePath,
      method: c.req.method,
      status: c.res.status,
      seconds: ms / 1000,
    });
  });
  // Before auth and every route: nothing reads more than this (see middleware/body.ts).
  app.use(requestBodyLimit(config.security.maxBodyBytes));
  // One authenticator per app, so one JWKS cache and one lock-out memo serve every route. Everything
  // under the API prefix needs credentials unless listed here (the tracker and web seed are served
  // before the app, by the node). With API_PREFIX=/ the prefix is "": the list covers the root too.
  const publicPaths = new Set<string>([
    "/",
    "/openapi.json",
    "/docs",
    ...DOCS_ASSET_PATHS,
    `${config.apiPrefix}/docs`,
    `${config.apiPrefix}/health`,
  ]);
  const authenticate = auth(deps);
  app.use(`${config.apiPrefix}/*`, (c, next) =>
    publicPaths.has(c.req.path) ? next() : authenticate(c, next),
  );
  app.onError((err, c) => renderError(err, c, log));
  app.notFound((c) => c.json({ detail: "Not Found" }, 404));

  app.get("/", (c) =>
    c.json({
      service: config.appName,
      version: config.appVersion,
      docs: "/docs",
      openapi: "/openapi.json",
    }),
  );

  app.route(config.apiPrefix, healthRoutes(deps));
  app.route(`${config.apiPrefix}/requests`, requestRoutes(deps));
  app.route(`${config.apiPrefix}/webhooks`, webhookRoutes(deps));
  app.route(`${config.apiPrefix}/usage`, usageRoutes(deps));

  app.get(
    "/openapi.json",
    openAPIRouteHandler(app, {
      documentation: {
        info: {
          title: config.appName,
          version: config.appVersion,
          description: "Fetch a URL through a proxy-connected node, receive it as a private, seeded torrent.",
        },
        components: {
          securitySchemes: {
            bearer: {
              type: "http",
              scheme: "bearer",
              description:
                "An API key (`proxytorrent keys create`), a SECURITY__BEARER_TOKENS token, or a JWT.",
            },
            signature: {
              type: "apiKey",
              in: "header",
              name: "Signature",
              description:
                "RFC 9421 HTTP Message Signature (hmac-sha256 keyed by an API key) with Signature-Input and Content-Digest; see docs/auth.md.",
            },
          },
        },
        security: config.security.authEnabled ? [{ bearer: [] }, { signature: [] }] : [],
      },
      exclude: ["/", "/openapi.json", "/docs", `${config.apiPrefix}/docs`, ...DOCS_ASSET_PATHS],
    }),
  );
  mountDocs(app, {
    title: `${config.appName} API`,
    pagePaths: ["/docs", `${config.apiPrefix}/docs`],
    assets: deps.docsAssets,
    compress: deps.runtime === "bun",
  });
  return app;
}

export type App = ReturnType<typeof createApp>;
