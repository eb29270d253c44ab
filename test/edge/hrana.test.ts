/**
 * The dev Hrana server (seeder/dev/hrana/server.ts) as @libsql/client's http mode, drizzle and the
 * project's own `migrate` command see it: statements, batches, interactive transactions, errors,
 * and the same rows visible through a direct `file:` client. (Test/dev support only; production
 * talks to Turso or sqld.)
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Client, createClient as createFileClient, LibsqlError } from "@libsql/client";
import { createClient } from "@libsql/client/http";
import { type HranaServer, startHranaServer } from "../../seeder/dev/hrana/server";
import { openDatabase, runMigrations } from "../../seeder/process/database";
import { loadConfig } from "../../src/config";
import { until } from "../support/poll";
import { raw } from "../support/raw-http";

const dir = mkdtempSync(join(tmpdir(), "pt-hrana-"));
const file = join(dir, "test.db");
let server: HranaServer;
let http: Client;
let direct: Client;

beforeAll(async () => {
  server = await startHranaServer({ file: `file:${file}`, port: 0 });
  http = createClient({ url: server.url });
  direct = createFileClient({ url: `file:${file}` });
  await http.execute(
    "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, price REAL, data BLOB, note TEXT)",
  );
});

afterAll(async () => {
  http?.close();
  direct?.close();
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("execute", () => {
  test("given a table, when a row with every value type is inserted and read back, then the values and counts round-trip", async () => {
    // when
    const ins = await http.execute({
      sql: "INSERT INTO items (name, price, data, note) VALUES (?, ?, ?, ?)",
      args: ["widget", 2.5, new Uint8Array([0, 1, 254, 255]), null],
    });
    const sel = await http.execute({
      sql: "SELECT id, name, price, data, note FROM items WHERE name = :name",
      args: { name: "widget" },
    });
    // then
    expect(ins.rowsAffected).toBe(1);
    expect(ins.lastInsertRowid).toBeDefined();
    expect(sel.columns).toEqual(["id", "name", "price", "data", "note"]);
    expect(sel.columnTypes).toEqual(["INTEGER", "TEXT", "REAL", "BLOB", "TEXT"]);
    const row = sel.rows[0]!;
    expect(row.id).toBe(Number(ins.lastInsertRowid));
    expect(row.name).toBe("widget");
    expect(row.price).toBe(2.5);
    expect([...new Uint8Array(row.data as ArrayBuffer)]).toEqual([0, 1, 254, 255]);
    expect(row.note).toBeNull();
  });

  test("given 64-bit integers, when they round-trip in bigint mode, then no precision is lost", async () => {
    // given
    const big = createClient({ url: server.url, intMode: "bigint" });
    try {
      // when
      const r = await big.execute({ sql: "SELECT ? AS v", args: [9007199254740993n] });
      // then
      expect(r.rows[0]!.v).toBe(9007199254740993n);
    } finally {
      big.close();
    }
  });

  test("given an INSERT … RETURNING, when it runs, then rows and the affected count are both reported", async () => {
    const r = await http.execute({
      sql: "INSERT INTO items (name) VALUES (?) RETURNING id, name",
      args: ["returned"],
    });
    expect(r.rows[0]!.name).toBe("returned");
    expect(r.rowsAffected).toBe(1);
  });

  test("given a row written over HTTP, when the file is read directly, then the row is there", async () => {
    await http.execute({ sql: "INSERT INTO items (name) VALUES (?)", args: ["seen-directly"] });
    const r = await direct.execute({
      sql: "SELECT count(*) AS n FROM items WHERE name = ?",
      args: ["seen-directly"],
    });
    expect(Number(r.rows[0]!.n)).toBe(1);
  });
});

describe("errors surface as errors", () => {
  test("given bad SQL, when executed, then a LibsqlError names the SQLite problem", async () => {
    const err = await http.execute("SELEC 1").catch((e) => e);
    expect(err).toBeInstanceOf(LibsqlError);
    expect(String(err.message)).toContain("syntax error");
    expect(err.code).toBe("SQLITE_ERROR");
  });

  test("given a unique column, when a duplicate is inserted, then the constraint error carries its code", async () => {
    await http.execute({ sql: "INSERT INTO items (name) VALUES (?)", args: ["dup"] });
    const err = await http
      .execute({ sql: "INSERT INTO items (name) VALUES (?)", args: ["dup"] })
      .catch((e) => e);
    expect(err).toBeInstanceOf(LibsqlError);
    expect(err.code).toBe("SQLITE_CONSTRAINT_UNIQUE");
  });

  test("given a server with an auth token, when a client has none or a wrong one, then it is refused; with it, it works", async () => {
    // given
    const guarded = await startHranaServer({ file, port: 0, authToken: "s3cret-token" });
    const anonymous = createClient({ url: guarded.url });
    const wrong = createClient({ url: guarded.url, authToken: "nope" });
    const right = createClient({ url: guarded.url, authToken: "s3cret-token" });
    try {
      // when / then
      const e1 = await anonymous.execute("SELECT 1").catch((e) => e);
      const e2 = await wrong.execute("SELECT 1").catch((e) => e);
      expect(e1).toBeInstanceOf(LibsqlError);
      expect(e1.code).toBe("UNAUTHORIZED");
      expect(e2).toBeInstanceOf(LibsqlError);
      expect((await right.execute("SELECT 1 AS one")).rows[0]!.one).toBe(1);
    } finally {
      anonymous.close();
      wrong.close();
      right.close();
      await guarded.stop();
    }
  });

  test("given a non-loopback host, when the server is asked to bind it, then it refuses", async () => {
    await expect(startHranaServer({ file, host: "0.0.0.0" })).rejects.toThrow(/loopback only/);
  });
});

describe("batch", () => {
  test("given several statements, when batched, then each result comes back in order and all are committed", async () => {
    const rs = await http.batch(
      [
        { sql: "INSERT INTO items (name, price) VALUES (?, ?)", args: ["b1", 1] },
        { sql: "INSERT INTO items (name, price) VALUES (?, ?)", args: ["b2", 2] },
        "SELECT sum(price) AS total FROM items WHERE name IN ('b1', 'b2')",
      ],
      "write",
    );
    expect(rs).toHaveLength(3);
    expect(rs[0]!.rowsAffected).toBe(1);
    expect(rs[2]!.rows[0]!.total).toBe(3);
  });

  test("given a batch whose second statement fails, when run, then it throws and nothing of it is kept", async () => {
    const err = await http
      .batch(
        [
          { sql: "INSERT INTO items (name) VALUES (?)", args: ["atomic-1"] },
          { sql: "INSERT INTO items (name) VALUES (?)", args: ["atomic-1"] },
        ],
        "write",
      )
      .catch((e) => e);
    expect(err).toBeInstanceOf(LibsqlError);
    const r = await direct.execute({
      sql: "SELECT count(*) AS n FROM items WHERE name = ?",
      args: ["atomic-1"],
    });
    expect(Number(r.rows[0]!.n)).toBe(0);
  });

  test("given a multi-statement string, when run with executeMultiple, then every statement runs", async () => {
    await http.executeMultiple(
      "CREATE TABLE IF NOT EXISTS seq (x INTEGER); INSERT INTO seq VALUES (1); INSERT INTO seq VALUES (2);",
    );
    const r = await http.execute("SELECT count(*) AS n FROM seq");
    expect(r.rows[0]!.n).toBe(2);
  });
});

describe("interactive transactions (batons)", () => {
  test("given a write transaction, when it inserts, then others see nothing until commit and everything after", async () => {
    // given
    const tx = await http.transaction("write");
    // when
    await tx.execute({ sql: "INSERT INTO items (name) VALUES (?)", args: ["tx-commit"] });
    const inside = await tx.execute({
      sql: "SELECT count(*) AS n FROM items WHERE name = ?",
      args: ["tx-commit"],
    });
    const outsideBefore = await direct.execute({
      sql: "SELECT count(*) AS n FROM items WHERE name = ?",
      args: ["tx-commit"],
    });
    await tx.commit();
    const outsideAfter = await direct.execute({
      sql: "SELECT count(*) AS n FROM items WHERE name = ?",
      args: ["tx-commit"],
    });
    // then
    expect(inside.rows[0]!.n).toBe(1);
    expect(Number(outsideBefore.rows[0]!.n)).toBe(0);
    expect(Number(outsideAfter.rows[0]!.n)).toBe(1);
    expect(server.stats().openStreams).toBe(0);
  });

  test("given a transaction, when it rolls back, then its writes are gone", async () => {
    const tx = await http.transaction("write");
    await tx.execute({ sql: "INSERT INTO items (name) VALUES (?)", args: ["tx-rollback"] });
    await tx.rollback();
    const r = await http.execute({
      sql: "SELECT count(*) AS n FROM items WHERE name = ?",
      args: ["tx-rollback"],
    });
    expect(r.rows[0]!.n).toBe(0);
  });

  test("given one open write transaction, when a second one starts, then it waits for the first instead of dead-locking", async () => {
    // given
    const first = await http.transaction("write");
    await first.execute({ sql: "INSERT INTO items (name) VALUES (?)", args: ["lock-1"] });
    const retriesBefore = server.stats().busyRetries;
    // when: the second BEGIN IMMEDIATE meets the lock and is retried (without blocking the server)…
    const second = (async () => {
      const tx = await http.transaction("write");
      await tx.execute({ sql: "INSERT INTO items (name) VALUES (?)", args: ["lock-2"] });
      await tx.commit();
    })();
    await until(() => server.stats().busyRetries > retriesBefore, "a busy retry", 10_000, 5);
    // …so the first can still commit, which lets the second through
    await first.commit();
    await second;
    // then
    const r = await direct.execute("SELECT count(*) AS n FROM items WHERE name IN ('lock-1', 'lock-2')");
    expect(Number(r.rows[0]!.n)).toBe(2);
  });

  test("given a stream that was closed, when its old baton is reused, then the server answers an error", async () => {
    // given: a stream left open by a pipeline without `close`
    const open = await fetch(`${server.url}/v2/pipeline`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ requests: [{ type: "get_autocommit" }] }),
    });
    const { baton, results } = (await open.json()) as {
      baton: string;
      results: { response: { is_autocommit: boolean } }[];
    };
    expect(results[0]!.response.is_autocommit).toBe(true);
    const close = await fetch(`${server.url}/v2/pipeline`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ baton, requests: [{ type: "close" }] }),
    });
    expect(((await close.json()) as { baton: string | null }).baton).toBeNull();
    // when
    const again = await fetch(`${server.url}/v2/pipeline`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ baton, requests: [{ type: "close" }] }),
    });
    // then
    expect(again.status).toBe(400);
    expect(((await again.json()) as { code: string }).code).toBe("STREAM_EXPIRED");
  });
});

describe("abandoned streams", () => {
  test("given a client that opens a write transaction and disappears, when the stream idles out, then its writes are rolled back and the lock is freed", async () => {
    // given: a short idle limit and a transaction left open (no `close` in the pipeline)
    const short = await startHranaServer({ file, port: 0, streamIdleMs: 50 });
    try {
      const res = await fetch(`${short.url}/v2/pipeline`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          requests: [
            { type: "execute", stmt: { sql: "BEGIN IMMEDIATE" } },
            { type: "execute", stmt: { sql: "INSERT INTO items (name) VALUES ('abandoned')" } },
          ],
        }),
      });
      const body = (await res.json()) as { baton: string | null; results: { type: string }[] };
      expect(body.results.map((r) => r.type)).toEqual(["ok", "ok"]);
      expect(body.baton).toBeString();
      // when
      await until(() => short.stats().openStreams === 0, "the idle stream to be closed", 10_000, 10);
      // then
      const gone = await direct.execute("SELECT count(*) AS n FROM items WHERE name = 'abandoned'");
      expect(Number(gone.rows[0]!.n)).toBe(0);
      await direct.execute("INSERT INTO items (name) VALUES ('after-abandoned')");
    } finally {
      await short.stop();
    }
  });
});

describe("migrations over HTTP", () => {
  test("given an empty database behind the server, when the project's migrations run against its URL, then the schema is created", async () => {
    // given
    const emptyFile = join(dir, "fresh.db");
    const fresh = await startHranaServer({ file: emptyFile, port: 0, authToken: "migrate-token" });
    try {
      // when: the two calls `proxytorrent migrate` makes, with the URL and token docs/edge.md uses for Turso
      const config = loadConfig({ DATABASE__DATABASE_URL: fresh.url, DATABASE__AUTH_TOKEN: "migrate-token" });
      const opened = await openDatabase(config);
      try {
        await runMigrations(opened.db);
        await runMigrations(opened.db); // a second run is a no-op
      } finally {
        opened.client.close();
      }
      // then
      const check = createFileClient({ url: `file:${emptyFile}` });
      try {
        const tables = await check.execute(
          "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
        );
        const names = tables.rows.map((r) => r.name);
        expect(names).toContain("fetch_jobs");
        expect(names).toContain("fetch_requests");
      } finally {
        check.close();
      }
    } finally {
      await fresh.stop();
    }
  });
});

describe("bad requests", () => {
  test("given no Host header (HTTP/1.0), when any path is asked, then it is a short 400, never an error page", async () => {
    const a = await raw(server.port, "GET /v2 HTTP/1.0\r\n\r\n");
    expect(a.status).toBe(400);
    expect(a.body.length).toBeLessThan(200);
    expect(a.body).not.toContain("<html");
    expect(a.body).not.toContain(".ts");
  });
});
