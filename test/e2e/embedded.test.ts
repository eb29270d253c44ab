/**
 * The embedded service as a user runs it (`bin/proxytorrent serve`, a real process), a loopback
 * origin, and real BitTorrent clients: what `ready` promises is that a client given the .torrent
 * downloads the origin's exact bytes.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type BDict, bdecode, bencode, isDict, text } from "../../seeder/node/swarm/bencode";
import { aria2Download, libtorrentDownload, sha256File, tmpDir } from "../support/clients";
import { bytesRoute, type Origin, startOrigin } from "../support/origin";
import { Service, TOKEN } from "../support/service";

let origin: Origin;
let svc: Service;
const report = bytesRoute({ size: 3 * 1024 * 1024 + 12345, seed: 11, contentType: "application/json" });
const shared = bytesRoute({ size: 2 * 1024 * 1024, seed: 12, contentType: "text/plain", chunkDelayMs: 5 });

beforeAll(async () => {
  origin = await startOrigin({ "/files/report.json": report, "/shared.txt": shared });
  svc = await Service.start();
});
afterAll(async () => {
  await svc?.stop();
  await origin?.close();
});

/** Bytes the node's web seed has served so far (from /metrics). */
async function webSeedBytes(): Promise<number> {
  const text = await (await fetch(`${svc.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith('proxytorrent_upload_bytes_total{via="webseed"}'));
  return Number(line?.split(" ")[1] ?? 0);
}

async function saveTorrent(bytes: Uint8Array, name = "t.torrent"): Promise<string> {
  const dir = await tmpDir("pt-torrent-");
  const path = join(dir, name);
  await writeFile(path, bytes);
  return path;
}

describe("a request, end to end", () => {
  let id: string;
  let torrentPath: string;

  test("POST, poll to ready: progress 100 and the origin's sha256 and size", async () => {
    id = await svc.create({ url: origin.url("/files/report.json") });
    const st = await svc.waitFor(id);
    expect(st.error_message).toBeNull();
    expect(st.status).toBe("ready");
    expect(st.progress).toBe(100);
    expect(st.content_hash).toBe(report.body.sha256());
    expect(st.content_size).toBe(report.body.size);
    expect(st.content_type).toBe("application/json");
    expect(st.infohash).toMatch(/^[0-9a-f]{40}$/);
    expect(st.completed_at).not.toBeNull();
    torrentPath = await saveTorrent(await svc.torrent(id));
  });

  test("the .torrent is private, named after the URL, and names only this node's tracker and web seed", async () => {
    const t = bdecode(await Bun.file(torrentPath).bytes()) as BDict;
    const info = t.info as BDict;
    expect(info.private).toBe(1);
    expect(text(info.name)).toBe("report.json");
    // Both carry this request's passkey (TORRENT__ACCESS=passkey, the default).
    const announce = text(t.announce)!;
    const passkey = announce.match(/^(.*)\/announce\?passkey=([0-9a-f]{32})$/);
    expect(passkey?.[1]).toBe(svc.url);
    const urlList = t["url-list"];
    const seeds = Array.isArray(urlList) ? urlList.map((u) => text(u)) : [text(urlList)];
    expect(seeds).toEqual([`${svc.url}/webseed/${passkey?.[2]}/`]);
  });

  test("aria2c, through the built-in tracker, gets the right bytes over BitTorrent", async () => {
    // Without the url-list, the only way to the bytes is a peer found through our tracker.
    const t = bdecode(await Bun.file(torrentPath).bytes()) as BDict;
    delete t["url-list"];
    const trackerOnly = await saveTorrent(bencode(t), "tracker-only.torrent");
    const file = await aria2Download({
      torrentPath: trackerOnly,
      dir: await tmpDir("pt-aria2-"),
      timeoutMs: 60_000,
    });
    expect(await sha256File(file)).toBe(report.body.sha256());
  });

  test("aria2c with the .torrent as served (tracker and web seed) gets the right bytes", async () => {
    const file = await aria2Download({ torrentPath, dir: await tmpDir("pt-aria2-both-"), timeoutMs: 60_000 });
    expect(await sha256File(file)).toBe(report.body.sha256());
  });

  test("python3-libtorrent, connecting straight to the seeder, gets the right bytes", async () => {
    const file = await libtorrentDownload({
      torrentPath,
      dir: await tmpDir("pt-lt-"),
      connect: { host: "127.0.0.1", port: svc.torrentPort },
      timeoutMs: 60_000,
    });
    expect(await sha256File(file)).toBe(report.body.sha256());
  });

  test("a torrent whose only source is the web seed downloads with aria2c", async () => {
    const t = bdecode(await Bun.file(torrentPath).bytes()) as BDict;
    delete t.announce;
    delete t["announce-list"];
    expect(isDict(t.info)).toBe(true);
    const webOnly = await saveTorrent(bencode(t), "webseed-only.torrent");
    const file = await aria2Download({
      torrentPath: webOnly,
      dir: await tmpDir("pt-ws-"),
      timeoutMs: 60_000,
    });
    expect(await sha256File(file)).toBe(report.body.sha256());
  });

  test("the magnet link carries name, size and the URL-encoded tracker", async () => {
    const res = await svc.api(`/v1/requests/${id}/magnet`);
    expect(res.status).toBe(200);
    const m = (await res.json()) as { magnet_link: string; infohash: string };
    const st = await svc.status(id);
    expect(m.infohash).toBe(st.infohash);
    const params = new URLSearchParams(m.magnet_link.slice("magnet:?".length));
    expect(params.get("xt")).toBe(`urn:btih:${st.infohash}`);
    expect(params.get("dn")).toBe("report.json");
    expect(params.get("xl")).toBe(String(report.body.size));
    const torrent = bdecode(await Bun.file(torrentPath).bytes()) as BDict;
    const announce = text(torrent.announce)!;
    expect(announce).toStartWith(`${svc.url}/announce?passkey=`);
    // The same passkeyed tracker as the request's .torrent.
    expect(params.get("tr")).toBe(announce);
    expect(m.magnet_link).toContain(`tr=${encodeURIComponent(announce)}`);
  });

  test("the magnet link carries the node's web seed as ws=, and that URL serves the exact bytes", async () => {
    const m = (await (await svc.api(`/v1/requests/${id}/magnet`)).json()) as { magnet_link: string };
    const torrent = bdecode(await Bun.file(torrentPath).bytes()) as BDict;
    const ws = text((torrent["url-list"] as Uint8Array[])[0])!;
    expect(ws).toMatch(/\/webseed\/[0-9a-f]{32}\/$/);
    expect(m.magnet_link).toContain(`&ws=${encodeURIComponent(ws)}`);
    const params = new URLSearchParams(m.magnet_link.slice("magnet:?".length));
    expect(params.getAll("ws")).toEqual([ws]);
    // BEP 19: a url-list entry ending in "/" is a folder; clients append the torrent's name.
    const res = await fetch(`${params.get("ws")}${params.get("dn")}`);
    expect(res.status).toBe(200);
    const hash = new Bun.CryptoHasher("sha256").update(await res.arrayBuffer()).digest("hex");
    expect(hash).toBe(report.body.sha256());
  });

  test("python3-libtorrent given only the magnet gets the right bytes, and the web seed serves some", async () => {
    // Neither aria2c nor libtorrent can fetch a magnet's metadata from a web seed (BEP 9 needs a
    // peer: checked, both stay at "metadata" with only ws=), so the tracker stays in the magnet.
    // Once the metadata is in, libtorrent uses ws=; without ws= the web seed counter stays put.
    const m = (await (await svc.api(`/v1/requests/${id}/magnet`)).json()) as { magnet_link: string };
    const before = await webSeedBytes();
    const file = await libtorrentDownload({
      magnet: m.magnet_link,
      dir: await tmpDir("pt-lt-magnet-"),
      timeoutMs: 60_000,
    });
    expect(await sha256File(file)).toBe(report.body.sha256());
    expect(await webSeedBytes()).toBeGreaterThan(before);
  });

  test("the same URL again within its ttl is answered from the ready result without a fetch", async () => {
    const before = origin.count("/files/report.json");
    const again = await svc.create({ url: origin.url("/files/report.json") });
    const st = await svc.status(again);
    expect(st.status).toBe("ready");
    expect(st.content_hash).toBe(report.body.sha256());
    expect(origin.count("/files/report.json")).toBe(before);
  });
});

describe("sharing one fetch", () => {
  test("20 concurrent requests for the same URL cause exactly one fetch at the origin", async () => {
    const ids = await Promise.all(
      Array.from({ length: 20 }, () => svc.create({ url: origin.url("/shared.txt") })),
    );
    const done = await Promise.all(ids.map((i) => svc.waitFor(i)));
    expect(done.map((d) => d.status)).toEqual(Array(20).fill("ready"));
    expect(new Set(done.map((d) => d.infohash)).size).toBe(1);
    expect(origin.count("/shared.txt")).toBe(1);
  });
});

describe("the running service", () => {
  test("health reports the database, queue, storage and seeding as healthy, runtime bun", async () => {
    const res = await fetch(`${svc.url}/v1/health`);
    expect(res.status).toBe(200);
    const h = (await res.json()) as {
      runtime: string;
      checks: Record<string, { status: string; torrents?: number }>;
    };
    expect(h.runtime).toBe("bun");
    for (const k of ["database", "task_queue", "storage", "seeding"])
      expect(h.checks[k]?.status).toBe("healthy");
    expect(h.checks.seeding!.torrents).toBeGreaterThanOrEqual(2);
  });

  test("pipeline log lines carry the job id and the caller's request id, and no secrets", async () => {
    const res = await svc.api("/v1/requests", {
      method: "POST",
      headers: { "x-request-id": "trace-e2e-42" },
      body: JSON.stringify({ url: origin.url("/files/report.json?sig=q5ecr3t"), ttl: 0 }),
    });
    expect(res.headers.get("x-request-id")).toBe("trace-e2e-42");
    const { id } = (await res.json()) as { id: string };
    await svc.waitFor(id);
    const lines = svc.logs();
    const pipeline = lines.filter((l) => l.request_id === "trace-e2e-42" && l.job_id);
    expect(pipeline.some((l) => typeof l.attempt === "number")).toBe(true); // fetch started
    expect(pipeline.some((l) => typeof l.content_hash === "string")).toBe(true); // fetch finished
    expect(pipeline.some((l) => l.job_status === "ready")).toBe(true);
    // the API's own line for the POST
    expect(
      lines.some((l) => l.method === "POST" && l.path === "/v1/requests" && l.request_id === "trace-e2e-42"),
    ).toBe(true);
    // neither the caller's bearer token nor the URL's query string reaches the log
    expect(svc.output).not.toContain(TOKEN);
    expect(svc.output).not.toContain("q5ecr3t");
  });

  test("start-up logs the library patches in effect, once (docs/patches.md)", () => {
    const lines = svc.output
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.msg === "library patches");
    expect(lines).toHaveLength(1);
    expect(lines[0]!.level).toBe("INFO");
    expect(lines[0]!.active).toEqual([
      "webtorrent-fast-pipes",
      "bittorrent-protocol-mse-dh",
      "bittorrent-tracker-swarm",
      "libsql-statement-cache",
      "node-http-agent-add-request",
      "webtorrent-peer-gate",
    ]);
    expect(lines[0]!.failed).toBeUndefined();
    expect(lines[0]!.drift).toBeUndefined();
  });
});
