/**
 * Through the real service: when the last live request for some content goes (DELETE, or its API
 * key revoked), the node stops seeding it and removes the blob from its store; content another
 * live request needs stays and still downloads.
 */
import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { eq } from "drizzle-orm";
import { ContentStore } from "../../seeder/node/cas";
import { decodeTorrent, text } from "../../seeder/node/swarm/bencode";
import { openDatabase } from "../../seeder/process/database";
import { loadConfig } from "../../src/config";
import { fetchJobs, fetchRequests, webhookDeliveries } from "../../src/db/schema";
import { bytesRoute, statusRoute } from "../support/origin";
import { until } from "../support/poll";
import { runToEnd } from "../support/run";
import { blobPath, fileExists as exists, testScope } from "../support/scope";
import { CLI, type Service } from "../support/service";

const OTHER_TOKEN = "test-token-other-tenant-0123456789";

const { origin, service } = testScope({ env: { NODE__RESEED_INTERVAL_MS: "200" } });

const blobGone = (svc: Service, hash: string, what: string) =>
  until(async () => !(await exists(blobPath(svc, hash))), what, 15_000, 50);
const removedLog = (hash: unknown) => (l: Record<string, unknown>) =>
  l.removed === true && l.content_hash === hash;

/** Download the content the way a client of that .torrent would over its web seed (BEP 19). */
async function downloadViaWebSeed(torrent: Uint8Array): Promise<string> {
  const { dict, info } = decodeTorrent(torrent);
  const list = dict["url-list"];
  const seed = text(Array.isArray(list) ? list[0] : list);
  if (!seed) throw new Error("the torrent carries no web seed");
  const url = seed.endsWith("/") ? `${seed}${encodeURIComponent(text(info["name"])!)}` : seed;
  const res = await fetch(url);
  expect(res.status).toBe(200);
  return createHash("sha256")
    .update(new Uint8Array(await res.arrayBuffer()))
    .digest("hex");
}

describe("the blob goes when no live request needs it", () => {
  test("DELETE of the only request: it reads cancelled and the blob leaves the store", async () => {
    const data = bytesRoute({ size: 300_000, seed: 71, contentType: "text/plain" });
    const o = await origin({ "/only.txt": data });
    const svc = await service();
    const st = await svc.waitFor(await svc.create({ url: o.url("/only.txt") }));
    expect(st.status).toBe("ready");
    expect(await exists(blobPath(svc, st.content_hash))).toBe(true);

    expect((await svc.api(`/v1/requests/${st.id}`, { method: "DELETE" })).status).toBe(204);
    await blobGone(svc, st.content_hash, "the blob to leave the store");
    expect((await svc.status(st.id)).status).toBe("cancelled");
    const line = await svc.waitForLog(removedLog(st.content_hash), "the node to log the removal");
    expect(line.bytes).toBe(300_000);
    const metrics = await (await fetch(`${svc.url}/metrics`)).text();
    expect(metrics).toContain("proxytorrent_blobs_removed_total 1");
  });

  test("two tenants' requests for identical bytes share one blob: deleting one keeps it and the other still downloads", async () => {
    const data = bytesRoute({ size: 400_000, seed: 72, contentType: "text/plain" });
    const marker = bytesRoute({ size: 2_000, seed: 73, contentType: "text/plain" });
    // two URLs with the same bytes: two fetches, two torrents (other names), one blob
    const o = await origin({ "/one.txt": data, "/two.txt": data, "/marker.txt": marker });
    const svc = await service({ SECURITY__BEARER_TOKENS: `test-token-0123456789abcdef,${OTHER_TOKEN}` });
    const other = { authorization: `Bearer ${OTHER_TOKEN}` };
    const a = await svc.waitFor(await svc.create({ url: o.url("/one.txt") }));
    const created = await svc.api("/v1/requests", {
      method: "POST",
      headers: other,
      body: JSON.stringify({ url: o.url("/two.txt") }),
    });
    expect(created.status).toBe(201);
    const bId = ((await created.json()) as { id: string }).id;
    const statusOfB = async () =>
      (await (await svc.api(`/v1/requests/${bId}`, { headers: other })).json()) as Record<string, any>;
    await until(async () => (await statusOfB()).status === "ready", "the other tenant's request to be ready");
    const b = await statusOfB();
    expect(b.content_hash).toBe(a.content_hash);
    expect(b.infohash).not.toBe(a.infohash);

    const m = await svc.waitFor(await svc.create({ url: o.url("/marker.txt") }));
    await svc.api(`/v1/requests/${a.id}`, { method: "DELETE" });
    await svc.api(`/v1/requests/${m.id}`, { method: "DELETE" });
    // `a`'s torrent is dropped (and its blob considered) before the marker's blob goes
    await svc.waitForLog(
      (l) => l.unseeded === true && l.infohash === a.infohash,
      "the node to drop a's torrent",
    );
    await svc.waitForLog(removedLog(m.content_hash), "the node to remove the marker's blob");
    expect(svc.logs().filter(removedLog(a.content_hash))).toEqual([]);
    expect(await exists(blobPath(svc, a.content_hash))).toBe(true);
    const torrent = await svc.api(`/v1/requests/${bId}/torrent`, { headers: other });
    expect(torrent.status).toBe(200);
    expect(await downloadViaWebSeed(new Uint8Array(await torrent.arrayBuffer()))).toBe(data.body.sha256());

    await svc.api(`/v1/requests/${bId}`, { method: "DELETE", headers: other });
    await blobGone(svc, a.content_hash, "the shared blob to go with its last request");
  });

  test("at start-up a node removes blobs no live job of its own needs (left by a crash), keeps the rest", async () => {
    const data = bytesRoute({ size: 100_000, seed: 76, contentType: "text/plain" });
    const o = await origin({ "/live.txt": data });
    const svc = await service();
    const live = await svc.waitFor(await svc.create({ url: o.url("/live.txt") }));
    await svc.kill("SIGKILL");
    // as if a fetch had committed its blob and the node died before its job recorded it
    const store = new ContentStore(svc.basePath);
    const w = await store.createWriter();
    await w.write(new TextEncoder().encode("left behind by a crash\n"));
    const orphan = await w.commit();
    await svc.launch();
    await blobGone(svc, orphan.sha256, "the start-up sweep to remove the orphan");
    expect(await exists(blobPath(svc, live.content_hash))).toBe(true);
    expect((await svc.status(live.id)).status).toBe("ready");
  });
});

