/**
 * The guard that lets a node delete blobs nothing needs without ever losing one a new request
 * needs: pins between a fetch's commit and its job recording the hash, a per-hash lock between a
 * removal and a commit's rename, and the database for everything after (seeder/node/blob-release.ts).
 * Real content store, real libSQL file, the real queue functions; each interleaving is driven
 * step by step, no sleeps.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { releaseBlob, sweepBlobs } from "../../seeder/node/blob-release";
import { ContentStore } from "../../seeder/node/cas";
import { StoreUsage } from "../../seeder/node/gc";
import { advance, claimJobs, markCancelled } from "../../src/jobs/queue";
import { silentLogger } from "../../src/log";
import { cancelRequest, createRequest } from "../../src/requests/service";
import { removeTmpDirs, tmpDir } from "../support/clients";
import { manualClock, tempDatabase } from "../support/db";
import { until } from "../support/poll";
import { fileExists as exists } from "../support/scope";

afterAll(() => removeTmpDirs());

const NODE = "node-a";

const newRequest = (url: string) => ({
  url,
  method: "GET",
  headers: null,
  body: null,
  ttl: 0,
  userId: "t1",
  clientIp: null,
  requestId: null,
  maxAttempts: 3,
});

async function setup() {
  const t = await tempDatabase();
  const store = new ContentStore(await tmpDir("pt-release-"));
  await store.init();
  const clock = manualClock(Date.now());
  const deps = { store, db: t.db, nodeName: NODE, log: silentLogger };
  return { ...t, store, clock, deps };
}

async function commit(store: ContentStore, data: Uint8Array) {
  const w = await store.createWriter({ expectedSize: data.length });
  await w.write(data);
  return w.commit();
}

describe("releasing a blob", () => {
  test("committed but not yet recorded (pinned) → kept; recorded → kept; job cancelled and unpinned → deleted", async () => {
    const { db, store, clock, deps, client } = await setup();
    const req = await createRequest(db, clock, newRequest("http://o.test/a"));
    const [job] = await claimJobs(db, clock, { nodeName: NODE, limit: 1, leaseMs: 60_000 });
    const lease = { id: job!.id, leaseToken: job!.leaseToken! };
    const data = randomBytes(100_000);

    // The fetch has committed: the blob is in the store, the job's row does not name it yet.
    const blob = await commit(store, data);
    expect(await releaseBlob(deps, blob.sha256)).toBeNull();
    expect(await exists(blob.path)).toBe(true);

    // The job records the hash (daemon storeStage), then lets go of the pin.
    expect(await advance(db, clock, lease, { contentHash: blob.sha256, contentSize: data.length })).toBe(
      true,
    );
    blob.pin.release();
    expect(await releaseBlob(deps, blob.sha256)).toBeNull();
    expect(await exists(blob.path)).toBe(true);

    // DELETE of its only request: the job is still running until its worker notices.
    expect(await cancelRequest(db, clock, req.id)).toBe(true);
    expect(await releaseBlob(deps, blob.sha256)).toBeNull();
    expect(await exists(blob.path)).toBe(true);

    // The worker marks it cancelled: nothing needs the content any more.
    expect(await markCancelled(db, clock, lease)).toBe(true);
    expect(await releaseBlob(deps, blob.sha256)).toBe(data.length);
    expect(await exists(blob.path)).toBe(false);
    client.close();
  });

  test("another live job of this node with the same content keeps the blob; one of another node does not", async () => {
    const { db, store, clock, deps, client } = await setup();
    const data = randomBytes(50_000);
    const blob = await commit(store, data);
    blob.pin.release();
    await createRequest(db, clock, newRequest("http://o.test/b"));
    const [job] = await claimJobs(db, clock, { nodeName: "node-b", limit: 1, leaseMs: 60_000 });
    await advance(db, clock, { id: job!.id, leaseToken: job!.leaseToken! }, { contentHash: blob.sha256 });
    // node-b's job needs node-b's copy, not this node's
    expect(await releaseBlob(deps, blob.sha256)).toBe(data.length);

    const again = await commit(store, data);
    again.pin.release();
    await createRequest(db, clock, newRequest("http://o.test/c"));
    const [mine] = await claimJobs(db, clock, { nodeName: NODE, limit: 1, leaseMs: 60_000 });
    await advance(db, clock, { id: mine!.id, leaseToken: mine!.leaseToken! }, { contentHash: again.sha256 });
    expect(await releaseBlob(deps, again.sha256)).toBeNull();
    expect(await exists(again.path)).toBe(true);
    // what the node seeds keeps it too, whatever the database says
    expect(await releaseBlob({ ...deps, nodeName: "node-c", inUse: () => true }, again.sha256)).toBeNull();
    client.close();
  });

  test("a commit of the same bytes arriving while a removal decides: the removal unlinks, the commit's blob is whole afterwards", async () => {
    const { store, deps, client } = await setup();
    const data = randomBytes(200_000);
    const old = await commit(store, data);
    old.pin.release();
    const next = await store.createWriter({ expectedSize: data.length });
    await next.write(data);

    let committing: ReturnType<typeof next.commit> | null = null;
    // The removal's "is it needed?" runs (here: nothing needs it) while a new fetch of the same
    // content commits; the check answers only once that commit has pinned the hash.
    const removed = await store.remove(old.sha256, async () => {
      committing = next.commit();
      await until(() => store.isPinned(old.sha256), "the new commit to pin the hash", 10_000, 1);
      return false;
    });
    expect(removed).toBe(data.length); // it did unlink the old blob…
    const blob = await committing!;
    expect(blob.sha256).toBe(old.sha256);
    // …and the commit's rename, which waited for the removal, put the whole blob back, pinned
    expect(await exists(blob.path)).toBe(true);
    expect(await store.verify(blob.sha256)).toBe(true);
    expect(await releaseBlob(deps, blob.sha256)).toBeNull();
    blob.pin.release();
    expect(await releaseBlob(deps, blob.sha256)).toBe(data.length);
    client.close();
  });

  test("the start-up sweep removes blobs no live job of this node records and keeps the others", async () => {
    const { db, store, clock, deps, client } = await setup();
    const keep = await commit(store, randomBytes(30_000));
    const orphan = await commit(store, randomBytes(40_000));
    keep.pin.release();
    orphan.pin.release();
    await createRequest(db, clock, newRequest("http://o.test/d"));
    const [job] = await claimJobs(db, clock, { nodeName: NODE, limit: 1, leaseMs: 60_000 });
    await advance(db, clock, { id: job!.id, leaseToken: job!.leaseToken! }, { contentHash: keep.sha256 });
    expect(await sweepBlobs(deps)).toEqual({ removed: 1, bytes: 40_000 });
    expect(await exists(keep.path)).toBe(true);
    expect(await exists(orphan.path)).toBe(false);
    client.close();
  });

  test("a sweep measures the blobs it keeps for the store gauges; a blob stored or removed while it walks is counted as it ends up", async () => {
    const { db, store, clock, deps, client } = await setup();
    const keep = await commit(store, randomBytes(30_000));
    const orphan = await commit(store, randomBytes(40_000));
    const later = await commit(store, randomBytes(50_000));
    for (const b of [keep, orphan, later]) b.pin.release();
    for (const [i, b] of [keep, later].entries()) {
      await createRequest(db, clock, newRequest(`http://o.test/m${i}`));
      const [job] = await claimJobs(db, clock, { nodeName: NODE, limit: 1, leaseMs: 60_000 });
      await advance(db, clock, { id: job!.id, leaseToken: job!.leaseToken! }, { contentHash: b.sha256 });
    }
    const usage = new StoreUsage();
    usage.scanning();
    // While the sweep walks: `keep` is removed (as an unseed would, its job gone) and a new blob
    // is stored after the walk may have passed its folder.
    usage.removed(keep.sha256);
    usage.stored("f".repeat(64), 7);
    expect(await sweepBlobs({ ...deps, usage }, () => false, usage)).toEqual({ removed: 1, bytes: 40_000 });
    expect({ blobs: usage.blobs, bytes: usage.bytes }).toEqual({ blobs: 2, bytes: 50_007 });
    // The next sweep counts the store as it is (that stored blob was never written, `keep` was not
    // really removed), stat-ing only the blob it had not sized.
    usage.scanning();
    await sweepBlobs({ ...deps, usage }, () => false, usage);
    expect({ blobs: usage.blobs, bytes: usage.bytes }).toEqual({ blobs: 2, bytes: 50_000 + 30_000 });
    client.close();
  });
});
