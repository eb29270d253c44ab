/**
 * Seeder nodes announce themselves here (the database is the only channel, so this is how the API
 * and other nodes learn which nodes are alive). A node upserts its row at start and on every
 * heartbeat, and marks it stopped on a clean shutdown.
 */
import { index, integer, sqliteTable, text } from "drizzle-orm/sqlite-core";

export const nodes = sqliteTable(
  "nodes",
  {
    name: text("name").primaryKey(),
    publicUrl: text("public_url").notNull(),
    region: text("region"),
    pool: text("pool"),
    version: text("version").notNull(),
    status: text("status").$type<"running" | "stopped">().notNull(),
    startedAt: integer("started_at").notNull(),
    lastSeenAt: integer("last_seen_at").notNull(),
    activeJobs: integer("active_jobs").notNull().default(0),
    torrentsSeeding: integer("torrents_seeding").notNull().default(0),
  },
  (t) => [index("nodes_last_seen").on(t.lastSeenAt)],
);

export type NodeRow = typeof nodes.$inferSelect;