describe("revoking an API key", () => {
  test("cancels the requests the key made (job cancelled, blob removed); another key of the tenant keeps its own", async () => {
    const leaked = bytesRoute({ size: 250_000, seed: 74, contentType: "text/plain" });
    const kept = bytesRoute({ size: 260_000, seed: 75, contentType: "text/plain" });
    const o = await origin({ "/leaked.txt": leaked, "/kept.txt": kept, "/hook": statusRoute(204) });
    const svc = await service({ WEBHOOK__SECRET: `whsec_${Buffer.alloc(32, 9).toString("base64")}` });
    const keys = async (...args: string[]) => {
      const r = await runToEnd([CLI, "keys", ...args], {
        env: {
          PATH: process.env.PATH ?? "/usr/bin:/bin",
          HOME: svc.basePath,
          STORAGE__BASE_PATH: svc.basePath,
        },
      });
      expect(r.code).toBe(0);
      return r.stdout;
    };
    const a = JSON.parse(await keys("create", "--name", "laptop", "--tenant", "team", "--json")) as Record<
      string,
      string
    >;
    const b = JSON.parse(await keys("create", "--name", "server", "--tenant", "team", "--json")) as Record<
      string,
      string
    >;
    const as = (key: Record<string, string>) => ({ authorization: `Bearer ${key.key}` });
    const make = async (key: Record<string, string>, body: Record<string, unknown>) => {
      const res = await svc.api("/v1/requests", {
        method: "POST",
        headers: as(key),
        body: JSON.stringify(body),
      });
      expect(res.status).toBe(201);
      return ((await res.json()) as { id: string }).id;
    };
    // key b reads both: one tenant
    const read = async (id: string, by = b) =>
      (await (await svc.api(`/v1/requests/${id}`, { headers: as(by) })).json()) as Record<string, any>;
    const ready = async (id: string) => {
      await until(async () => (await read(id)).status === "ready", `request ${id} to be ready`);
      return read(id);
    };
    const mine = await ready(await make(a, { url: o.url("/leaked.txt"), callback_url: o.url("/hook") }));
    const theirs = await ready(await make(b, { url: o.url("/kept.txt") }));

    const out = await keys("revoke", a.id!);
    expect(out).toContain(`Revoked key ${a.id}.`);
    expect(out).toContain("Cancelled 1 request made with it");
    expect((await read(mine.id)).status).toBe("cancelled");
    expect((await read(theirs.id)).status).toBe("ready");

    const { client, db } = await openDatabase(loadConfig({ STORAGE__BASE_PATH: svc.basePath }));
    try {
      const jobOf = async (id: string) =>
        (
          await db
            .select({ status: fetchJobs.status, seeding: fetchJobs.seeding })
            .from(fetchJobs)
            .innerJoin(fetchRequests, eq(fetchRequests.jobId, fetchJobs.id))
            .where(eq(fetchRequests.id, id))
        )[0];
      expect(await jobOf(mine.id)).toEqual({ status: "cancelled", seeding: false });
      expect(await jobOf(theirs.id)).toEqual({ status: "ready", seeding: true });
      // as DELETE does: `request.cancelled` for the callback, written with the cancellation
      const events = await db
        .select({ type: webhookDeliveries.eventType })
        .from(webhookDeliveries)
        .where(eq(webhookDeliveries.requestId, mine.id));
      expect(events.map((e) => e.type).sort()).toEqual(["request.cancelled", "request.ready"]);
    } finally {
      client.close();
    }

    await blobGone(svc, mine.content_hash, "the revoked key's content to leave the store");

    // Rotation as the README says: the new key (same tenant) asks again before the old one goes;
    // its request joins the ready result, and the revoke leaves that content seeding.
    const c = JSON.parse(await keys("create", "--name", "server-2", "--tenant", "team", "--json")) as Record<
      string,
      string
    >;
    const again = await make(c, { url: o.url("/kept.txt"), ttl: 3600 });
    expect((await read(again)).status).toBe("ready");
    expect(o.count("/kept.txt")).toBe(1); // answered from the ready result, no second fetch
    expect(await keys("revoke", b.id!)).toContain("Cancelled 1 request made with it");
    expect((await read(theirs.id, c)).status).toBe("cancelled");
    expect((await read(again, c)).status).toBe("ready");
    const check = await openDatabase(loadConfig({ STORAGE__BASE_PATH: svc.basePath }));
    try {
      const [job] = await check.db
        .select({ status: fetchJobs.status, seeding: fetchJobs.seeding })
        .from(fetchJobs)
        .innerJoin(fetchRequests, eq(fetchRequests.jobId, fetchJobs.id))
        .where(eq(fetchRequests.id, again));
      expect(job).toEqual({ status: "ready", seeding: true });
    } finally {
      check.client.close();
    }
    expect(await exists(blobPath(svc, theirs.content_hash))).toBe(true);
    expect(await keys("revoke", a.id!)).toContain("Cancelled 0 requests made with it.");
  });
});
