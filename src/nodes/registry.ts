/**
 * The node registry: nodes upsert their row on a heartbeat; the API reads which are alive.
 */
import { eq, gte, sql } from "drizzle-orm";
import type { HealthCheck } from "../api/app";
import type { Clock } from "../clock";
import type { Database } from "../db";
import { nodes } from "../db/schema";

export interface NodeInfo {
  name: string;
  publicUrl: string;
  region: string | null;
  pool: string | null;
  version: string;
  startedAt: number;
  activeJobs: number;
  torrentsSeeding: number;
}

/** A node is alive while its last heartbeat is younger than this. */
export const NODE_STALE_MS = 30_000;

export async function nodeHeartbeat(db: Database, clock: Clock, info: NodeInfo): Promise<void> {
  const now = clock.now();
  const row = { ...info, status: "running" as const, lastSeenAt: now };
  await db
    .insert(nodes)
    .values(row)
    .onConflictDoUpdate({ target: nodes.name, set: { ...row, startedAt: sql`excluded.started_at` } });
}

export async function nodeStopped(db: Database, clock: Clock, name: string): Promise<void> {
  await db.update(nodes).set({ status: "stopped", lastSeenAt: clock.now() }).where(eq(nodes.name, name));
}

export async function liveNodes(db: Database, clock: Clock, staleMs = NODE_STALE_MS) {
  const rows = await db
    .select()
    .from(nodes)
    .where(gte(nodes.lastSeenAt, clock.now() - staleMs));
  return rows.filter((r) => r.status === "running");
}

/** Health check for an API: unhealthy when no node is alive to do the work. */
export function liveNodesCheck(db: Database, clock: Clock): HealthCheck {
  return {
    name: "nodes",
    async check() {
      const live = await liveNodes(db, clock);
      return live.length > 0
        ? { status: "healthy", live: live.length, names: live.map((n) => n.name) }
        : { status: "unhealthy", live: 0, error: "no seeder node has sent a heartbeat in the last 30 s" };
    },
  };
}
