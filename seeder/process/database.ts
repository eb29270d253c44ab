/**
 * Opening the database from Bun: a local libSQL file (embedded default, several processes may
 * share it) or a remote libSQL/Turso URL. Migrations are the SQL files drizzle-kit generated.
 */
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { type Client, createClient } from "@libsql/client";
import { ConnectionPool } from "@libsql/client/sqlite3";
import { migrate } from "drizzle-orm/libsql/migrator";
import { type Config, maskUrlSecrets } from "../../src/config";
import { createDatabase, type Database } from "../../src/db";

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

// ---- statement cache for @libsql/client's file driver -------------------------------------------
//
// @libsql/client (sqlite3.js, `executeStmt`) prepares every statement on every call, calls
// `columns()` twice on it, runs it to completion with `all()` or `run()` and drops it. That is most
// of a cheap query's cost (the status read: ~35 µs per `client.execute` uncached, 7-10 µs cached;
// docs/performance.md). Here each connection of a pool opened by `openDatabase` gets its own small
// LRU of prepared statements keyed by SQL text.
//
// What makes reuse safe, from libsql 0.5.29's sources (index.js, src/statement.rs) and checked by
// test/db/statement-cache.test.ts:
// - A libsql Statement holds state: `iterate()` returns a cursor over the statement itself, and
//   running the statement again (run/all/get reset it first) silently re-targets an open cursor.
//   So a cached statement is handed out to one caller at a time: `prepare` takes it out of the
//   cache, and it goes back only when `run()`, `all()` or `get()` has returned normally, i.e. when
//   the statement has run to completion. A statement that threw, or whose `iterate()` was called
//   directly, is never reused. @libsql/client uses each statement once, synchronously, so in
//   practice every statement goes back right after its one use.
// - Bindings persist between executions (SQLite keeps them until re-bound): a fresh statement
//   given 1 argument for 2 `?` binds NULL to the second, a reused one would keep the previous
//   call's value. Positional arguments shorter than the longest ever bound are padded with NULLs.
//   (Extra arguments are ignored by libsql, so padding is harmless.) Named arguments are all
//   re-bound on every execution.
// - `raw` and `safeIntegers` are per statement; @libsql/client sets both on every call. `pluck`
//   (which it never uses) is reset when a statement is handed out.
// - `columns()` is memoized per statement. Statements whose result columns can depend on the
//   schema (`*`, other than `count(*)`) are never cached: SQLite re-prepares a stale statement only
//   when it steps it, after @libsql/client has already read the old column list. Every other
//   column list is fixed by the SQL text.
// - Schema changes made here: anything that is not plain DML or transaction control (CREATE, ALTER,
//   DROP, PRAGMA, ATTACH, VACUUM, ..., and every `exec`) is prepared uncached and empties the caches
//   of every connection of every pool in the process. Made by another process: cached statements
//   are re-prepared by SQLite itself on their next step; only the memoized declared column types
//   (`ResultSet.columnTypes`, which nothing here reads) could be stale until the next local DDL.
// - A connection's cache is emptied when the connection is closed.
//
// The hook is on @libsql/client's shared ConnectionPool prototype (there is no other way to reach
// the connections of a client) and only touches pools created by `openDatabase`.

const STATEMENT_CACHE_SIZE = 256;
const CACHED = Symbol("proxytorrent.statementCache");

interface RawStatement {
  run(...params: unknown[]): unknown;
  all(...params: unknown[]): unknown[];
  get(...params: unknown[]): unknown;
  columns(): unknown[];
  pluckMode?: boolean;
}

interface RawConnection {
  prepare(sql: string): RawStatement;
  exec(sql: string): void;
  close(): void;
  [CACHED]?: StatementCache;
}

/** Bumped by every schema-changing statement run through a cached connection. */
let schemaGeneration = 0;
const ownedPools = new WeakSet<object>();
let adoptingPool = false;
let poolHookInstalled = false;

/** Run `createClient` for a file URL so that every connection of its pool caches statements. */
function withStatementCache(create: () => Client): Client {
  installPoolHook();
  adoptingPool = true;
  try {
    return create();
  } finally {
    adoptingPool = false;
  }
}

function installPoolHook(): void {
  if (poolHookInstalled) return;
  poolHookInstalled = true;
  const proto = ConnectionPool.prototype as unknown as {
    acquireSync(this: object, forTransaction?: boolean): RawConnection;
  };
  const original = proto.acquireSync;
  // Another @libsql/client without this pool: no cache, nothing else changes.
  if (typeof original !== "function") return;
  proto.acquireSync = function acquireSync(this: object, forTransaction?: boolean): RawConnection {
    const db = original.call(this, forTransaction);
    // The first acquireSync of a pool is the client's own probe, inside createClient().
    if (adoptingPool) ownedPools.add(this);
    if (db[CACHED] === undefined && ownedPools.has(this)) {
      // Per-connection setting: every connection of our pool, not only the first, must commit
      // with synchronous=NORMAL (see openDatabase).
      db.exec("PRAGMA synchronous = NORMAL");
      cacheStatements(db);
    }
    return db;
  };
}

