/**
 * Opening the database from Bun: a local libSQL file (embedded default, several processes may
 * share it) or a remote libSQL/Turso URL. Migrations are the SQL files drizzle-kit generated.
 */
import { mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { type Client, createClient } from "@libsql/client";
import { migrate } from "drizzle-orm/libsql/migrator";
import type { Config } from "../src/config";
import { createDatabase, type Database } from "../src/db";

export const MIGRATIONS_DIR = resolve(import.meta.dir, "..", "migrations");

export interface OpenedDatabase {
  client: Client;
  db: Database;
}

export async function openDatabase(config: Config): Promise<OpenedDatabase> {
  const url = config.database.url;
  if (url.startsWith("file:")) {
    const path = url.slice("file:".length).split("?")[0]!;
    if (path && path !== ":memory:") mkdirSync(dirname(resolve(path)), { recursive: true });
  }
  // `timeout` is the busy timeout of every pooled file connection: a writer waits for another
  // process's write instead of failing with SQLITE_BUSY.
  const client = createClient({ url, authToken: config.database.authToken, timeout: 15_000 });
  if (url.startsWith("file:")) {
    // WAL lets readers (the API) proceed while a node writes. It is a property of the file, so
    // setting it once is enough for every connection and process.
    await client.execute("PRAGMA journal_mode = WAL");
    // In WAL mode NORMAL still never corrupts the database and survives a process crash or kill
    // (what our tests and leases rely on); only a power loss can roll back the last commits, and
    // a job whose commit was lost is simply claimed again. FULL cost 1.2-2.5 ms of fsync per
    // commit on the single event-loop thread (bench/, docs/performance.md).
    await client.execute("PRAGMA synchronous = NORMAL");
  }
  return { client, db: createDatabase(client, { logSql: config.database.echoSql }) };
}

export async function runMigrations(db: Database): Promise<void> {
  await migrate(db, { migrationsFolder: MIGRATIONS_DIR });
}

export const defaultMigrationsJournal = join(MIGRATIONS_DIR, "meta", "_journal.json");
