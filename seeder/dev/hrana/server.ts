/**
 * A small Hrana-over-HTTP v2 server over a local libSQL file, so the Worker (which can only reach a
 * database over HTTP) can run locally and in tests against the same file a Bun node opens directly.
 *
 * TEST AND DEVELOPMENT SUPPORT ONLY, never a production component. Production is Turso or a
 * self-hosted sqld. It listens on loopback only, has no TLS, keeps no replication log and runs every
 * statement synchronously on the event loop. No sqld can be installed on the development machines
 * (and the `turso` npm package's sync server speaks only part of Hrana), which is why this exists.
 *
 * What it speaks (the JSON encoding of Hrana 2, which is what @libsql/client's http mode, drizzle and
 * drizzle-kit use; they fall back to v2 when the v3 probe answers 404):
 *   POST /v2/pipeline   {baton?, requests: [...]} → {baton, base_url, results: [...]}
 *                       requests: execute, batch (conditions ok/error/not/and/or/is_autocommit),
 *                       sequence, store_sql, close_sql, get_autocommit, close. `describe` answers
 *                       an error (nothing in this project uses it).
 *   GET  /v2            200 (protocol v2 supported)
 *   GET  /v3, /v3-protobuf and their pipelines: 404, so clients use v2
 *   GET  /health        200 "ok";  GET /version  the server's name
 *
 * Streams: each Hrana stream owns one libSQL connection while it is open. A stream that is not
 * closed in its pipeline (an interactive transaction) gets a fresh random baton per response; the
 * old one stops working. Streams idle longer than `streamIdleMs` are rolled back and closed.
 *
 * Locking: connections never block the event loop on a lock. A statement that meets SQLITE_BUSY
 * (another stream's or another process's write transaction) is retried after a short async pause,
 * up to `busyTimeoutMs`, so a second stream waiting for the first one's COMMIT cannot dead-lock
 * the server. `sequence` (several statements in one string) is not retried: a busy error there may
 * come after earlier statements of the string already ran.
 */
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import Database from "libsql";
import { safeEqual } from "../../../src/auth/crypto";

type LibsqlDatabase = InstanceType<typeof Database>;

export interface HranaServerOptions {
  /** The database file: a path or a `file:` URL (query string ignored). Created if missing. */
  file: string;
  /** TCP port; 0 (default) picks a free one. */
  port?: number;
  /** Loopback address to bind (default 127.0.0.1). Anything else is refused. */
  host?: string;
  /** If set, every /v2 request must carry `Authorization: Bearer <authToken>`. */
  authToken?: string;
  /** Close (and roll back) a stream nobody used for this long. Default 15 s. */
  streamIdleMs?: number;
  /** How long a statement keeps retrying on SQLITE_BUSY before the error is returned. Default 15 s. */
  busyTimeoutMs?: number;
  /** Put the file in WAL mode at start (as the Bun node does). Default true. */
  wal?: boolean;
  /** Diagnostics (connection errors, expired streams). Default: silent. */
  log?: (msg: string, fields?: Record<string, unknown>) => void;
}

export interface HranaServer {
  /** Base URL for @libsql/client, e.g. http://127.0.0.1:41234 */
  url: string;
  port: number;
  /** The absolute path of the database file served. */
  file: string;
  /** Streams open now (interactive transactions in progress) and statements retried on a lock so far. */
  stats(): { openStreams: number; busyRetries: number };
  /** Stop listening, roll back and close every stream, close every connection. */
  stop(): Promise<void>;
}

// ---- protocol types (JSON encoding of Hrana 2) ----

type ProtoValue =
  | { type: "null" }
  | { type: "integer"; value: string }
  | { type: "float"; value: number }
  | { type: "text"; value: string }
  | { type: "blob"; base64: string };

interface ProtoStmt {
  sql?: string | null;
  sql_id?: number | null;
  args?: ProtoValue[];
  named_args?: { name: string; value: ProtoValue }[];
  want_rows?: boolean;
}

type ProtoCond =
  | { type: "ok"; step: number }
  | { type: "error"; step: number }
  | { type: "not"; cond: ProtoCond }
  | { type: "and"; conds: ProtoCond[] }
  | { type: "or"; conds: ProtoCond[] }
  | { type: "is_autocommit" };

interface ProtoBatch {
  steps: { condition?: ProtoCond | null; stmt: ProtoStmt }[];
}

interface ProtoError {
  message: string;
  code?: string | null;
}

interface StmtResult {
  cols: { name: string | null; decltype: string | null }[];
  rows: ProtoValue[][];
  affected_row_count: number;
  last_insert_rowid: string | null;
}