/**
 * Give one libsql connection a statement cache (idempotent). Exported for tests; `openDatabase`
 * applies it to every connection of its client.
 */
export function cacheStatements(db: RawConnection, maxIdle = STATEMENT_CACHE_SIZE): void {
  if (db[CACHED] !== undefined) return;
  const cache = new StatementCache(db, maxIdle);
  const proto = Object.getPrototypeOf(db) as RawConnection;
  Object.defineProperty(db, CACHED, { value: cache });
  db.prepare = (sql: string) => cache.prepare(sql);
  db.exec = (sql: string) => {
    schemaChanged();
    proto.exec.call(db, sql);
  };
  db.close = () => {
    cache.close();
    proto.close.call(db);
  };
}

/** Statements idle in a connection's cache / prepared by it since it was created (for tests). */
export function statementCacheStats(db: object): { idle: number; prepared: number } | null {
  const cache = (db as RawConnection)[CACHED];
  return cache ? { idle: cache.idleCount, prepared: cache.prepared } : null;
}

function schemaChanged(): void {
  schemaGeneration++;
}

const TRANSACTION_AND_DML = new Set([
  "select",
  "insert",
  "update",
  "delete",
  "replace",
  "with",
  "values",
  "begin",
  "commit",
  "end",
  "rollback",
  "savepoint",
  "release",
]);
const LEADING_NOISE = /^(?:\s+|--[^\n]*(?:\n|$)|\/\*[\s\S]*?\*\/)*/;
const COUNT_STAR = /count\s*\(\s*\*\s*\)/gi;

/** "cache": DML or transaction control with a fixed column list; "schema": anything else. */
function classify(sql: string): "cache" | "uncached" | "schema" {
  const rest = sql.slice(LEADING_NOISE.exec(sql)![0].length);
  const keyword = /^[A-Za-z]+/.exec(rest)?.[0].toLowerCase() ?? "";
  if (!TRANSACTION_AND_DML.has(keyword)) return "schema";
  return sql.replace(COUNT_STAR, "").includes("*") ? "uncached" : "cache";
}

class StatementCache {
  /** SQL text -> an idle statement, least recently used first. */
  private readonly idle = new Map<string, RawStatement>();
  private generation = schemaGeneration;
  private closed = false;
  prepared = 0;

  constructor(
    private readonly db: RawConnection,
    private readonly maxIdle: number,
  ) {}

  get idleCount(): number {
    this.sync();
    return this.idle.size;
  }

  prepare(sql: string): RawStatement {
    this.sync();
    const hit = this.idle.get(sql);
    if (hit !== undefined) {
      this.idle.delete(sql); // checked out until it has run to completion
      hit.pluckMode = false;
      return hit;
    }
    const kind = classify(sql);
    if (kind === "schema") schemaChanged();
    const stmt = (Object.getPrototypeOf(this.db) as RawConnection).prepare.call(this.db, sql);
    this.prepared++;
    return kind === "cache" ? this.adopt(sql, stmt) : stmt;
  }

  close(): void {
    this.closed = true;
    this.idle.clear();
  }

  private sync(): void {
    if (this.generation !== schemaGeneration) {
      this.idle.clear();
      this.generation = schemaGeneration;
    }
  }

  private release(sql: string, stmt: RawStatement, generation: number): void {
    if (this.closed || generation !== schemaGeneration) return;
    this.sync();
    if (this.idle.has(sql)) return; // a twin was prepared while this one was out; keep one
    this.idle.set(sql, stmt);
    if (this.idle.size > this.maxIdle) this.idle.delete(this.idle.keys().next().value!);
  }

  /** Wrap a fresh statement so that it memoizes its columns and comes back after each use. */
  private adopt(sql: string, stmt: RawStatement): RawStatement {
    const proto = Object.getPrototypeOf(stmt) as RawStatement;
    const generation = schemaGeneration;
    let columns: unknown[] | undefined;
    let bound = 0;
    stmt.columns = () => {
      columns ??= Object.freeze(proto.columns.call(stmt)) as unknown[];
      return columns;
    };
    const runToCompletion =
      <T>(method: (...params: unknown[]) => T) =>
      (...params: unknown[]): T => {
        // The same dispatch as libsql's own run/all/get: one object (array or named) or a list.
        let args = params.length === 1 && typeof params[0] === "object" ? params[0] : params.flat();
        const positional = Array.isArray(args) ? args.length : 0;
        if (positional < bound && Array.isArray(args)) {
          // Bindings outlive an execution: NULL the ones this call does not set.
          const padded = args.slice();
          padded.length = bound;
          args = padded.fill(null, positional);
        }
        const result = method.call(stmt, args);
        if (positional > bound) bound = positional;
        this.release(sql, stmt, generation);
        return result;
      };
    stmt.run = runToCompletion(proto.run);
    stmt.all = runToCompletion(proto.all);
    stmt.get = runToCompletion(proto.get);
    return stmt;
  }
}
