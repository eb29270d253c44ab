/**
 * Migration 0004 (fetch_jobs.egress) on a database written by 0.2: applying it keeps every row, old
 * jobs need no particular egress (any node may take them, as before), and new jobs that need a
 * proxy are only claimed by a node with one (issue 10, item 13).
 */
import { expect, test } from "bun:test";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { migrate } from "drizzle-orm/libsql/migrator";
import { MIGRATIONS_DIR, openDatabase, runMigrations } from "../../seeder/process/database";
import { loadConfig } from "../../src/config";
import { claimJobs, markWaitingForProxy, WAITING_FOR_PROXY_MESSAGE } from "../../src/jobs/queue";
import { createRequest, getRequest } from "../../src/requests/service";
import { manualClock } from "../support/db";

/** The migrations folder as 0.2 shipped it: everything before 0004. */
async function migrationsOf02(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "pt-mig02-"));
  await cp(MIGRATIONS_DIR, dir, { recursive: true });
  const journalPath = join(dir, "meta", "_journal.json");
  const journal = JSON.parse(await readFile(journalPath, "utf8")) as { entries: { tag: string }[] };
  const keep = journal.entries.filter((e) => e.tag < "0004");
  expect(keep.length).toBe(4);
  await writeFile(journalPath, JSON.stringify({ ...journal, entries: keep }));
  return dir;
}

test("given a 0.2 database with a queued job, upgrading keeps it claimable by any node; new proxy jobs are not", async () => {
  const dir = await mkdtemp(join(tmpdir(), "pt-upgrade-"));
  const old = await migrationsOf02();
  try {
    const config = loadConfig({ STORAGE__BASE_PATH: dir });
    const clock = manualClock();
    const { client, db } = await openDatabase(config);
    await migrate(db, { migrationsFolder: old });
    await client.execute({
      sql: `INSERT INTO fetch_jobs (id, fingerprint, status, progress, url, method, max_attempts,
              next_attempt_at, created_at, updated_at)
            VALUES ('old-job', 'fp-old', 'queued', 0, 'http://o.test/old', 'GET', 3, 0, ?, ?)`,
      args: [clock.now(), clock.now()],
    });
    expect(
      (await client.execute("SELECT name FROM pragma_table_info('fetch_jobs') WHERE name = 'egress'")).rows,
    ).toEqual([]);

    await runMigrations(db);
    const cols = await client.execute(
      "SELECT name FROM pragma_table_info('fetch_jobs') WHERE name = 'egress'",
    );
    expect(cols.rows.length).toBe(1);
    const oldRow = await client.execute("SELECT egress, url FROM fetch_jobs WHERE id = 'old-job'");
    expect(oldRow.rows[0]!.egress).toBeNull();
    expect(oldRow.rows[0]!.url).toBe("http://o.test/old");

    const req = await createRequest(db, clock, {
      url: "http://o.test/new",
      method: "GET",
      headers: null,
      body: null,
      ttl: 0,
      userId: "u1",
      clientIp: null,
      requestId: null,
      maxAttempts: 3,
      egress: "proxy",
    });
    // A node without a proxy takes the old job only, and marks the new one as waiting.
    const direct = await claimJobs(db, clock, { nodeName: "direct", limit: 10, leaseMs: 30_000 });
    expect(direct.map((j) => j.id)).toEqual(["old-job"]);
    expect(await markWaitingForProxy(db, clock, {})).toBe(1);
    expect(await markWaitingForProxy(db, clock, {})).toBe(0);
    const waiting = await getRequest(db, req.id, clock.now());
    expect(waiting!.status).toBe("queued");
    expect(waiting!.errorMessage).toBe(WAITING_FOR_PROXY_MESSAGE);
    // A node with a proxy takes it, and the note goes away.
    const proxied = await claimJobs(db, clock, {
      nodeName: "proxied",
      limit: 10,
      leaseMs: 30_000,
      proxied: true,
    });
    expect(proxied.map((j) => j.id)).toEqual([req.jobId]);
    expect(proxied[0]!.errorMessage).toBeNull();
    expect((await getRequest(db, req.id, clock.now()))!.errorMessage).toBeNull();
    // The proxied node dies mid-fetch: its lease expires; a node without a proxy still does not
    // take the job, and puts it back in the queue saying why it waits.
    expect(await markWaitingForProxy(db, clock, {})).toBe(0);
    clock.advance(31_000);
    const again = await claimJobs(db, clock, { nodeName: "direct", limit: 10, leaseMs: 30_000 });
    expect(again.map((j) => j.id)).toEqual(["old-job"]); // its own expired lease; not the proxy job
    expect(await markWaitingForProxy(db, clock, {})).toBe(1);
    const requeued = await getRequest(db, req.id, clock.now());
    expect(requeued!.status).toBe("queued");
    expect(requeued!.errorMessage).toBe(WAITING_FOR_PROXY_MESSAGE);
    client.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
    await rm(old, { recursive: true, force: true });
  }
});
