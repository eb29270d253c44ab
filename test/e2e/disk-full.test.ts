/**
 * A real small disk: the service runs with STORAGE__BASE_PATH on its own tmpfs (a private mount
 * namespace, `unshare -m`; needs root, as CI has), its database elsewhere. The test reaches that
 * tmpfs through /proc/<pid>/root and fills it or frees it with a filler file.
 *
 * - A real ENOSPC in the middle of a body (no margin set): the temp file is removed, the job ends in
 *   `error` / `insufficient_storage`, and once space returns the same request succeeds.
 * - STORAGE__MIN_FREE_BYTES: a node below its margin stops claiming jobs (logged once, health says
 *   so), takes them again when space returns (logged once), and refuses a body that would eat
 *   into the margin.
 */
import { describe, expect, test } from "bun:test";
import { readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ContentStore } from "../../seeder/node/cas";
import { tmpDir } from "../support/clients";
import { bytesRoute } from "../support/origin";
import { testScope } from "../support/scope";
import { Service } from "../support/service";

const MiB = 1024 * 1024;

const scope = testScope();
const { origin } = scope;

/** The service with its storage folder on a tmpfs of `size` of its own. */
async function onTmpfs(size: string, env: Record<string, string>): Promise<Service> {
  const basePath = await tmpDir("pt-tmpfs-");
  const dbDir = await tmpDir("pt-tmpfs-db-");
  const svc = await Service.start({
    basePath,
    wrap: ["unshare", "-m", "sh", "-c", `mount -t tmpfs -o size=${size} tmpfs "$0" && exec "$@"`, basePath],
    env: { DATABASE__DATABASE_URL: `file:${join(dbDir, "pt.db")}`, ...env },
  });
  scope.defer(() => svc.stop());
  return svc;
}

/** The storage folder as the service sees it (on its tmpfs). */
const seen = (svc: Service, ...parts: string[]) =>
  join(`/proc/${svc.proc!.pid}/root`, svc.basePath, ...parts);
const tempFiles = async (svc: Service) => readdir(seen(svc, "tmp"));

async function storageCheck(svc: Service): Promise<Record<string, unknown>> {
  const res = await fetch(`${svc.url}/v1/health`);
  const body = (await res.json()) as { checks: { storage: Record<string, unknown> } };
  return { http: res.status, ...body.checks.storage };
}

describe("a real ENOSPC mid-write (4 MiB tmpfs, no margin)", () => {
  test("the temp file goes, the job ends in insufficient_storage, and after space returns the same request succeeds", async () => {
    const body = bytesRoute({ size: 2 * MiB, seed: 71, contentType: "text/plain" });
    const o = await origin({ "/two": body });
    const svc = await onTmpfs("4m", { STORAGE__MIN_FREE_BYTES: "0" });
    // About 1 MiB stays free: the 2 MiB body fails part-way through.
    await writeFile(seen(svc, "filler"), Buffer.alloc(3 * MiB));
    expect(await tempFiles(svc)).toEqual([]);

    const id = await svc.create({ url: o.url("/two") });
    const st = await svc.waitFor(id, ["ready", "error", "cancelled"], 60_000);
    expect(st.status).toBe("error");
    expect(st.error_message).toMatch(
      /^The storage disk ran out of space \(ENOSPC\) after \d+ bytes of the body; nothing of it was kept/,
    );
    await svc.waitForLog(
      (l) => l.code === "insufficient_storage" && l.outcome === "error",
      "the failure logged with code insufficient_storage",
    );
    expect(o.count("/two")).toBe(1); // ended, not retried
    expect(await tempFiles(svc)).toEqual([]);
    expect(await readdir(seen(svc, "cas", "sha256"))).toEqual([]);

    // Space returns: the node takes the next job, and it succeeds.
    await rm(seen(svc, "filler"));
    const again = await svc.create({ url: o.url("/two") });
    const ok = await svc.waitFor(again, ["ready", "error", "cancelled"], 60_000);
    expect(ok.status).toBe("ready");
    expect(ok.content_hash).toBe(body.body.sha256());
    const store = new ContentStore(seen(svc));
    expect(await store.verify(body.body.sha256())).toBe(true);
    expect(await tempFiles(svc)).toEqual([]);
  });
});

