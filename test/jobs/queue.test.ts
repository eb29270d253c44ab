/**
 * The job queue on a real libSQL file: atomic claims across processes, lease fencing, retries.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { eq } from "drizzle-orm";
import { fetchJobs } from "../../src/db/schema";
import { advance, claimJobs, completeJob, failJob, heartbeat } from "../../src/jobs/queue";
import { cancelRequest, createRequest, getRequest } from "../../src/requests/service";
import { manualClock, tempDatabase } from "../support/db";
import { until } from "../support/poll";

const base = {
  method: "GET",
  headers: null,
  body: null,
  ttl: 3600,
  userId: "u1",
  clientIp: null,
  requestId: null,
  maxAttempts: 3,
};

describe("claiming", () => {
  test("two processes racing over one database file never claim the same job", async () => {
    const t = await tempDatabase();
    const clock = manualClock(Date.now());
    for (let i = 0; i < 60; i++) await createRequest(t.db, clock, { ...base, url: `http://o.test/${i}` });
    const worker = join(import.meta.dir, "claim-worker.ts");
    const run = (name: string) => {
      const p = Bun.spawn([process.execPath, worker, t.url, name], {
        stdin: "pipe",
        stdout: "pipe",
        stderr: "inherit",
      });
      const out = { text: "" };
      const done = (async () => {
        const dec = new TextDecoder();
        const reader = p.stdout.getReader();
        for (let r = await reader.read(); !r.done; r = await reader.read())
          out.text += dec.decode(r.value, { stream: true });
      })();
      return { p, out, done };
    };
    const procs = [run("a"), run("b")];
    // both have opened the database; then both start at once
    await until(() => procs.every((r) => r.out.text.startsWith("ready\n")), "both claim workers to be ready");
    for (const { p } of procs) {
      p.stdin.write("go\n");
      p.stdin.end();
    }
    await Promise.all(procs.map((r) => r.done));
    const outputs = procs.map((r) => r.out.text.slice("ready\n".length));
    const ids = outputs.flatMap((o) => o.split("\n").filter(Boolean));
    expect(ids.length).toBe(60);
    expect(new Set(ids).size).toBe(60);
    // both really competed (each won some), otherwise this test proves nothing
    expect(outputs.every((o) => o.trim().length > 0)).toBe(true);
    t.client.close();
  });

  test("an expired lease is claimed again with a new token; the old holder's writes are refused", async () => {
    const t = await tempDatabase();
    const clock = manualClock();
    await createRequest(t.db, clock, { ...base, url: "http://o.test/lease" });
    const [first] = await claimJobs(t.db, clock, { nodeName: "a", limit: 5, leaseMs: 30_000 });
    expect(first).toBeDefined();
    expect(await claimJobs(t.db, clock, { nodeName: "b", limit: 5, leaseMs: 30_000 })).toEqual([]);
    clock.advance(31_000);
    const [second] = await claimJobs(t.db, clock, { nodeName: "b", limit: 5, leaseMs: 30_000 });
    expect(second!.id).toBe(first!.id);
    expect(second!.leaseToken).not.toBe(first!.leaseToken);
    expect(second!.attempts).toBe(2);
    expect(second!.errorCode).toBe("lease_expired");
    const stale = { id: first!.id, leaseToken: first!.leaseToken! };
    expect(await advance(t.db, clock, stale, { status: "packaging", progress: 50 })).toBe(false);
    expect(await heartbeat(t.db, clock, stale, 30_000)).toBeNull();
    expect(await completeJob(t.db, clock, stale, "a")).toBeNull();
    const fresh = { id: second!.id, leaseToken: second!.leaseToken! };
    expect(await advance(t.db, clock, fresh, { status: "packaging", progress: 50 })).toBe(true);
    t.client.close();
  });
});

describe("routing", () => {
  test("a job asking for a region or pool is claimed only by a matching node; unrouted jobs by anyone", async () => {
    const t = await tempDatabase();
    const clock = manualClock();
    const eu = await createRequest(t.db, clock, { ...base, url: "http://o.test/r", region: "eu" });
    const pool = await createRequest(t.db, clock, { ...base, url: "http://o.test/r", pool: "residential" });
    const any = await createRequest(t.db, clock, { ...base, url: "http://o.test/r" });
    expect(new Set([eu.jobId, pool.jobId, any.jobId]).size).toBe(3); // routing is part of the fetch's identity
    const claim = (region: string | null, poolName: string | null) =>
      claimJobs(t.db, clock, { nodeName: "n", limit: 10, leaseMs: 30_000, region, pool: poolName });
    expect((await claim("us", null)).map((j) => j.id)).toEqual([any.jobId]);
    expect(await claim(null, null)).toEqual([]);
    expect((await claim("eu", null)).map((j) => j.id)).toEqual([eu.jobId]);
    expect((await claim(null, "residential")).map((j) => j.id)).toEqual([pool.jobId]);
    t.client.close();
  });
});

describe("failures", () => {
  test("transient failures retry with backoff, then end in error with a readable message", async () => {
    const t = await tempDatabase();
    const clock = manualClock();
    const req = await createRequest(t.db, clock, { ...base, url: "http://o.test/flaky" });
    for (let attempt = 1; attempt <= 3; attempt++) {
      const [job] = await claimJobs(t.db, clock, { nodeName: "a", limit: 1, leaseMs: 30_000 });
      expect(job?.attempts).toBe(attempt);
      const outcome = await failJob(
        t.db,
        clock,
        { id: job!.id, leaseToken: job!.leaseToken!, attempts: job!.attempts, maxAttempts: 3 },
        {
          code: "network",
          message: "Connection reset by the origin",
          transient: true,
        },
      );
      expect(outcome).toBe(attempt < 3 ? "queued" : "error");
      // not claimable before its backoff has passed
      if (attempt < 3)
        expect(await claimJobs(t.db, clock, { nodeName: "a", limit: 1, leaseMs: 30_000 })).toEqual([]);
      clock.advance(10 * 60_000);
    }
    const view = await getRequest(t.db, req.id, clock.now());
    expect(view!.status).toBe("error");
    expect(view!.errorMessage).toBe("Connection reset by the origin (gave up after 3 attempts)");
    t.client.close();
  });

  test("a permanent failure ends in error at once", async () => {
    const t = await tempDatabase();
    const clock = manualClock();
    const req = await createRequest(t.db, clock, { ...base, url: "http://o.test/404" });
    const [job] = await claimJobs(t.db, clock, { nodeName: "a", limit: 1, leaseMs: 30_000 });
    await failJob(
      t.db,
      clock,
      { id: job!.id, leaseToken: job!.leaseToken!, attempts: 1, maxAttempts: 3 },
      {
        code: "http_status",
        message: "Origin answered 404 Not Found",
        transient: false,
      },
    );
    expect((await getRequest(t.db, req.id, clock.now()))!.errorMessage).toBe("Origin answered 404 Not Found");
    t.client.close();
  });
});

describe("sharing and cancelling", () => {
  test("identical requests share one job; a ready one within ttl is reused, ttl 0 fetches again", async () => {
    const t = await tempDatabase();
    const clock = manualClock();
    const a = await createRequest(t.db, clock, { ...base, url: "http://o.test/same" });
    const b = await createRequest(t.db, clock, { ...base, url: "http://o.test/same", requestId: "r2" });
    const c = await createRequest(t.db, clock, { ...base, url: "http://o.test/same", method: "POST" });
    expect(b.jobId).toBe(a.jobId);
    expect(b.source).toBe("inflight");
    expect(c.jobId).not.toBe(a.jobId);
    // another tenant shares nothing unless CACHE__SHARE_ACROSS_TENANTS is on
    const other = await createRequest(t.db, clock, { ...base, url: "http://o.test/same", userId: "u2" });
    expect(other.jobId).not.toBe(a.jobId);
    const shared = { ...base, url: "http://o.test/shared", shareAcrossTenants: true };
    const s1 = await createRequest(t.db, clock, shared);
    const s2 = await createRequest(t.db, clock, { ...shared, userId: "u2" });
    expect(s2.jobId).toBe(s1.jobId);
    const [job] = (await claimJobs(t.db, clock, { nodeName: "n", limit: 10, leaseMs: 30_000 })).filter(
      (j) => j.id === a.jobId,
    );
    expect(await completeJob(t.db, clock, { id: job!.id, leaseToken: job!.leaseToken! }, "n")).toBe("ready");
    clock.advance(1000);
    const d = await createRequest(t.db, clock, { ...base, url: "http://o.test/same", ttl: 60 });
    expect(d.jobId).toBe(a.jobId);
    expect(d.source).toBe("cache");
    expect(d.status).toBe("ready");
    const e = await createRequest(t.db, clock, { ...base, url: "http://o.test/same", ttl: 0 });
    expect(e.jobId).not.toBe(a.jobId);
    clock.advance(120_000);
    const f = await createRequest(t.db, clock, { ...base, url: "http://o.test/same", ttl: 60 });
    expect(f.jobId).toBe(e.jobId); // e is still in flight, so f joins it rather than the stale result
    t.client.close();
  });

  test("cancelling one of two requests keeps the job; cancelling the last cancels it", async () => {
    const t = await tempDatabase();
    const clock = manualClock();
    const a = await createRequest(t.db, clock, { ...base, url: "http://o.test/c" });
    const b = await createRequest(t.db, clock, { ...base, url: "http://o.test/c" });
    await cancelRequest(t.db, clock, a.id);
    const job = async () => (await t.db.select().from(fetchJobs).where(eq(fetchJobs.id, a.jobId)))[0]!;
    expect((await job()).status).toBe("queued");
    expect((await getRequest(t.db, a.id, clock.now()))!.status).toBe("cancelled");
    expect((await getRequest(t.db, b.id, clock.now()))!.status).toBe("queued");
    await cancelRequest(t.db, clock, b.id);
    expect((await job()).status).toBe("cancelled");
    expect(await claimJobs(t.db, clock, { nodeName: "n", limit: 10, leaseMs: 30_000 })).toEqual([]);
    t.client.close();
  });
});
