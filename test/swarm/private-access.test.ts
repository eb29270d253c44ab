/**
 * Private access (TORRENT__ACCESS=passkey, the default): only the owners of a request can download
 * its content. The owner's .torrent and magnet carry the request's passkey; the node's tracker and
 * web seed answer only live passkeys; a DELETE or a revoked API key ends access at once. With
 * TORRENT__ACCESS=open, anyone who has the infohash or content hash can download again.
 * Real service, real aria2c and python3-libtorrent, on loopback.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { createClient } from "@libsql/client";
import { type BDict, bdecode, bencode, isDict, text } from "../../seeder/node/swarm/bencode";
import { aria2Download, libtorrentDownload, removeTmpDirs, sha256File, tmpDir } from "../support/clients";
import { bytesRoute, type Origin, startOrigin } from "../support/origin";
import { runToEnd } from "../support/run";
import { Service, TOKEN } from "../support/service";

const OTHER_TOKEN = "other-tenant-token-0123456789";
const BIN = resolve(import.meta.dir, "../../bin/proxytorrent");

const files = {
  "/a.bin": bytesRoute({ size: 1_200_000, seed: 121, contentType: "text/plain" }),
  "/b.bin": bytesRoute({ size: 300_000, seed: 122, contentType: "text/plain" }),
  "/c.bin": bytesRoute({ size: 400_000, seed: 123, contentType: "text/plain" }),
  "/d.bin": bytesRoute({ size: 500_000, seed: 124, contentType: "text/plain" }),
};
let origin: Origin;

/** `%xx` for every byte: how clients send a binary info_hash. */
const binParam = (hex: string) => hex.replace(/../g, "%$&");

/** A raw announce (or scrape) for `infohash` at `url` (which may carry `?passkey=`). */
async function trackerCall(url: string, infohash: string): Promise<BDict> {
  const q = [
    `info_hash=${binParam(infohash)}`,
    `peer_id=${binParam("2d5054303030302d".padEnd(40, "7"))}`,
    "port=40555",
    "uploaded=0",
    "downloaded=0",
    "left=1000",
    "compact=1",
  ].join("&");
  const res = await fetch(`${url}${url.includes("?") ? "&" : "?"}${q}`);
  expect(res.status).toBe(200);
  const body = bdecode(new Uint8Array(await res.arrayBuffer()));
  if (!isDict(body)) throw new Error("tracker reply is not a dictionary");
  return body;
}

const failure = (b: BDict) => text(b["failure reason"]) ?? null;

async function saveTorrent(bytes: Uint8Array, name: string): Promise<string> {
  const path = join(await tmpDir("pt-access-"), name);
  await writeFile(path, bytes);
  return path;
}

/** The .torrent without its web seed (tracker only) or without its trackers (web seed only). */
function only(torrent: Uint8Array, what: "tracker" | "webseed"): Uint8Array {
  const t = bdecode(torrent) as BDict;
  if (what === "tracker") delete t["url-list"];
  else {
    delete t.announce;
    delete t["announce-list"];
  }
  return bencode(t);
}

/**
 * aria2c given `source` for `ms` must not finish. Proving an absence needs a bounded wait; a few
 * seconds is many times what the same download takes when it is allowed (well under a second here).
 */
async function expectNoDownload(source: { torrentPath: string } | { magnet: string }, ms = 6_000) {
  const dir = await tmpDir("pt-denied-");
  const err = await aria2Download({ ...source, dir, timeoutMs: ms }).then(
    (path) => new Error(`downloaded ${path}`),
    (e: Error) => e,
  );
  expect(err.message).toContain("no complete download");
}

beforeAll(async () => {
  origin = await startOrigin(files);
});
afterAll(async () => {
  await origin?.close();
  await removeTmpDirs();
});

