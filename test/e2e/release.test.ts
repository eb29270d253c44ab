/**
 * Through the real service: when the last live request for some content goes (DELETE, or its API
 * key revoked), the node stops seeding it and removes the blob from its store; content another
 * live request needs stays and still downloads.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { stat } from "node:fs/promises";
import { ContentStore } from "../../seeder/node/cas";
import { decodeTorrent, text } from "../../seeder/node/swarm/bencode";
import { removeTmpDirs } from "../support/clients";
import { bytesRoute, type Origin, startOrigin } from "../support/origin";
import { until } from "../support/poll";
import { Service } from "../support/service";

const OTHER_TOKEN = "test-token-other-tenant-0123456789";

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
  await removeTmpDirs();
});

async function origin(routes: Parameters<typeof startOrigin>[0]): Promise<Origin> {
  const o = await startOrigin(routes);
  cleanups.push(() => o.close());
  return o;
}
async function service(env: Record<string, string> = {}): Promise<Service> {
  const s = await Service.start({ env: { NODE__RESEED_INTERVAL_MS: "200", ...env } });
  cleanups.push(() => s.stop());
  return s;
}

const exists = (path: string) =>
  stat(path).then(
    () => true,
    () => false,
  );
const blobPath = (svc: Service, hash: string) => new ContentStore(svc.basePath).pathFor(hash);
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

  test("two tenants' requests share one blob: deleting one keeps it and the other still downloads", async () => {
    const data = bytesRoute({ size: 400_000, seed: 72, contentType: "text/plain" });
    const marker = bytesRoute({ size: 2_000, seed: 73, contentType: "text/plain" });
    const o = await origin({ "/shared.txt": data, "/marker.txt": marker });
    const svc = await service({ SECURITY__BEARER_TOKENS: `test-token-0123456789abcdef,${OTHER_TOKEN}` });
    const other = { authorization: `Bearer ${OTHER_TOKEN}` };
    const a = await svc.waitFor(await svc.create({ url: o.url("/shared.txt") }));
    const created = await svc.api("/v1/requests", {
      method: "POST",
      headers: other,
      body: JSON.stringify({ url: o.url("/shared.txt") }),
    });
    expect(created.status).toBe(201);
    const bId = ((await created.json()) as { id: string }).id;
    const statusOfB = async () =>
      (await (await svc.api(`/v1/requests/${bId}`, { headers: other })).json()) as Record<string, any>;
    await until(async () => (await statusOfB()).status === "ready", "the other tenant's request to be ready");
    const b = await statusOfB();
    // two fetches (tenants do not share them), one blob
    expect(b.content_hash).toBe(a.content_hash);
    expect(o.count("/shared.txt")).toBe(2);

    const m = await svc.waitFor(await svc.create({ url: o.url("/marker.txt") }));
    await svc.api(`/v1/requests/${a.id}`, { method: "DELETE" });
    await svc.api(`/v1/requests/${m.id}`, { method: "DELETE" });
    // the marker's blob goes once a reconcile ran that already saw `a` deleted
    await svc.waitForLog(removedLog(m.content_hash), "the node to remove the marker's blob");
    expect(svc.logs().filter(removedLog(a.content_hash))).toEqual([]);
    expect(await exists(blobPath(svc, a.content_hash))).toBe(true);
    const torrent = await svc.api(`/v1/requests/${bId}/torrent`, { headers: other });
    expect(torrent.status).toBe(200);
    expect(await downloadViaWebSeed(new Uint8Array(await torrent.arrayBuffer()))).toBe(data.body.sha256());

    await svc.api(`/v1/requests/${bId}`, { method: "DELETE", headers: other });
    await blobGone(svc, a.content_hash, "the shared blob to go with its last request");
  });
});
