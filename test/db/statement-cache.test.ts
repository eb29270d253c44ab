/**
 * The per-connection statement cache that `openDatabase` gives @libsql/client's file driver
 * (seeder/patches/libsql-statement-cache.ts): results must be exactly what an uncached client returns, under concurrent
 * queries over several pooled connections, interactive transactions, errors, stale bindings and
 * schema changes (ours and another connection's).
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { type Client, LibsqlError } from "@libsql/client";
import Database from "libsql";
import { cacheStatements, statementCacheStats } from "../../seeder/patches/libsql-statement-cache";
import { openDatabase, runMigrations } from "../../seeder/process/database";
import { loadConfig } from "../../src/config";
import { tmpDir } from "../support/clients";
import { tempDatabase } from "../support/db";

type Proto = { prepare(this: object, sql: string): unknown };
const proto = Database.prototype as unknown as Proto;
const originalPrepare = proto.prepare;
/** Native prepares per SQL text, counted on libsql's prototype (what a cache miss calls). */
const prepares = new Map<string, number>();
proto.prepare = function countingPrepare(this: object, sql: string) {
  prepares.set(sql, (prepares.get(sql) ?? 0) + 1);
  return originalPrepare.call(this, sql);
};
const prepared = (sql: string) => prepares.get(sql) ?? 0;

let dir: string;
const clients: Client[] = [];

async function open(name: string): Promise<{ client: Client; path: string }> {
  const path = join(dir, name);
  const { client } = await openDatabase(loadConfig({ DATABASE__DATABASE_URL: `file:${path}` }));
  clients.push(client);
  return { client, path };
}

beforeAll(async () => {
  dir = await tmpDir("pt-stmt-cache-");
});

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

afterAll(async () => {
  proto.prepare = originalPrepare;
  await rm(dir, { recursive: true, force: true });
});

const row = (rs: { rows: unknown[] }, i = 0) => ({ ...(rs.rows[i] as Record<string, unknown>) });

