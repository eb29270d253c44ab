/** GET /v1/health: real checks, 503 when any is not healthy (the original always said 200). */
import { sql } from "drizzle-orm";
import { Hono } from "hono";
import { describeRoute, resolver } from "hono-openapi";
import { queueDepth } from "../../jobs/queue";
import type { AppDeps, AppEnv } from "../app";
import { healthResponse } from "../schemas";

type CheckResult = { status: string; [k: string]: unknown };

async function guarded(fn: () => Promise<CheckResult>): Promise<CheckResult> {
  try {
    return await fn();
  } catch (e) {
    return { status: "unhealthy", error: (e as Error).message };
  }
}

export function healthRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>();
  app.get(
    "/health",
    describeRoute({
      summary: "Health",
      description: "Database, queue and (where a node runs in this process) storage and seeding checks.",
      responses: {
        200: {
          description: "Healthy",
          content: { "application/json": { schema: resolver(healthResponse) } },
        },
        503: {
          description: "Degraded",
          content: { "application/json": { schema: resolver(healthResponse) } },
        },
      },
    }),
    async (c) => {
      const checks: Record<string, CheckResult> = {};
      checks.database = await guarded(async () => {
        await deps.db.run(sql`SELECT 1`);
        return { status: "healthy" };
      });
      checks.task_queue = await guarded(async () => {
        const d = await queueDepth(deps.db);
        return { status: "healthy", queue_size: d.queued, in_progress: d.running };
      });
      for (const hc of deps.healthChecks ?? []) checks[hc.name] = await guarded(() => hc.check());
      const healthy = Object.values(checks).every((x) => x.status === "healthy");
      return c.json(
        {
          status: healthy ? "healthy" : "degraded",
          version: deps.config.appVersion,
          runtime: deps.runtime,
          uptime: Math.round((deps.clock.now() - deps.startedAt) / 10) / 100,
          checks,
        },
        healthy ? 200 : 503,
      );
    },
  );
  return app;
}
