/**
 * GET /v1/usage: the caller's tenant usage against its quotas (src/requests/quotas.ts). The limits
 * shown are those a POST with the same credentials gets; an admin may ask about `?tenant=`, shown
 * with the limits of that tenant's newest active key (or the defaults).
 */
import { Hono } from "hono";
import { describeRoute } from "hono-openapi";
import { keyLimits, tenantLimits, tenantUsage } from "../../requests/quotas";
import type { AppDeps, AppEnv } from "../app";
import { ApiError } from "../errors";
import { requireScope } from "../middleware/auth";
import { usageResponse } from "../schemas";
import { err, json } from "./shared";

export function usageRoutes(deps: AppDeps) {
  const { db, config } = deps;
  const app = new Hono<AppEnv>();
  app.get(
    "/",
    describeRoute({
      summary: "Usage and quotas of your tenant",
      description:
        "Active requests and stored bytes against the tenant's quotas (null = unlimited). A POST /v1/requests at a quota is refused with 403. Admins may pass `?tenant=`.",
      responses: {
        200: { description: "Usage", content: json(usageResponse) },
        403: err("Missing requests:read scope, or `tenant` given by a non-admin"),
      },
    }),
    requireScope("requests:read"),
    async (c) => {
      const who = c.get("principal");
      const asked = c.req.query("tenant");
      const other = asked !== undefined && asked !== who.id;
      if (other && !who.admin) throw new ApiError(403, "Only admins may ask for another tenant's usage");
      const tenant = other ? asked : who.id;
      const [usage, limits] = await Promise.all([
        tenantUsage(db, tenant, deps.clock.now()),
        other ? tenantLimits(db, config, asked) : keyLimits(db, config, who.keyId),
      ]);
      return c.json({
        tenant,
        active_requests: usage.activeRequests,
        max_active_requests: limits.maxActive,
        stored_bytes: usage.storedBytes,
        max_stored_bytes: limits.maxBytes,
      });
    },
  );
  return app;
}