describe("given a client from openDatabase on a file", () => {
  test("when the same statement runs again, then it is prepared once and returns fresh results", async () => {
    const { client } = await open("hit.db");
    await client.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL)");
    const insert = "INSERT INTO t (id, name) VALUES (?, ?)";
    const select = "SELECT id, name FROM t WHERE id = ?";
    for (let i = 1; i <= 5; i++) await client.execute({ sql: insert, args: [i, `n${i}`] });
    for (let i = 1; i <= 5; i++) {
      const rs = await client.execute({ sql: select, args: [i] });
      expect(rs.columns).toEqual(["id", "name"]);
      expect(row(rs)).toEqual({ id: i, name: `n${i}` });
    }
    expect(prepared(insert)).toBe(1);
    expect(prepared(select)).toBe(1);
    const missing = await client.execute({ sql: select, args: [99] });
    expect(missing.rows).toEqual([]);
    expect(missing.columns).toEqual(["id", "name"]);
    const upd = await client.execute({ sql: "UPDATE t SET name = ? WHERE id > ?", args: ["x", 3] });
    expect(upd.rowsAffected).toBe(2);
    const again = await client.execute({ sql: "UPDATE t SET name = ? WHERE id > ?", args: ["y", 4] });
    expect(again.rowsAffected).toBe(1);
    const ins = await client.execute({ sql: insert, args: [6, "six"] });
    expect(ins.lastInsertRowid).toBe(6n);
  });

  test("when a later call passes fewer positional arguments, then the missing ones are NULL, not the previous call's", async () => {
    const { client } = await open("bindings.db");
    const sql = "SELECT ?1 AS a, ?2 AS b";
    expect(row(await client.execute({ sql, args: [1, "secret"] }))).toEqual({ a: 1, b: "secret" });
    expect(row(await client.execute({ sql, args: [3] }))).toEqual({ a: 3, b: null });
    expect(row(await client.execute({ sql, args: [] }))).toEqual({ a: null, b: null });
    expect(row(await client.execute({ sql, args: [4, 5] }))).toEqual({ a: 4, b: 5 });
    const named = "SELECT :x AS x, :y AS y";
    expect(row(await client.execute({ sql: named, args: { x: 1, y: 2 } }))).toEqual({ x: 1, y: 2 });
    expect(row(await client.execute({ sql: named, args: { x: 7 } }))).toEqual({ x: 7, y: null });
    expect(prepared(sql)).toBe(1);
  });

  test("when 300 queries run at once over several pooled connections, then each gets its own result", async () => {
    const { client } = await open("concurrent.db");
    await client.execute("CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT NOT NULL)");
    await client.batch(
      Array.from({ length: 100 }, (_, k) => ({
        sql: "INSERT INTO kv (k, v) VALUES (?, ?)",
        args: [k, `v${k}`],
      })),
    );
    const before = prepared("SELECT k, v FROM kv WHERE k = ?");
    const results = await Promise.all(
      Array.from({ length: 300 }, (_, i) => {
        const k = i % 100;
        if (i % 3 === 0) return client.execute({ sql: "SELECT k, v FROM kv WHERE k = ?", args: [k] });
        if (i % 3 === 1) return client.execute({ sql: "SELECT ? AS echo, ? AS twice", args: [i, i * 2] });
        return client.execute({ sql: "UPDATE kv SET v = v WHERE k = ?", args: [k] });
      }),
    );
    results.forEach((rs, i) => {
      if (i % 3 === 0) expect(row(rs)).toEqual({ k: i % 100, v: `v${i % 100}` });
      else if (i % 3 === 1) expect(row(rs)).toEqual({ echo: i, twice: i * 2 });
      else expect(rs.rowsAffected).toBe(1);
    });
    // Issued in one tick, the executes borrowed more than one connection, each with its own cache.
    const misses = prepared("SELECT k, v FROM kv WHERE k = ?") - before;
    expect(misses).toBeGreaterThan(1);
    expect(misses).toBeLessThan(100);
  });

  test("when an interactive transaction holds a connection, then it sees its own writes and the rest of the client does not until commit", async () => {
    const { client } = await open("tx.db");
    await client.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL)");
    const select = "SELECT count(*) AS n FROM t WHERE name = ?";
    const insert = "INSERT INTO t (name) VALUES (?)";
    expect(row(await client.execute({ sql: select, args: ["a"] }))).toEqual({ n: 0 });

    const tx = await client.transaction("write");
    await tx.execute({ sql: insert, args: ["a"] });
    expect(row(await tx.execute({ sql: select, args: ["a"] }))).toEqual({ n: 1 });
    // Same SQL outside the transaction, on another connection: not visible yet.
    expect(row(await client.execute({ sql: select, args: ["a"] }))).toEqual({ n: 0 });
    await tx.rollback();
    expect(row(await client.execute({ sql: select, args: ["a"] }))).toEqual({ n: 0 });

    const tx2 = await client.transaction("write");
    await tx2.execute({ sql: insert, args: ["a"] });
    await tx2.execute({ sql: insert, args: ["a"] });
    await tx2.commit();
    expect(row(await client.execute({ sql: select, args: ["a"] }))).toEqual({ n: 2 });

    // A failing statement inside a batch rolls the whole batch back.
    await expect(
      client.batch([
        { sql: insert, args: ["b"] },
        { sql: "INSERT INTO t (id, name) VALUES (1, 'dup')", args: [] },
      ]),
    ).rejects.toThrow(/UNIQUE/);
    expect(row(await client.execute({ sql: select, args: ["b"] }))).toEqual({ n: 0 });
  });

  test("when statements fail, then the error is the same and the next call works", async () => {
    const { client } = await open("errors.db");
    await client.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)");
    const insert = "INSERT INTO t (name) VALUES (?) RETURNING id";
    expect(row(await client.execute({ sql: insert, args: ["a"] }))).toEqual({ id: 1 });
    for (let i = 0; i < 3; i++) {
      const err = await client.execute({ sql: insert, args: ["a"] }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(LibsqlError);
      expect((err as LibsqlError).code).toBe("SQLITE_CONSTRAINT");
    }
    expect(row(await client.execute({ sql: insert, args: ["b"] }))).toEqual({ id: 2 });
    const syntax = await client.execute("SELEC nothing").catch((e: unknown) => e);
    expect(syntax).toBeInstanceOf(LibsqlError);
    expect(await client.execute("SELECT name FROM t ORDER BY id").then((rs) => rs.rows.length)).toBe(2);
    const update = "UPDATE t SET name = ? WHERE id = 1";
    await expect(client.execute({ sql: update, args: [null] })).rejects.toThrow(/NOT NULL/);
    expect((await client.execute({ sql: update, args: ["c"] })).rowsAffected).toBe(1);
  });

  test("when a migration adds a column, then cached statements and the new column both work", async () => {
    const { client } = await open("migrate.db");
    await client.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL)");
    await client.execute({ sql: "INSERT INTO t (id, name) VALUES (?, ?)", args: [1, "one"] });
    const named = "SELECT id, name FROM t WHERE id = ?";
    expect(row(await client.execute({ sql: named, args: [1] }))).toEqual({ id: 1, name: "one" });
    expect((await client.execute("SELECT * FROM t")).columns).toEqual(["id", "name"]);

    await client.migrate([{ sql: "ALTER TABLE t ADD COLUMN extra TEXT NOT NULL DEFAULT 'x'", args: [] }]);

    expect(row(await client.execute({ sql: named, args: [1] }))).toEqual({ id: 1, name: "one" });
    expect(row(await client.execute("SELECT * FROM t"))).toEqual({ id: 1, name: "one", extra: "x" });
    const withExtra = "SELECT id, extra FROM t WHERE id = ?";
    expect(row(await client.execute({ sql: withExtra, args: [1] }))).toEqual({ id: 1, extra: "x" });
  });
});

