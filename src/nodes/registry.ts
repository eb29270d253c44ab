/**
 * The node registry: nodes upsert their row on a heartbeat; the API reads which are alive.
 */
import { and, eq, gte, inArray, lt, or, sql } from "drizzle-orm";
import type { HealthCheck } from "../api/app";
import type { Clock } from "../clock";
import type { Database } from "../db";
import { nodes } from "../db/schema";
import { excluded } from "../db/sql";

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

/** The node name is held by another live process: refusing to take it over. */
export class NodeNameInUseError extends Error {
  constructor(
    readonly nodeName: string,
    readonly publicUrl: string,
    readonly lastSeenAgoMs: number,
  ) {
    super(
      `node name "${nodeName}" is in use by another live node at ${publicUrl} (last heartbeat ${Math.round(lastSeenAgoMs / 1000)} s ago); give this node its own NODE__NAME, or stop the other one`,
    );
    this.name = "NodeNameInUseError";
  }
}

/**
 * Register (or heartbeat) this node as running. The row of its name is taken only when it is
 * free: missing, stopped, stale, or carrying one of `ownStartedAt` (this node's own registrations:
 * its current one, or a previous run from the same locked storage folder that crashed and so left
 * a row that still looks live). Anything else is another process: NodeNameInUseError.
 */
export async function nodeHeartbeat(
  db: Database,
  clock: Clock,
  info: NodeInfo,
  ownStartedAt: number[] = [info.startedAt],
  staleMs = NODE_STALE_MS,
): Promise<void> {
  const now = clock.now();
  const row = { ...info, status: "running" as const, lastSeenAt: now };
  const res = await db
    .insert(nodes)
    .values(row)
    .onConflictDoUpdate({
      target: nodes.name,
      set: { ...row, startedAt: excluded(nodes.startedAt) },
      setWhere: or(
        eq(nodes.status, "stopped"),
        lt(nodes.lastSeenAt, now - staleMs),
        ownStartedAt.length ? inArray(nodes.startedAt, ownStartedAt) : sql`0`,
      ),
    });
  if (res.rowsAffected > 0) return;
  const [holder] = await db.select().from(nodes).where(eq(nodes.name, info.name));
  if (!holder) return nodeHeartbeat(db, clock, info, ownStartedAt, staleMs); // deleted meanwhile
  throw new NodeNameInUseError(info.name, holder.publicUrl, now - holder.lastSeenAt);
}

/** Mark this node stopped, unless its row has since been taken by another process. */
export async function nodeStopped(
  db: Database,
  clock: Clock,
  name: string,
  startedAt?: number,
): Promise<void> {
  await db
    .update(nodes)
    .set({ status: "stopped", lastSeenAt: clock.now() })
    .where(and(eq(nodes.name, name), startedAt === undefined ? undefined : eq(nodes.startedAt, startedAt)));
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
