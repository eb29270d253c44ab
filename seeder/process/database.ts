/**
 * Opening the database from Bun: a local libSQL file (embedded default, several processes may
 * share it) or a remote libSQL/Turso URL. Migrations are the SQL files drizzle-kit generated.
 */
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { type Client, createClient } from "@libsql/client";
import { migrate } from "drizzle-orm/libsql/migrator";
import { type Config, maskUrlSecrets } from "../../src/config";
import { createDatabase, type Database } from "../../src/db";
import { withStatementCache } from "../patches/libsql-statement-cache";
import { LibraryPatchError } from "../patches/patch";

export const MIGRATIONS_DIR = resolve(import.meta.dir, "..", "..", "migrations");

export interface OpenedDatabase {
  client: Client;
  db: Database;
}

/** The database cannot be used: names the URL (without secrets) and what failed. */
export class DatabaseError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "DatabaseError";
  }
}

export async function openDatabase(config: Config): Promise<OpenedDatabase> {
  const url = config.database.url;
  try {
    return await open(config);
  } catch (e) {
    if (e instanceof LibraryPatchError) throw e; // not a database problem: docs/patches.md
    throw new DatabaseError(
      `cannot open the database DATABASE__DATABASE_URL=${maskUrlSecrets(url)}: ${describeDatabaseError(e)}`,
      { cause: e },
    );
  }
}

async function open(config: Config): Promise<OpenedDatabase> {
  const url = config.database.url;
  if (url.startsWith("file:")) {
    const path = url.slice("file:".length).split("?")[0]!;
    if (path && path !== ":memory:") mkdirSync(dirname(resolve(path)), { recursive: true, mode: 0o700 });
  }
  // `timeout` is the busy timeout of every pooled file connection: a writer waits for another
  // process's write instead of failing with SQLITE_BUSY.
  const open = () => createClient({ url, authToken: config.database.authToken, timeout: 15_000 });
  // A file client's connections each get a statement cache (below).
  const client = url.startsWith("file:") ? withStatementCache(open) : open();
  if (url.startsWith("file:")) {
    // WAL lets readers (the API) proceed while a node writes. It is a property of the file, so
    // setting it once is enough for every connection and process.
    await client.execute("PRAGMA journal_mode = WAL");
    // In WAL mode NORMAL still never corrupts the database and survives a process crash or kill
    // (what our tests and leases rely on); only a power loss can roll back the last commits, and
    // a job whose commit was lost is simply claimed again. FULL cost 1.2-2.5 ms of fsync per
    // commit on the single event-loop thread (bench/, docs/performance.md).
    await client.execute("PRAGMA synchronous = NORMAL");
  } else {
    // A remote client connects lazily: reach it now, so that a wrong URL or token is reported as
    // such and not as the first failing query.
    try {
      await client.execute("SELECT 1");
    } catch (e) {
      client.close();
      throw e;
    }
  }
  return { client, db: createDatabase(client, { logSql: config.database.echoSql }) };
}

export async function runMigrations(db: Database): Promise<void> {
  try {
    await migrate(db, { migrationsFolder: MIGRATIONS_DIR });
  } catch (e) {
    throw new DatabaseError(`applying the database migrations failed: ${describeDatabaseError(e)}`, {
      cause: e,
    });
  }
}

/**
 * What went wrong, in a few words, from an error of @libsql/client, drizzle or the file system:
 * drizzle wraps the driver's error as "Failed query: <SQL>", which hides the cause.
 */
export function describeDatabaseError(e: unknown): string {
  const chain: { code?: unknown; message: string }[] = [];
  for (let x = e as { code?: unknown; message?: unknown; cause?: unknown } | undefined; x; ) {
    chain.push({ code: x.code, message: String(x.message ?? x) });
    if (chain.length > 8 || typeof x.cause !== "object" || x.cause === null) break;
    x = x.cause as typeof x;
  }
  const codes = chain.map((c) => String(c.code ?? ""));
  const text = chain.map((c) => c.message).join(" | ");
  if (codes.includes("ECONNREFUSED") || /ECONNREFUSED|connection refused/i.test(text))
    return "connection refused (is the database server running, and is the host and port right?)";
  if (codes.some((c) => c === "ENOTFOUND" || c === "EAI_AGAIN") || /ENOTFOUND|getaddrinfo/i.test(text))
    return "host not found";
  if (codes.includes("ETIMEDOUT") || /timed? ?out/i.test(text)) return "timed out";
  if (/\b(401|403)\b|unauthori[sz]ed|forbidden|auth(entication)? token|JWT/i.test(text))
    return "authentication failed (check DATABASE__AUTH_TOKEN)";
  if (codes.includes("URL_SCHEME_NOT_SUPPORTED") || codes.includes("URL_INVALID"))
    return `unsupported or invalid URL: ${chain.find((c) => /URL_/.test(String(c.code)))?.message}`;
  if (codes.includes("HRANA_WEBSOCKET_ERROR")) return `could not connect (${chain.at(-1)?.message})`;
  // The innermost cause is the real one; drop drizzle's "Failed query: <whole SQL>" wrapper.
  const inner = chain.filter((c) => !c.message.startsWith("Failed query:")).at(-1) ?? chain.at(-1);
  return (inner?.message ?? String(e)).split("\n")[0]!.slice(0, 300);
}