type StreamRequest =
  | { type: "close" }
  | { type: "execute"; stmt: ProtoStmt }
  | { type: "batch"; batch: ProtoBatch }
  | { type: "sequence"; sql?: string | null; sql_id?: number | null }
  | { type: "describe"; sql?: string | null; sql_id?: number | null }
  | { type: "store_sql"; sql_id: number; sql: string }
  | { type: "close_sql"; sql_id: number }
  | { type: "get_autocommit" };

type StreamResult = { type: "ok"; response: Record<string, unknown> } | { type: "error"; error: ProtoError };

/** A request-level failure that is not an SQLite error (bad input, unknown sql_id, …). */
class HranaError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

// ---- values ----

function valueToSql(v: ProtoValue | undefined): unknown {
  if (!v || typeof v !== "object") throw new HranaError("argument is not a Hrana value", "ARGS_INVALID");
  switch (v.type) {
    case "null":
      return null;
    case "integer":
      return BigInt(v.value);
    case "float":
      return Number(v.value);
    case "text":
      return String(v.value);
    case "blob":
      return Buffer.from(v.base64, "base64");
    default:
      throw new HranaError(
        `unknown value type ${JSON.stringify((v as { type: unknown }).type)}`,
        "ARGS_INVALID",
      );
  }
}

function valueFromSql(v: unknown): ProtoValue {
  if (v === null || v === undefined) return { type: "null" };
  if (typeof v === "bigint") return { type: "integer", value: v.toString() };
  if (typeof v === "number") {
    // safeIntegers(true) returns INTEGER columns as bigint, so a number here is a REAL.
    return { type: "float", value: v };
  }
  if (typeof v === "string") return { type: "text", value: v };
  if (v instanceof Uint8Array) return { type: "blob", base64: Buffer.from(v).toString("base64") };
  if (v instanceof ArrayBuffer) return { type: "blob", base64: Buffer.from(v).toString("base64") };
  return { type: "text", value: String(v) };
}

function toProtoError(e: unknown): ProtoError {
  if (e instanceof HranaError) return { message: e.message, code: e.code };
  const err = e as { message?: string; code?: unknown };
  const code = typeof err?.code === "string" ? err.code : "UNKNOWN";
  return { message: err?.message ?? String(e), code };
}