describe("STORAGE__MIN_FREE_BYTES (8 MiB tmpfs, 4 MiB margin)", () => {
  test("below the margin the node takes no jobs (logged once, health 503 naming it); when space returns it takes them again", async () => {
    const one = bytesRoute({ size: MiB, seed: 72, contentType: "text/plain" });
    const big = bytesRoute({ size: 5 * MiB, seed: 73, contentType: "text/plain" });
    const bigChunked = bytesRoute({
      size: 5 * MiB,
      seed: 74,
      contentType: "text/plain",
      contentLength: false,
    });
    const o = await origin({ "/one": one, "/big": big, "/big-chunked": bigChunked });
    const svc = await onTmpfs("8m", { STORAGE__MIN_FREE_BYTES: String(4 * MiB) });
    const before = await storageCheck(svc);
    expect(before).toMatchObject({
      http: 200,
      status: "healthy",
      taking_jobs: true,
      min_free_bytes: 4 * MiB,
    });

    // A body that would eat into the margin is refused up front: 8 MiB - 5 MiB < 4 MiB.
    const refused = await svc.create({ url: o.url("/big") });
    const r = await svc.waitFor(refused, ["ready", "error", "cancelled"], 60_000);
    expect(r.status).toBe("error");
    expect(r.error_message).toMatch(
      /^The body \(5242880 bytes\) does not fit: it would leave \d+ bytes free on the storage disk, under STORAGE__MIN_FREE_BYTES=4194304 bytes, even after removing content no live request needs$/,
    );
    expect(await tempFiles(svc)).toEqual([]);
    // ...and one of unannounced size once it has grown into the margin.
    const chunked = await svc.create({ url: o.url("/big-chunked") });
    const c = await svc.waitFor(chunked, ["ready", "error", "cancelled"], 60_000);
    expect(c.status).toBe("error");
    expect(c.error_message).toMatch(
      /^The body \(\d+ bytes so far, size not announced\) does not fit: it would leave \d+ bytes free on the storage disk, under STORAGE__MIN_FREE_BYTES=4194304 bytes/,
    );
    expect(await tempFiles(svc)).toEqual([]);

    // 5 MiB of filler leaves about 3 MiB: below the margin.
    await writeFile(seen(svc, "filler"), Buffer.alloc(5 * MiB));
    const low = await svc.waitForLog((l) => l.storage_low === true, "the node saying it stops taking jobs");
    expect(low).toMatchObject({ level: "WARNING", min_free_bytes: 4 * MiB });
    expect(low.free_bytes as number).toBeLessThan(4 * MiB);
    const health = await storageCheck(svc);
    expect(health).toMatchObject({ http: 503, status: "unhealthy", taking_jobs: false });
    expect(health.error).toMatch(
      /is below STORAGE__MIN_FREE_BYTES=4194304 bytes: this node takes no new jobs/,
    );

    // Queued, and it stays so while the node is below its margin (it claims every 100 ms).
    const id = await svc.create({ url: o.url("/one") });
    expect((await storageCheck(svc)).taking_jobs).toBe(false);
    expect((await svc.status(id)).status).toBe("queued");
    expect(o.count("/one")).toBe(0);

    await rm(seen(svc, "filler"));
    await svc.waitForLog((l) => l.storage_low === false, "the node saying it takes jobs again");
    const st = await svc.waitFor(id, ["ready", "error", "cancelled"], 60_000);
    expect(st.status).toBe("ready");
    expect(st.content_hash).toBe(one.body.sha256());
    expect(await storageCheck(svc)).toMatchObject({ http: 200, status: "healthy", taking_jobs: true });
    // Said once each way, not on every claim round.
    expect(svc.logs().filter((l) => l.storage_low === true).length).toBe(1);
    expect(svc.logs().filter((l) => l.storage_low === false).length).toBe(1);
  });
});