describe("given the project's migrations run through a cached client", () => {
  test("then the schema is complete and a second client on the same file reads it", async () => {
    const path = join(dir, "project.db");
    const url = `file:${path}`;
    const first = await openDatabase(loadConfig({ DATABASE__DATABASE_URL: url }));
    clients.push(first.client);
    await runMigrations(first.db);
    const tables = "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?";
    expect((await first.client.execute({ sql: tables, args: ["fetch_jobs"] })).rows.length).toBe(1);
    const second = await openDatabase(loadConfig({ DATABASE__DATABASE_URL: url }));
    clients.push(second.client);
    await runMigrations(second.db); // nothing left to apply
    expect((await second.client.execute({ sql: tables, args: ["fetch_requests"] })).rows.length).toBe(1);
  });
});

describe("given another connection (another process) changes the schema under cached statements", () => {
  test("then cached statements are re-prepared by SQLite and `*` queries see the new columns", async () => {
    const { client, path } = await open("foreign.db");
    await client.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL)");
    await client.execute("INSERT INTO t (id, name) VALUES (1, 'one')");
    const named = "SELECT id, name FROM t WHERE id = ?";
    const star = "SELECT * FROM t WHERE id = ?";
    expect(row(await client.execute({ sql: named, args: [1] }))).toEqual({ id: 1, name: "one" });
    expect(row(await client.execute({ sql: star, args: [1] }))).toEqual({ id: 1, name: "one" });

    const other = new Database(path); // not ours: no cache, no generation bump
    other.exec("ALTER TABLE t ADD COLUMN extra INTEGER NOT NULL DEFAULT 7");
    expect(row(await client.execute({ sql: named, args: [1] }))).toEqual({ id: 1, name: "one" });
    expect(row(await client.execute({ sql: star, args: [1] }))).toEqual({ id: 1, name: "one", extra: 7 });

    // Rebuilt table (what a drizzle migration does to change a column): same names, new order.
    other.exec(
      "CREATE TABLE t2 (name TEXT NOT NULL, id INTEGER PRIMARY KEY); INSERT INTO t2 SELECT name, id FROM t; DROP TABLE t; ALTER TABLE t2 RENAME TO t",
    );
    expect(row(await client.execute({ sql: named, args: [1] }))).toEqual({ id: 1, name: "one" });
    // A column the cached statement reads disappears: the error a fresh prepare would give.
    other.exec("ALTER TABLE t RENAME COLUMN name TO label");
    await expect(client.execute({ sql: named, args: [1] })).rejects.toThrow(/name/);
    other.close();
  });
});

