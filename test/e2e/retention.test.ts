/**
 * Retention through the real service (`bin/proxytorrent serve`, a child process, loopback only): a
 * request with `retention: 5` goes ready → expired; its torrent and magnet answer 410, its web seed
 * stops serving it, the node removes the blob from its store, and the request's callback gets a
 * verified `request.expired`. A second live request for identical bytes with a longer retention
 * keeps the blob (and its download) until it too expires.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { Webhook } from "standardwebhooks";
import { ContentStore } from "../../seeder/node/cas";
import { decodeTorrent, text } from "../../seeder/node/swarm/bencode";
import { generateSecret } from "../../src/webhooks/signing";
import { removeTmpDirs } from "../support/clients";
import { bytesRoute, type Origin, startOrigin } from "../support/origin";
import { until } from "../support/poll";
import { metricValue } from "../support/prometheus";
import { fileExists as exists } from "../support/scope";
import { Service } from "../support/service";
import { type Receiver, startReceiver } from "../webhooks/receiver";

const SECRET = generateSecret();
const wh = new Webhook(SECRET);
// One body under three URLs: different requests (and jobs), the same content hash.
const same = bytesRoute({ size: 200_000, seed: 91, contentType: "text/plain" });

let origin: Origin;
let svc: Service;
let rx: Receiver;

beforeAll(async () => {
  origin = await startOrigin({ "/short.bin": same, "/a.bin": same, "/b.bin": same });
  rx = await startReceiver();
  svc = await Service.start({
    env: { NODE__RESEED_INTERVAL_MS: "200", WEBHOOK__SECRET: SECRET, WEBHOOK__RETRY_DELAYS: "1,1,1" },
  });
});
afterAll(async () => {
  await svc?.stop();
  await origin?.close();
  await rx?.close();
  await removeTmpDirs();
});

const blobPath = (hash: string) => new ContentStore(svc.basePath).pathFor(hash);

/** The web seed URL of the request's .torrent (with TORRENT__ACCESS=passkey it carries the passkey). */
async function webSeedFile(id: string): Promise<string> {
  const { dict, info } = decodeTorrent(await svc.torrent(id));
  const list = dict["url-list"];
  const seed = text(Array.isArray(list) ? list[0] : list)!;
  return seed.endsWith("/") ? `${seed}${encodeURIComponent(text(info["name"])!)}` : seed;
}

async function sha256Of(url: string): Promise<string> {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  return createHash("sha256")
    .update(new Uint8Array(await res.arrayBuffer()))
    .digest("hex");
}

async function expectGone(id: string) {
  for (const path of ["torrent", "magnet"]) {
    const res = await svc.api(`/v1/requests/${id}/${path}`);
    expect(res.status).toBe(410);
    expect(((await res.json()) as { detail: string }).detail).toContain("expired");
  }
}

describe("retention, end to end", () => {
  test("retention: 5 → ready → expired: 410, web seed refused, blob removed, request.expired", async () => {
    const id = await svc.create({ url: origin.url("/short.bin"), retention: 5, callback_url: rx.url });
    const ready = await svc.waitFor(id);
    expect(ready.status).toBe("ready");
    expect(ready.content_hash).toBe(same.body.sha256());
    expect(Date.parse(ready.expires_at) - Date.parse(ready.completed_at)).toBeGreaterThanOrEqual(5000);
    expect(await exists(blobPath(ready.content_hash))).toBe(true);
    const storedBytes = () => metricValue(svc.url, "proxytorrent_store_bytes");
    const before = await storedBytes();
    expect(before).toBeGreaterThanOrEqual(same.body.size);
    const seedUrl = await webSeedFile(id);
    expect(await sha256Of(seedUrl)).toBe(same.body.sha256());

    const expired = await svc.waitFor(id, ["expired"], 30_000);
    expect(expired.expires_at).toBe(ready.expires_at);
    await expectGone(id);
    expect((await fetch(seedUrl)).status).not.toBe(200);
    await until(
      async () => !(await exists(blobPath(ready.content_hash))),
      "the blob to leave the store",
      15_000,
      50,
    );
    // The store gauge falls back by the blob's size.
    expect(await storedBytes()).toBe(before - same.body.size);

    const got = await rx.waitFor(2, 30_000);
    const events = got.map((g) => wh.verify(g.body, g.headers) as any);
    expect(events.map((e) => e.type)).toEqual(["request.ready", "request.expired"]);
    expect(events[1]).toEqual({
      type: "request.expired",
      timestamp: expect.any(String),
      data: {
        id,
        status: "expired",
        infohash: ready.infohash,
        magnet_link: null,
        content_hash: ready.content_hash,
        content_size: 200_000,
        url: origin.url("/short.bin"),
        scan: null,
      },
    });
    // Exactly once, whatever number of reconciles ran since.
    await svc.waitForLog((l) => l.msg === "requests expired", "the sweep's log line");
    expect(rx.received.length).toBe(2);
  }, 90_000);

  test("a second request for the same bytes with a longer retention keeps the blob until it expires", async () => {
    const a = await svc.create({ url: origin.url("/a.bin"), retention: 5 });
    const readyA = await svc.waitFor(a);
    const b = await svc.create({ url: origin.url("/b.bin"), retention: 15 });
    const readyB = await svc.waitFor(b);
    expect(readyB.status).toBe("ready");
    expect(readyB.content_hash).toBe(readyA.content_hash);
    expect(readyB.infohash).not.toBe(readyA.infohash); // another torrent (another name) of the same bytes
    const hash = readyA.content_hash as string;
    const seedB = await webSeedFile(b);
    const removals = () => svc.logs().filter((l) => l.removed === true && l.content_hash === hash).length;
    const removedBefore = removals(); // the first test's request had the same bytes

    await svc.waitFor(a, ["expired"], 30_000);
    await expectGone(a);
    // The node stopped seeding A's torrent (and asked to release the blob, which B still needs).
    await svc.waitForLog((l) => l.unseeded === true && l.infohash === readyA.infohash, "A to be unseeded");
    expect((await svc.status(b)).status).toBe("ready");
    expect(await sha256Of(seedB)).toBe(hash);
    expect(await exists(blobPath(hash))).toBe(true);
    expect(removals()).toBe(removedBefore);

    await svc.waitFor(b, ["expired"], 30_000);
    await expectGone(b);
    await until(async () => !(await exists(blobPath(hash))), "the blob to leave the store", 15_000, 50);
    expect((await fetch(seedB)).status).not.toBe(200);
  }, 90_000);
});
