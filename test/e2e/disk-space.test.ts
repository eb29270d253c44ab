/**
 * Disks never fill, through the real service: a body over STORAGE__MAX_BYTES ends in `error` with
 * code `insufficient_storage` and a message naming the figures and the setting, leaving nothing
 * half-written; content no live request needs is removed to make room, and then the body fits.
 */
import { describe, expect, test } from "bun:test";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { createClient } from "@libsql/client";
import { ContentStore } from "../../seeder/node/cas";
import { bytesRoute, type Origin } from "../support/origin";
import { until } from "../support/poll";
import { fileExists as exists, testScope } from "../support/scope";
import type { Service } from "../support/service";

const { origin, service } = testScope();

const tempFiles = async (base: string) =>
  (await readdir(join(base, "tmp")).catch(() => [])).filter((f) => f.endsWith(".part"));

/** The request ends in error; its job's log says `insufficient_storage` with the same message. */
async function refusedForSpace(svc: Service, id: string): Promise<string> {
  const st = await svc.waitFor(id, ["ready", "error", "cancelled"], 60_000);
  expect(st.status).toBe("error");
  // the caller sees the code in the status body
  expect(st.error_code).toBe("insufficient_storage");
  const message = st.error_message as string;
  const line = await svc.waitForLog(
    (l) => l.code === "insufficient_storage" && l.outcome === "error" && l.error === message,
    "the job's failure logged with code insufficient_storage",
  );
  expect(line.level).toBe("WARNING");
  // and the job row records the code
  const db = createClient({ url: `file:${join(svc.basePath, "proxytorrent.db")}` });
  const rs = await db.execute({
    sql: "SELECT j.error_code FROM fetch_jobs j JOIN fetch_requests r ON r.job_id = j.id WHERE r.id = ?",
    args: [id],
  });
  db.close();
  expect(rs.rows[0]?.error_code).toBe("insufficient_storage");
  return message;
}

describe("STORAGE__MAX_BYTES", () => {
  const CAP = 3_000_000;
  const routes = {
    "/big": bytesRoute({ size: 4_000_000, seed: 61, contentType: "text/plain" }),
    "/big-chunked": bytesRoute({
      size: 4_000_000,
      seed: 62,
      contentType: "text/plain",
      contentLength: false,
    }),
    "/a": bytesRoute({ size: 2_000_000, seed: 63, contentType: "text/plain" }),
    "/b": bytesRoute({ size: 2_000_000, seed: 64, contentType: "text/plain" }),
  };
  let o: Origin;
  let svc: Service;

  test("a body announced larger than the cap ends in error / insufficient_storage at once, naming the figures and the setting", async () => {
    o = await origin(routes);
    // Reconcile rarely: content a DELETE leaves behind stays on disk until space is needed.
    svc = await service({ STORAGE__MAX_BYTES: String(CAP), NODE__RESEED_INTERVAL_MS: "3600000" });
    const id = await svc.create({ url: o.url("/big") });
    expect(await refusedForSpace(svc, id)).toBe(
      "The body (4000000 bytes) is larger than this node's store may hold in all (STORAGE__MAX_BYTES=3000000 bytes)",
    );
    // refused before any byte was written, and not retried
    expect(await tempFiles(svc.basePath)).toEqual([]);
    expect(o.count("/big")).toBe(1);
  });

  test("a body of unannounced size is stopped once it grows past the cap, and its temp file is removed", async () => {
    const id = await svc.create({ url: o.url("/big-chunked") });
    const message = await refusedForSpace(svc, id);
    expect(message).toMatch(
      /^The body \(\d+ bytes so far, size not announced\) is larger than this node's store may hold in all \(STORAGE__MAX_BYTES=3000000 bytes\)$/,
    );
    expect(Number(/\((\d+) bytes/.exec(message)![1])).toBeGreaterThan(CAP);
    expect(await tempFiles(svc.basePath)).toEqual([]);
  });

  test("content no live request needs is removed to make room, then the body fits", async () => {
    const a = await svc.create({ url: o.url("/a") });
    expect((await svc.waitFor(a)).status).toBe("ready");
    const blobA = new ContentStore(svc.basePath).pathFor(routes["/a"].body.sha256());
    expect(await exists(blobA)).toBe(true);
    // Deleted: nothing needs A any more, but its blob is still on disk (no reconcile has run yet).
    expect((await svc.api(`/v1/requests/${a}`, { method: "DELETE" })).status).toBeLessThan(300);
    expect(await exists(blobA)).toBe(true);

    // 2,000,000 + 2,000,000 > 3,000,000: B fits only once A's blob is gone.
    const b = await svc.create({ url: o.url("/b") });
    const st = await svc.waitFor(b);
    expect(st.status).toBe("ready");
    expect(st.content_hash).toBe(routes["/b"].body.sha256());
    await until(async () => !(await exists(blobA)), "A's blob removed", 5_000);
    const reclaims = svc.logs().filter((l) => typeof l.freed_bytes === "number");
    expect(reclaims.length).toBe(1); // a body larger than the whole cap does not try
    expect(reclaims[0]!.freed_bytes).toBeGreaterThanOrEqual(2_000_000);
    expect(await tempFiles(svc.basePath)).toEqual([]);
  });
});

describe("STORAGE__MAX_BYTES with expired content present", () => {
  test("the expired content is freed to make room, and the next body fits", async () => {
    const routes = {
      "/old": bytesRoute({ size: 2_000_000, seed: 65, contentType: "text/plain" }),
      "/new": bytesRoute({ size: 2_000_000, seed: 66, contentType: "text/plain" }),
    };
    const o = await origin(routes);
    // Reconcile rarely: the expiry sweep and the unseeding wait until space is needed.
    const svc = await service({ STORAGE__MAX_BYTES: "3000000", NODE__RESEED_INTERVAL_MS: "3600000" });
    const old = await svc.create({ url: o.url("/old"), retention: 1 });
    expect((await svc.waitFor(old)).status).toBe("ready");
    expect((await svc.waitFor(old, ["expired"], 10_000)).status).toBe("expired");
    const blobOld = new ContentStore(svc.basePath).pathFor(routes["/old"].body.sha256());
    expect(await exists(blobOld)).toBe(true);

    // 2,000,000 + 2,000,000 > 3,000,000: the new body fits only once the expired blob is gone.
    const st = await svc.waitFor(await svc.create({ url: o.url("/new") }));
    expect(st.status).toBe("ready");
    expect(st.content_hash).toBe(routes["/new"].body.sha256());
    expect(await exists(blobOld)).toBe(false);
  });
});