describe("given a raw libsql connection with a statement cache", () => {
  test("when a statement's iterator is still open, then the same SQL gets another statement", () => {
    const db = new Database(":memory:");
    cacheStatements(db as never);
    db.exec("CREATE TABLE t (a INTEGER)");
    for (let i = 0; i < 5; i++) db.exec(`INSERT INTO t VALUES (${i})`);
    const sql = "SELECT a FROM t ORDER BY a";
    const cached = db.prepare(sql);
    expect(cached.all()).toHaveLength(5); // ran to completion: now idle in the cache
    const first = db.prepare(sql).raw(true);
    expect(first).toBe(cached);
    const iter = first.iterate() as Iterator<unknown[]>;
    expect(iter.next().value).toEqual([0]);
    const second = db.prepare(sql).raw(true);
    expect(second).not.toBe(first);
    expect(second.all()).toHaveLength(5);
    expect(iter.next().value).toEqual([1]); // the open cursor was not reset by the other statement
    // `second` ran to completion, so it is what the cache hands out next; `first` never comes back.
    expect(db.prepare(sql)).toBe(second);
    expect(db.prepare(sql)).not.toBe(first);
    db.close();
  });

  test("when a statement is handed out, then a second prepare before it finishes gets a different one", () => {
    const db = new Database(":memory:");
    cacheStatements(db as never);
    const sql = "SELECT 1 AS one";
    const idle = db.prepare(sql);
    idle.all();
    const a = db.prepare(sql);
    expect(a).toBe(idle);
    const b = db.prepare(sql);
    expect(b).not.toBe(a);
    expect(a.all()).toEqual([{ one: 1 }]);
    expect(b.all()).toEqual([{ one: 1 }]);
    const c = db.prepare(sql);
    expect(c === a || c === b).toBe(true);
    db.close();
  });

  test("when more distinct statements run than the cache holds, then the least recently used are dropped", () => {
    const db = new Database(":memory:");
    cacheStatements(db as never, 8);
    const sqls = Array.from({ length: 12 }, (_, i) => `SELECT ${i} AS v`);
    for (const sql of sqls) db.prepare(sql).all();
    expect(statementCacheStats(db)!.idle).toBe(8);
    const before = statementCacheStats(db)!.prepared;
    for (const sql of sqls.slice(4)) db.prepare(sql).all(); // the 8 most recent: all hits
    expect(statementCacheStats(db)!.prepared).toBe(before);
    db.prepare(sqls[0]!).all(); // evicted: prepared again
    expect(statementCacheStats(db)!.prepared).toBe(before + 1);
    db.close();
  });

  test("when DDL or exec runs, then every cache is emptied and DDL itself is not cached", () => {
    const db = new Database(":memory:");
    const other = new Database(":memory:");
    cacheStatements(db as never);
    cacheStatements(other as never);
    db.prepare("SELECT 1 AS v").all();
    other.prepare("SELECT 2 AS v").all();
    expect(statementCacheStats(db)!.idle).toBe(1);
    db.prepare("CREATE TABLE t (a INTEGER)").run();
    expect(statementCacheStats(db)!.idle).toBe(0);
    expect(statementCacheStats(other)!.idle).toBe(0);
    other.prepare("SELECT 2 AS v").all();
    other.exec("CREATE TABLE u (a INTEGER)");
    expect(statementCacheStats(other)!.idle).toBe(0);
    const beforePragma = statementCacheStats(db)!.prepared;
    db.prepare("PRAGMA user_version").all();
    db.prepare("PRAGMA user_version").all();
    expect(statementCacheStats(db)!.prepared).toBe(beforePragma + 2);
    db.close();
    other.close();
  });
});

describe("per-connection settings", () => {
  test("every pooled connection commits with synchronous=NORMAL, not only the first", async () => {
    const t = await tempDatabase();
    // Issued together, these borrow several pooled connections at once.
    const modes = await Promise.all(
      Array.from({ length: 6 }, () =>
        t.client.execute("PRAGMA synchronous").then((r) => Number(r.rows[0]![0])),
      ),
    );
    expect(modes).toEqual([1, 1, 1, 1, 1, 1]);
    t.client.close();
  });
});