function isBusy(e: unknown): boolean {
  const err = e as { code?: unknown; rawCode?: unknown };
  if (typeof err?.code !== "string") return false;
  // SQLITE_BUSY_SNAPSHOT (517): a read transaction's snapshot is stale; waiting cannot help.
  if (err.rawCode === 517) return false;
  return err.code.startsWith("SQLITE_BUSY") || err.code.startsWith("SQLITE_LOCKED");
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---- connections and streams ----

interface Connection {
  db: LibsqlDatabase;
  /** A statement on it gave up on a lock and is still "in progress": never reuse it. */
  tainted?: boolean;
}

interface Stream {
  id: number;
  conn: Connection | null;
  sqls: Map<number, string>;
  baton: string | null;
  busy: boolean;
  closed: boolean;
  timer: ReturnType<typeof setTimeout> | null;
}

function randomBaton(): string {
  const bytes = new Uint8Array(24);
  crypto.getRandomValues(bytes);
  return Buffer.from(bytes).toString("base64url");
}

function filePath(file: string): string {
  let path = file;
  if (path.startsWith("file:")) {
    path = path.slice("file:".length).split("?")[0]!;
    // file:///abs/path and file://localhost/abs/path
    if (path.startsWith("//")) path = path.replace(/^\/\/[^/]*/, "");
  }
  if (!path || path === ":memory:") {
    throw new Error("startHranaServer needs a database file (an in-memory database cannot be shared)");
  }
  return resolve(path);
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

function json(body: unknown, status = 200): Response {
  // Exactly "application/json": the hrana client only reads error bodies with that content type.
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

/** Start the server; resolves once it listens. */
export async function startHranaServer(opts: HranaServerOptions): Promise<HranaServer> {
  const file = filePath(opts.file);
  const host = opts.host ?? "127.0.0.1";
  if (!isLoopback(host)) {
    throw new Error(
      `the dev Hrana server binds to loopback only (got host ${host}); it is test support, not a database server`,
    );
  }
  const streamIdleMs = opts.streamIdleMs ?? 15_000;
  const busyTimeoutMs = opts.busyTimeoutMs ?? 15_000;
  const log = opts.log ?? (() => {});
  mkdirSync(dirname(file), { recursive: true });

  const idle: Connection[] = [];
  const allConnections = new Set<Connection>();
  const streams = new Map<string, Stream>(); // by current baton
  const live = new Set<Stream>();
  let nextStreamId = 1;
  let busyRetries = 0;
  let stopped = false;

  function openConnection(): Connection {
    const conn = { db: new Database(file) };
    allConnections.add(conn);
    return conn;
  }

  // Open one connection now: a bad path fails here rather than on the first request.
  const first = openConnection();
  if (opts.wal ?? true) first.db.exec("PRAGMA journal_mode = WAL");
  idle.push(first);

  function acquire(stream: Stream): Connection {
    if (!stream.conn) stream.conn = idle.pop() ?? openConnection();
    return stream.conn;
  }

  function release(conn: Connection) {
    try {
      if (conn.db.inTransaction) conn.db.exec("ROLLBACK");
    } catch (e) {
      log("rollback on stream close failed", { error: (e as Error).message });
    }
    if (!conn.db.inTransaction && !conn.tainted && idle.length < 4 && !stopped) {
      idle.push(conn);
    } else {
      allConnections.delete(conn);
      try {
        conn.db.close();
      } catch {
        /* already closed */
      }
    }
  }

  function closeStream(stream: Stream) {
    if (stream.closed) return;
    stream.closed = true;
    if (stream.timer) clearTimeout(stream.timer);
    if (stream.baton) streams.delete(stream.baton);
    live.delete(stream);
    if (stream.conn) release(stream.conn);
    stream.conn = null;
  }

  function armIdleTimer(stream: Stream) {
    if (stream.timer) clearTimeout(stream.timer);
    stream.timer = setTimeout(() => {
      if (stream.busy) return armIdleTimer(stream);
      log("stream expired (idle); rolled back and closed", { stream: stream.id });
      closeStream(stream);
    }, streamIdleMs);
  }

  async function retryBusy<T>(fn: () => T): Promise<T> {
    const deadline = Date.now() + busyTimeoutMs;
    let pause = 2;
    for (;;) {
      try {
        return fn();
      } catch (e) {
        if (!isBusy(e) || Date.now() >= deadline || stopped) throw e;
        busyRetries++;
        await sleep(pause);
        pause = Math.min(pause * 2, 50);
      }
    }
  }

  function sqlOf(stream: Stream, req: { sql?: string | null; sql_id?: number | null }): string {
    if (typeof req.sql === "string") {
      if (req.sql_id != null) throw new HranaError("give either sql or sql_id, not both", "PROTOCOL_ERROR");
      return req.sql;
    }
    if (req.sql_id != null) {
      const sql = stream.sqls.get(req.sql_id);
      if (sql === undefined)
        throw new HranaError(`no SQL text stored under sql_id ${req.sql_id}`, "SQL_NOT_FOUND");
      return sql;
    }
    throw new HranaError("the statement has neither sql nor sql_id", "PROTOCOL_ERROR");
  }

  function bindings(stmt: ProtoStmt): unknown[] | Record<string, unknown> {
    const positional = stmt.args ?? [];
    const named = stmt.named_args ?? [];
    if (positional.length && named.length) {
      throw new HranaError(
        "this dev server cannot mix positional and named arguments in one statement",
        "ARGS_INVALID",
      );
    }
    if (!named.length) return positional.map(valueToSql);
    const out: Record<string, unknown> = {};
    for (const { name, value } of named) out[name.replace(/^[:@$]/, "")] = valueToSql(value);
    return out;
  }

  type Prepared = ReturnType<LibsqlDatabase["prepare"]>;

  function runPrepared(
    db: LibsqlDatabase,
    prepared: Prepared,
    args: unknown[] | Record<string, unknown>,
    wantRows: boolean,
  ): StmtResult {
    if (!prepared.reader) {
      const info = prepared.run(args);
      return {
        cols: [],
        rows: [],
        affected_row_count: Number(info.changes),
        last_insert_rowid: String(info.lastInsertRowid),
      };
    }
    // A statement that returns rows (SELECT, PRAGMA, INSERT … RETURNING): count what it changed by
    // total_changes() before and after, as libsql's run() reports nothing for readers.
    const before = totalChanges(db);
    const cols = prepared.columns().map((c) => ({ name: c.name ?? null, decltype: c.type ?? null }));
    const raw = prepared.all(args) as unknown[][];
    const changed = totalChanges(db) - before;
    return {
      cols,
      rows: wantRows ? raw.map((r) => r.map(valueFromSql)) : [],
      affected_row_count: changed,
      last_insert_rowid: changed > 0 ? lastInsertRowid(db) : null,
    };
  }

  function totalChanges(db: LibsqlDatabase): number {
    const row = db.prepare("SELECT total_changes()").raw(true).get() as unknown[];
    return Number(row[0]);
  }

  function lastInsertRowid(db: LibsqlDatabase): string {
    const stmt = db.prepare("SELECT last_insert_rowid()");
    stmt.safeIntegers(true);
    return String((stmt.raw(true).get() as unknown[])[0]);
  }

  async function execute(stream: Stream, stmt: ProtoStmt): Promise<StmtResult> {
    if (!stmt || typeof stmt !== "object") throw new HranaError("missing stmt", "PROTOCOL_ERROR");
    const sql = sqlOf(stream, stmt);
    const args = bindings(stmt);
    const conn = acquire(stream);
    const { db } = conn;
    const prepared = await retryBusy(() => db.prepare(sql));
    prepared.safeIntegers(true);
    if (prepared.reader) prepared.raw(true);
    // Retry with the *same* statement: one that failed with SQLITE_BUSY stays "in progress" in
    // SQLite until it is run again or finalized, and would make this connection's COMMIT fail.
    try {
      return await retryBusy(() => runPrepared(db, prepared, args, stmt.want_rows !== false));
    } catch (e) {
      if (isBusy(e)) conn.tainted = true;
      throw e;
    }
  }

  function evalCond(
    cond: ProtoCond,
    index: number,
    results: (StmtResult | null)[],
    errors: (ProtoError | null)[],
    conn: Connection,
  ): boolean {
    switch (cond.type) {
      case "ok":
      case "error": {
        if (!Number.isInteger(cond.step) || cond.step < 0 || cond.step >= index) {
          throw new HranaError(
            `condition refers to step ${cond.step}, which has not run before step ${index}`,
            "BATCH_COND_INVALID",
          );
        }
        return cond.type === "ok" ? results[cond.step] != null : errors[cond.step] != null;
      }
      case "not":
        return !evalCond(cond.cond, index, results, errors, conn);
      case "and":
        return cond.conds.every((c) => evalCond(c, index, results, errors, conn));
      case "or":
        return cond.conds.some((c) => evalCond(c, index, results, errors, conn));
      case "is_autocommit":
        return !conn.db.inTransaction;
      default:
        throw new HranaError(
          `unknown condition ${JSON.stringify((cond as { type: unknown }).type)}`,
          "BATCH_COND_INVALID",
        );
    }
  }

  async function batch(stream: Stream, b: ProtoBatch) {
    if (!b || !Array.isArray(b.steps)) throw new HranaError("batch without steps", "PROTOCOL_ERROR");
    const conn = acquire(stream);
    const results: (StmtResult | null)[] = [];
    const errors: (ProtoError | null)[] = [];
    for (let i = 0; i < b.steps.length; i++) {
      const step = b.steps[i]!;
      results.push(null);
      errors.push(null);
      if (step.condition && !evalCond(step.condition, i, results, errors, conn)) continue;
      try {
        results[i] = await execute(stream, step.stmt);
      } catch (e) {
        if (e instanceof HranaError && e.code === "PROTOCOL_ERROR") throw e;
        errors[i] = toProtoError(e);
      }
    }
    return { step_results: results, step_errors: errors };
  }

  async function handle(stream: Stream, req: StreamRequest): Promise<Record<string, unknown>> {
    switch (req?.type) {
      case "execute":
        return { type: "execute", result: await execute(stream, req.stmt) };
      case "batch":
        return { type: "batch", result: await batch(stream, req.batch) };
      case "sequence": {
        const sql = sqlOf(stream, req);
        acquire(stream).db.exec(sql);
        return { type: "sequence" };
      }
      case "describe":
        throw new HranaError(
          "describe is not supported by the ProxyTorrent dev Hrana server",
          "NOT_SUPPORTED",
        );
      case "store_sql": {
        if (!Number.isInteger(req.sql_id) || typeof req.sql !== "string") {
          throw new HranaError("store_sql needs an integer sql_id and sql text", "PROTOCOL_ERROR");
        }
        if (stream.sqls.has(req.sql_id))
          throw new HranaError(`sql_id ${req.sql_id} is already in use`, "SQL_ID_IN_USE");
        stream.sqls.set(req.sql_id, req.sql);
        return { type: "store_sql" };
      }
      case "close_sql":
        stream.sqls.delete(req.sql_id);
        return { type: "close_sql" };
      case "get_autocommit":
        return { type: "get_autocommit", is_autocommit: !acquire(stream).db.inTransaction };
      case "close":
        closeStream(stream);
        return { type: "close" };
      default:
        throw new HranaError(
          `unknown request type ${JSON.stringify((req as { type?: unknown })?.type)}`,
          "PROTOCOL_ERROR",
        );
    }
  }

  async function pipeline(request: Request): Promise<Response> {
    let body: { baton?: string | null; requests?: StreamRequest[] };
    try {
      body = (await request.json()) as typeof body;
    } catch {
      return json({ message: "the request body is not JSON", code: "PROTOCOL_ERROR" }, 400);
    }
    if (!body || !Array.isArray(body.requests)) {
      return json({ message: "expected {baton, requests: [...]}", code: "PROTOCOL_ERROR" }, 400);
    }
    let stream: Stream;
    if (body.baton) {
      const found = streams.get(body.baton);
      if (!found || found.closed) {
        return json(
          { message: "unknown or expired baton (the stream was closed)", code: "STREAM_EXPIRED" },
          400,
        );
      }
      if (found.busy)
        return json({ message: "the stream is busy with another request", code: "STREAM_BUSY" }, 400);
      stream = found;
      streams.delete(body.baton);
      stream.baton = null;
    } else {
      stream = {
        id: nextStreamId++,
        conn: null,
        sqls: new Map(),
        baton: null,
        busy: false,
        closed: false,
        timer: null,
      };
      live.add(stream);
    }
    stream.busy = true;
    if (stream.timer) clearTimeout(stream.timer);
    const results: StreamResult[] = [];
    try {
      for (const req of body.requests) {
        if (stream.closed) {
          results.push({ type: "error", error: { message: "the stream is closed", code: "STREAM_CLOSED" } });
          continue;
        }
        try {
          results.push({ type: "ok", response: await handle(stream, req) });
        } catch (e) {
          results.push({ type: "error", error: toProtoError(e) });
        }
      }
    } finally {
      stream.busy = false;
    }
    let baton: string | null = null;
    if (!stream.closed && !stopped) {
      baton = randomBaton();
      stream.baton = baton;
      streams.set(baton, stream);
      armIdleTimer(stream);
    } else if (!stream.closed) {
      closeStream(stream);
    }
    return json({ baton, base_url: null, results });
  }

  const server = Bun.serve({
    hostname: host,
    port: opts.port ?? 0,
    development: false,
    // Never Bun's error page, and a URL without a usable Host is a 400, not a thrown TypeError.
    error: (e) => {
      log("request failed", { error: e.message });
      return json({ message: "internal error", code: "INTERNAL_ERROR" }, 500);
    },
    async fetch(request) {
      if (!URL.canParse(request.url)) return json({ message: "missing or invalid Host header" }, 400);
      const { pathname } = new URL(request.url);
      if (request.method === "GET" && (pathname === "/health" || pathname === "/")) {
        return new Response("ok\n", { headers: { "content-type": "text/plain" } });
      }
      if (request.method === "GET" && pathname === "/version") {
        return new Response("proxytorrent-dev-hrana (Hrana 2 over HTTP, JSON; test/dev only)\n", {
          headers: { "content-type": "text/plain" },
        });
      }
      if (pathname === "/v2" || pathname.startsWith("/v2/")) {
        if (opts.authToken) {
          const header = request.headers.get("authorization") ?? "";
          const token = /^Bearer\s+(.+)$/i.exec(header)?.[1] ?? "";
          if (!(await safeEqual(token, opts.authToken))) {
            return json({ message: "missing or wrong auth token", code: "UNAUTHORIZED" }, 401);
          }
        }
        if (request.method === "GET" && pathname === "/v2") return new Response(null, { status: 200 });
        if (request.method === "POST" && pathname === "/v2/pipeline") {
          try {
            return await pipeline(request);
          } catch (e) {
            log("pipeline failed", { error: (e as Error).message });
            return json({ message: (e as Error).message, code: "INTERNAL_ERROR" }, 500);
          }
        }
        if (pathname === "/v2/pipeline") return new Response("method not allowed\n", { status: 405 });
      }
      return new Response("not found\n", { status: 404, headers: { "content-type": "text/plain" } });
    },
  });

  const port = server.port!;
  const hostForUrl = host.includes(":") ? `[${host}]` : host;
  return {
    url: `http://${hostForUrl}:${port}`,
    port,
    file,
    stats: () => ({ openStreams: live.size, busyRetries }),
    async stop() {
      if (stopped) return;
      stopped = true;
      await server.stop(true);
      for (const stream of [...live]) closeStream(stream);
      for (const conn of [...allConnections]) {
        try {
          if (conn.db.inTransaction) conn.db.exec("ROLLBACK");
          conn.db.close();
        } catch {
          /* already closed */
        }
      }
      allConnections.clear();
      idle.length = 0;
    },
  };
}