describe("TORRENT__ACCESS=passkey (the default)", () => {
  let svc: Service;
  let id: string;
  let st: Record<string, any>;
  let torrent: Uint8Array;
  let announce: string;
  let webSeed: string;
  const a = files["/a.bin"];
  const asOther = (path: string, init: RequestInit = {}) =>
    svc.api(path, { ...init, headers: { ...init.headers, authorization: `Bearer ${OTHER_TOKEN}` } });

  beforeAll(async () => {
    svc = await Service.start({ env: { SECURITY__BEARER_TOKENS: `${TOKEN},${OTHER_TOKEN}` } });
    id = await svc.create({ url: origin.url("/a.bin") });
    st = await svc.waitFor(id);
    expect(st.status).toBe("ready");
    torrent = await svc.torrent(id);
    announce = text((bdecode(torrent) as BDict).announce)!;
    webSeed = await svc.webSeed(id);
  });
  afterAll(async () => {
    await svc?.stop();
  });

  test("the owner's .torrent and magnet carry the same passkey; the infohash is the content's", async () => {
    const passkey = announce.match(/\/announce\?passkey=([0-9a-f]{32})$/)?.[1];
    expect(passkey).toBeDefined();
    expect(webSeed).toBe(`${svc.url}/webseed/${passkey}/`);
    const magnet = new URLSearchParams((await svc.magnet(id)).slice("magnet:?".length));
    expect(magnet.get("tr")).toBe(announce);
    expect(magnet.get("ws")).toBe(webSeed);
    expect(magnet.get("xt")).toBe(`urn:btih:${st.infohash}`);
    // Asking again hands out the same passkey (the .torrent a caller kept stays valid).
    expect(text((bdecode(await svc.torrent(id)) as BDict).announce)).toBe(announce);
  });

  test("aria2c and python3-libtorrent download the owner's .torrent via the tracker alone and via the web seed alone", async () => {
    const trackerOnly = await saveTorrent(only(torrent, "tracker"), "tracker-only.torrent");
    const webSeedOnly = await saveTorrent(only(torrent, "webseed"), "webseed-only.torrent");
    const dir = await tmpDir("pt-owner-");
    // One after the other: on loopback every peer shares 127.0.0.1, and libtorrent keeps one peer
    // per IP, so a concurrent leecher listed by the tracker can hide the seeder from it.
    const got: string[] = [];
    for (const [kind, torrentPath] of [
      ["lt-t", trackerOnly],
      ["lt-w", webSeedOnly],
    ] as const)
      got.push(await libtorrentDownload({ torrentPath, dir: join(dir, kind), timeoutMs: 60_000 }));
    for (const [kind, torrentPath] of [
      ["aria-t", trackerOnly],
      ["aria-w", webSeedOnly],
    ] as const)
      got.push(await aria2Download({ torrentPath, dir: join(dir, kind), timeoutMs: 60_000 }));
    for (const file of got) expect(await sha256File(file)).toBe(a.body.sha256());
  });

  test("a magnet with only the infohash and the plain announce URL gets a failure reason, no peers, and aria2c gets nothing", async () => {
    const plain = await trackerCall(`${svc.url}/announce`, st.infohash);
    expect(failure(plain)).toContain("access denied");
    expect(plain.peers).toBeUndefined();
    // A made-up passkey reads exactly the same: the reply does not tell what the node holds.
    const wrong = await trackerCall(`${svc.url}/announce?passkey=${"0".repeat(32)}`, st.infohash);
    expect(failure(wrong)).toBe(failure(plain));
    const unknown = await trackerCall(`${svc.url}/announce`, "ab".repeat(20));
    expect(failure(unknown)).toBe(failure(plain));
    // Scrape follows the same rule.
    expect(failure(await trackerCall(`${svc.url}/scrape`, st.infohash))).toBe(failure(plain));
    expect(failure(await trackerCall(announce.replace("/announce?", "/scrape?"), st.infohash))).toBeNull();

    await expectNoDownload({
      magnet: `magnet:?xt=urn:btih:${st.infohash}&dn=a.bin&tr=${encodeURIComponent(`${svc.url}/announce`)}`,
    });
  });

  test("the web seed by content hash, or with a wrong passkey, is 404 with the same answer", async () => {
    const byHash = await fetch(`${svc.url}/webseed/${st.content_hash}/a.bin`);
    const wrong = await fetch(`${svc.url}/webseed/${"1".repeat(32)}/a.bin`);
    const unknown = await fetch(`${svc.url}/webseed/${"ab".repeat(32)}/a.bin`);
    for (const res of [byHash, wrong, unknown]) expect(res.status).toBe(404);
    const bodies = await Promise.all([byHash.text(), wrong.text(), unknown.text()]);
    expect(new Set(bodies).size).toBe(1);
    const owner = await fetch(`${webSeed}a.bin`, { headers: { range: "bytes=0-99" } });
    expect(owner.status).toBe(206);
    // A browser page may read it (a later issue downloads in the browser).
    expect(owner.headers.get("access-control-allow-origin")).toBe("*");
    expect(owner.headers.get("access-control-expose-headers")).toContain("Content-Range");
    await owner.arrayBuffer();
  });

  test("another tenant's passkey, for another request, does not open this one", async () => {
    const created = await asOther("/v1/requests", {
      method: "POST",
      body: JSON.stringify({ url: origin.url("/b.bin") }),
    });
    expect(created.status).toBe(201);
    const otherId = ((await created.json()) as { id: string }).id;
    let other: Record<string, any> = {};
    for (let i = 0; i < 600 && other.status !== "ready"; i++) {
      other = (await (await asOther(`/v1/requests/${otherId}`)).json()) as Record<string, any>;
      if (other.status !== "ready") await Bun.sleep(50);
    }
    expect(other.status).toBe("ready");
    const otherTorrent = new Uint8Array(
      await (await asOther(`/v1/requests/${otherId}/torrent`)).arrayBuffer(),
    );
    const otherAnnounce = text((bdecode(otherTorrent) as BDict).announce)!;
    expect(otherAnnounce).not.toBe(announce);
    // B's passkey is live (it opens B's own torrent) but not for A's infohash.
    expect(failure(await trackerCall(otherAnnounce, other.infohash))).toBeNull();
    expect(failure(await trackerCall(otherAnnounce, st.infohash))).toContain("access denied");
    // B's web seed serves B's bytes, never A's.
    const bSeed = text(((bdecode(otherTorrent) as BDict)["url-list"] as Uint8Array[])[0])!;
    const res = await fetch(`${bSeed}b.bin`);
    expect(res.status).toBe(200);
    const bytes = new Uint8Array(await res.arrayBuffer());
    expect(new Bun.CryptoHasher("sha256").update(bytes).digest("hex")).toBe(files["/b.bin"].body.sha256());
    // And B cannot even see A's request.
    expect((await asOther(`/v1/requests/${id}/torrent`)).status).toBe(404);
  });

  test("after DELETE, the same .torrent no longer downloads from a fresh client", async () => {
    const cid = await svc.create({ url: origin.url("/c.bin") });
    expect((await svc.waitFor(cid)).status).toBe("ready");
    const ct = await svc.torrent(cid);
    const cAnnounce = text((bdecode(ct) as BDict).announce)!;
    const cSeed = await svc.webSeed(cid);
    const cHash = (await svc.status(cid)).infohash as string;
    expect((await fetch(`${cSeed}c.bin`, { headers: { range: "bytes=0-9" } })).status).toBe(206);
    expect(failure(await trackerCall(cAnnounce, cHash))).toBeNull();

    expect((await svc.api(`/v1/requests/${cid}`, { method: "DELETE" })).status).toBe(204);
    // Checked against the database on every call: no wait.
    expect((await fetch(`${cSeed}c.bin`, { headers: { range: "bytes=0-9" } })).status).toBe(404);
    expect(failure(await trackerCall(cAnnounce, cHash))).toContain("access denied");
    await expectNoDownload({ torrentPath: await saveTorrent(ct, "deleted.torrent") });
  });

  test("after the owner's API key is revoked, its request's .torrent no longer opens anything", async () => {
    const env = {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: svc.basePath,
      STORAGE__BASE_PATH: svc.basePath,
    };
    const made = await runToEnd([BIN, "keys", "create", "--name", "owner", "--json"], { env });
    expect(made.code).toBe(0);
    const key = JSON.parse(made.stdout) as { id: string; key: string };
    const asKey = (path: string, init: RequestInit = {}) =>
      svc.api(path, { ...init, headers: { ...init.headers, authorization: `Bearer ${key.key}` } });
    const created = await asKey("/v1/requests", {
      method: "POST",
      body: JSON.stringify({ url: origin.url("/d.bin") }),
    });
    expect(created.status).toBe(201);
    const did = ((await created.json()) as { id: string }).id;
    let d: Record<string, any> = {};
    for (let i = 0; i < 600 && d.status !== "ready"; i++) {
      d = (await (await asKey(`/v1/requests/${did}`)).json()) as Record<string, any>;
      if (d.status !== "ready") await Bun.sleep(50);
    }
    expect(d.status).toBe("ready");
    const dt = new Uint8Array(await (await asKey(`/v1/requests/${did}/torrent`)).arrayBuffer());
    const dAnnounce = text((bdecode(dt) as BDict).announce)!;
    const dSeed = text(((bdecode(dt) as BDict)["url-list"] as Uint8Array[])[0])!;
    expect((await fetch(`${dSeed}d.bin`, { headers: { range: "bytes=0-9" } })).status).toBe(206);

    const revoked = await runToEnd([BIN, "keys", "revoke", key.id], { env });
    expect(revoked.code).toBe(0);
    expect((await fetch(`${dSeed}d.bin`, { headers: { range: "bytes=0-9" } })).status).toBe(404);
    expect(failure(await trackerCall(dAnnounce, d.infohash))).toContain("access denied");
    await expectNoDownload({ torrentPath: await saveTorrent(dt, "revoked.torrent") });
  });

  test("passkeys never reach the log", async () => {
    const passkey = announce.match(/passkey=([0-9a-f]{32})/)![1]!;
    expect(svc.output).not.toContain(passkey);
  });
});

describe("TORRENT__ACCESS=open", () => {
  let svc: Service;
  beforeAll(async () => {
    svc = await Service.start({ env: { TORRENT__ACCESS: "open" } });
  });
  afterAll(async () => {
    await svc?.stop();
  });

  test("anyone with the infohash downloads over BitTorrent, and the web seed serves by content hash", async () => {
    const id = await svc.create({ url: origin.url("/b.bin") });
    const st = await svc.waitFor(id);
    expect(st.status).toBe("ready");
    const t = bdecode(await svc.torrent(id)) as BDict;
    expect(text(t.announce)).toBe(`${svc.url}/announce`);
    const file = await aria2Download({
      magnet: `magnet:?xt=urn:btih:${st.infohash}&dn=b.bin&tr=${encodeURIComponent(`${svc.url}/announce`)}`,
      dir: await tmpDir("pt-open-"),
      timeoutMs: 60_000,
    });
    expect(await sha256File(file)).toBe(files["/b.bin"].body.sha256());
    const res = await fetch(`${svc.url}/webseed/${st.content_hash}/b.bin`);
    expect(res.status).toBe(200);
    expect(new Bun.CryptoHasher("sha256").update(await res.arrayBuffer()).digest("hex")).toBe(
      files["/b.bin"].body.sha256(),
    );
    expect(existsSync(file)).toBe(true);

    // A passkeyed link handed out before the switch to `open` keeps working: the request's
    // passkey (made at POST whatever the mode) still opens the web seed and the tracker.
    const db = createClient({ url: `file:${join(svc.basePath, "proxytorrent.db")}` });
    const passkey = (await db.execute({ sql: "SELECT passkey FROM fetch_requests WHERE id = ?", args: [id] }))
      .rows[0]?.passkey as string;
    db.close();
    expect(passkey).toMatch(/^[0-9a-f]{32}$/);
    const kept = await fetch(`${svc.url}/webseed/${passkey}/b.bin`);
    expect(kept.status).toBe(200);
    expect(new Bun.CryptoHasher("sha256").update(await kept.arrayBuffer()).digest("hex")).toBe(
      files["/b.bin"].body.sha256(),
    );
    expect(failure(await trackerCall(`${svc.url}/announce?passkey=${passkey}`, st.infohash))).toBeNull();
  });
});

describe("TORRENT__PASSKEY_TTL_SECONDS", () => {
  test("a passkey stops working that long after its request became ready", async () => {
    const svc = await Service.start({ env: { TORRENT__PASSKEY_TTL_SECONDS: "2" } });
    try {
      const id = await svc.create({ url: origin.url("/c.bin") });
      expect((await svc.waitFor(id)).status).toBe("ready");
      const seed = `${await svc.webSeed(id)}c.bin`;
      const first = await fetch(seed, { headers: { range: "bytes=0-9" } });
      expect(first.status).toBe(206);
      await first.arrayBuffer();
      let status = 206;
      const deadline = Date.now() + 10_000;
      while (status !== 404 && Date.now() < deadline) {
        await Bun.sleep(200);
        const res = await fetch(seed, { headers: { range: "bytes=0-9" } });
        status = res.status;
        await res.arrayBuffer();
      }
      expect(status).toBe(404);
      // The request itself is still ready: only its passkey expired.
      expect((await svc.status(id)).status).toBe("ready");
    } finally {
      await svc.stop();
    }
  });
});
