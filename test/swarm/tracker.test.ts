/**
 * Our HTTP tracker at the protocol level: bencoded announce/scrape replies for allowed infohashes,
 * failure reasons for everything else, and never a peer's own address in its peer list (the
 * loopback "libtorrent bans the seeder" bug, see seeder/node/swarm/tracker.ts).
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { type BDict, bdecode, bencode, isDict, text } from "../../seeder/node/swarm/bencode";
import { createTracker, type Tracker } from "../../seeder/node/swarm/tracker";
import { aria2Download, removeTmpDirs, sha256File, tmpDir } from "../support/clients";
import { bytesRoute, type Origin, startOrigin } from "../support/origin";
import { Service } from "../support/service";

const INFOHASH = randomBytes(20).toString("hex");
let tracker: Tracker | null = null;

afterEach(async () => {
  await tracker?.close();
  tracker = null;
});

function makeTracker(allowed: string[] = [INFOHASH]): Tracker {
  const set = new Set(allowed);
  tracker = createTracker({ isAllowed: (h) => set.has(h) });
  return tracker;
}

/** Percent-encode every byte, as BitTorrent clients do for binary query values. */
function binParam(hex: string): string {
  return hex.replace(/../g, "%$&");
}

interface Announce {
  infohash?: string;
  peerId: string;
  port: number;
  event?: string;
  left?: number;
  compact?: 0 | 1;
}

async function announce(t: Tracker, from: string, a: Announce): Promise<BDict> {
  const q = [
    `info_hash=${binParam(a.infohash ?? INFOHASH)}`,
    `peer_id=${binParam(a.peerId)}`,
    `port=${a.port}`,
    "uploaded=0",
    "downloaded=0",
    `left=${a.left ?? 1000}`,
    `compact=${a.compact ?? 1}`,
    ...(a.event ? [`event=${a.event}`] : []),
  ].join("&");
  const res = await t.handle(new Request(`http://127.0.0.1:9/announce?${q}`), from);
  expect(res.status).toBe(200);
  const body = bdecode(new Uint8Array(await res.arrayBuffer()));
  if (!isDict(body)) throw new Error("tracker reply is not a dictionary");
  return body;
}

/** "ip:port" entries of a compact IPv4 peer list. */
function compactPeers(v: unknown): string[] {
  if (!(v instanceof Uint8Array)) return [];
  const out: string[] = [];
  for (let i = 0; i + 6 <= v.length; i += 6) {
    out.push(`${v[i]}.${v[i + 1]}.${v[i + 2]}.${v[i + 3]}:${(v[i + 4]! << 8) | v[i + 5]!}`);
  }
  return out;
}

const SEEDER_ID = randomBytes(20).toString("hex");
const LEECHER_ID = randomBytes(20).toString("hex");

describe("given a seeder and a leecher on the same IP (loopback)", () => {
  test("when the leecher announces, then it gets the seeder's port and never its own", async () => {
    const t = makeTracker();
    await announce(t, "127.0.0.1", { peerId: SEEDER_ID, port: 40001, event: "started", left: 0 });
    const reply = await announce(t, "127.0.0.1", { peerId: LEECHER_ID, port: 40002, event: "started" });
    expect(reply["failure reason"]).toBeUndefined();
    expect(compactPeers(reply["peers"])).toEqual(["127.0.0.1:40001"]);
    expect(reply["complete"]).toBe(1);
    expect(reply["incomplete"]).toBe(1);
  });

  test("when the seeder re-announces, then it gets the leecher and not itself", async () => {
    const t = makeTracker();
    await announce(t, "127.0.0.1", { peerId: SEEDER_ID, port: 40001, event: "started", left: 0 });
    await announce(t, "127.0.0.1", { peerId: LEECHER_ID, port: 40002, event: "started" });
    const reply = await announce(t, "127.0.0.1", { peerId: SEEDER_ID, port: 40001, left: 0 });
    expect(compactPeers(reply["peers"])).toEqual(["127.0.0.1:40002"]);
  });

  test("when a peer restarts on a new port with the same peer id, then its old entry is not handed back to it", async () => {
    const t = makeTracker();
    await announce(t, "127.0.0.1", { peerId: LEECHER_ID, port: 40003, event: "started" });
    const reply = await announce(t, "127.0.0.1", { peerId: LEECHER_ID, port: 40004, event: "started" });
    expect(compactPeers(reply["peers"])).toEqual([]);
  });

  test("when non-compact peers are asked for, then the own entry is filtered there too", async () => {
    const t = makeTracker();
    await announce(t, "127.0.0.1", { peerId: SEEDER_ID, port: 40001, event: "started", left: 0 });
    const reply = await announce(t, "127.0.0.1", {
      peerId: LEECHER_ID,
      port: 40002,
      event: "started",
      compact: 0,
    });
    const peers = reply["peers"];
    expect(Array.isArray(peers)).toBe(true);
    const list = (peers as BDict[]).map((p) => `${text(p["ip"])}:${p["port"]}`);
    expect(list).toEqual(["127.0.0.1:40001"]);
  });
});

describe("given an infohash the node does not seed", () => {
  const unknown = randomBytes(20).toString("hex");

  test("when a client announces it, then the reply is a failure reason and no swarm is created", async () => {
    const t = makeTracker();
    const reply = await announce(t, "127.0.0.1", {
      infohash: unknown,
      peerId: LEECHER_ID,
      port: 40002,
      event: "started",
    });
    expect(text(reply["failure reason"])).toBe("unknown torrent");
    expect(reply["peers"]).toBeUndefined();
    // Announcing the allowed torrent now does not reveal the refused peer either.
    const ok = await announce(t, "127.0.0.1", { peerId: SEEDER_ID, port: 40001, event: "started" });
    expect(compactPeers(ok["peers"])).toEqual([]);
  });

  test("when a client scrapes it, or scrapes everything, then the reply is a failure reason", async () => {
    const t = makeTracker();
    for (const q of [
      `info_hash=${binParam(unknown)}`,
      `info_hash=${binParam(INFOHASH)}&info_hash=${binParam(unknown)}`,
      "",
    ]) {
      const res = await t.handle(new Request(`http://127.0.0.1:9/scrape?${q}`), "127.0.0.1");
      const body = bdecode(new Uint8Array(await res.arrayBuffer())) as BDict;
      expect(text(body["failure reason"])).toBeString();
      expect(body["files"]).toBeUndefined();
    }
  });

  test("when the info_hash is malformed, then the reply is a failure reason", async () => {
    const t = makeTracker();
    const res = await t.handle(
      new Request("http://127.0.0.1:9/announce?info_hash=abc&peer_id=x&port=1"),
      "127.0.0.1",
    );
    const body = bdecode(new Uint8Array(await res.arrayBuffer())) as BDict;
    expect(text(body["failure reason"])).toBe("invalid info_hash");
  });
});

describe("given an allowed infohash with a seeder", () => {
  test("when it is scraped, then the counts come back under the binary infohash", async () => {
    const t = makeTracker();
    await announce(t, "127.0.0.1", { peerId: SEEDER_ID, port: 40001, event: "started", left: 0 });
    const res = await t.handle(
      new Request(`http://127.0.0.1:9/scrape?info_hash=${binParam(INFOHASH)}`),
      "127.0.0.1",
    );
    const body = bdecode(new Uint8Array(await res.arrayBuffer())) as BDict;
    // The key is the raw 20-byte infohash (our bencode reader turns keys into strings, so only
    // the count of entries and the entry itself are compared).
    const files = body["files"] as BDict;
    expect(Object.keys(files)).toHaveLength(1);
    const entry = Object.values(files)[0] as BDict;
    expect(entry["complete"]).toBe(1);
    expect(entry["incomplete"]).toBe(0);
  });

  test("when peers start, complete, update and stop, then the counts follow like stock bittorrent-tracker's", async () => {
    const t = makeTracker();
    const counts = async () => {
      const res = await t.handle(
        new Request(`http://127.0.0.1:9/scrape?info_hash=${binParam(INFOHASH)}`),
        "127.0.0.1",
      );
      const entry = Object.values(
        (bdecode(new Uint8Array(await res.arrayBuffer())) as BDict)["files"] as BDict,
      )[0] as BDict;
      return [entry["complete"], entry["incomplete"]];
    };
    const a = randomBytes(20).toString("hex");
    const b = randomBytes(20).toString("hex");
    await announce(t, "127.0.0.1", { peerId: a, port: 41001, event: "started", left: 500 });
    await announce(t, "127.0.0.2", { peerId: b, port: 41002, left: 500 }); // no event = update, unknown = start
    expect(await counts()).toEqual([0, 2]);
    await announce(t, "127.0.0.1", { peerId: a, port: 41001, event: "completed", left: 0 });
    await announce(t, "127.0.0.1", { peerId: a, port: 41001, event: "completed", left: 0 }); // twice: once counted
    expect(await counts()).toEqual([1, 1]);
    await announce(t, "127.0.0.2", { peerId: b, port: 41002, event: "started", left: 0 }); // known: an update
    expect(await counts()).toEqual([2, 0]);
    await announce(t, "127.0.0.1", { peerId: a, port: 41001, event: "stopped", left: 0 });
    await announce(t, "127.0.0.1", { peerId: a, port: 41001, event: "stopped", left: 0 }); // unknown now: ignored
    expect(await counts()).toEqual([1, 0]);
    const reply = await announce(t, "127.0.0.3", { peerId: randomBytes(20).toString("hex"), port: 41003 });
    expect(compactPeers(reply["peers"])).toEqual(["127.0.0.2:41002"]);
  });

  test("when a path other than announce/scrape is asked, then it is a 404", async () => {
    const t = makeTracker();
    const res = await t.handle(new Request("http://127.0.0.1:9/stats"), "127.0.0.1");
    expect(res.status).toBe(404);
  });
});

describe("the node's own seeder", () => {
  test("is handed out at NODE__ANNOUNCE_IP, not at the address its announce came from", async () => {
    // 192.0.2.0/24 is a documentation range: it only appears in tracker data here, nothing connects.
    const seederId = randomBytes(20).toString("hex");
    const set = new Set([INFOHASH]);
    tracker = createTracker({
      isAllowed: (h) => set.has(h),
      self: () => ({ peerIdHex: seederId, ip: "192.0.2.10", port: 6881 }),
    });
    await announce(tracker, "127.0.0.1", { peerId: seederId, port: 6881, left: 0, event: "started" });
    const other = await announce(tracker, "127.0.0.1", {
      peerId: randomBytes(20).toString("hex"),
      port: 7000,
    });
    expect(compactPeers(other.peers)).toEqual(["192.0.2.10:6881"]);
    // anyone else is still recorded where their announce came from
    const third = await announce(tracker, "127.0.0.1", {
      peerId: randomBytes(20).toString("hex"),
      port: 7001,
    });
    expect(compactPeers(third.peers).sort()).toEqual(["127.0.0.1:7000", "192.0.2.10:6881"]);
  });

  const SEEDER_PORT = 40001;
  function trackerWithSelf(ip: string | null): Tracker {
    const set = new Set([INFOHASH]);
    tracker = createTracker({
      isAllowed: (h) => set.has(h),
      self: () => ({ peerIdHex: SEEDER_ID, ip, port: SEEDER_PORT }),
    });
    return tracker;
  }

  test("cannot be stopped or moved to another port by announces carrying its peer id", async () => {
    const t = trackerWithSelf("127.0.0.1");
    await announce(t, "127.0.0.1", { peerId: SEEDER_ID, port: SEEDER_PORT, left: 0, event: "started" });
    // The impostor, from loopback (where the seeder is) and from elsewhere.
    for (const from of ["127.0.0.1", "192.0.2.66"]) {
      await announce(t, from, { peerId: SEEDER_ID, port: SEEDER_PORT, left: 0, event: "stopped" });
      await announce(t, from, { peerId: SEEDER_ID, port: 40999, left: 0, event: "started" });
    }
    // Not with its own peer id either: someone at the seeder's ip:port stopping "itself".
    await announce(t, "127.0.0.1", {
      peerId: randomBytes(20).toString("hex"),
      port: SEEDER_PORT,
      event: "started",
    });
    await announce(t, "127.0.0.1", {
      peerId: randomBytes(20).toString("hex"),
      port: SEEDER_PORT,
      event: "stopped",
    });
    const fresh = await announce(t, "127.0.0.1", { peerId: LEECHER_ID, port: 40002, event: "started" });
    expect(compactPeers(fresh["peers"])).toEqual([`127.0.0.1:${SEEDER_PORT}`]);
    expect(fresh["complete"]).toBe(1);
  });

  test("is listed in non-compact replies without its real peer id", async () => {
    const t = trackerWithSelf("127.0.0.1");
    await announce(t, "127.0.0.1", { peerId: SEEDER_ID, port: SEEDER_PORT, left: 0, event: "started" });
    const reply = await announce(t, "127.0.0.1", {
      peerId: LEECHER_ID,
      port: 40002,
      event: "started",
      compact: 0,
    });
    const peers = reply["peers"] as BDict[];
    expect(peers.map((p) => `${text(p["ip"])}:${p["port"]}`)).toEqual([`127.0.0.1:${SEEDER_PORT}`]);
    // bittorrent-tracker writes peer ids as UTF-8 of their latin1 string: compare both spellings.
    const shown = Buffer.from(peers[0]!["peer id"] as Uint8Array);
    const raw = Buffer.from(SEEDER_ID, "hex");
    expect(shown.length).toBeGreaterThanOrEqual(20);
    expect(shown.equals(raw)).toBe(false);
    expect(shown.equals(Buffer.from(raw.toString("latin1"), "utf8"))).toBe(false);
  });

  test("without an announce IP, takes its address only from announces made on this machine", async () => {
    const t = trackerWithSelf(null);
    await announce(t, "192.0.2.66", { peerId: SEEDER_ID, port: SEEDER_PORT, left: 0, event: "started" });
    const before = await announce(t, "127.0.0.1", { peerId: LEECHER_ID, port: 40002, event: "started" });
    expect(compactPeers(before["peers"])).toEqual([]);
    await announce(t, "127.0.0.1", { peerId: SEEDER_ID, port: SEEDER_PORT, left: 0, event: "started" });
    const after = await announce(t, "127.0.0.1", { peerId: LEECHER_ID, port: 40002 });
    expect(compactPeers(after["peers"])).toEqual([`127.0.0.1:${SEEDER_PORT}`]);
  });
});

/** The peer id a BitTorrent peer sends in its handshake: what anyone can learn from the port. */
function handshakePeerId(port: number, infohashHex: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: "127.0.0.1", port });
    let got = Buffer.alloc(0);
    sock.setTimeout(30_000, () => sock.destroy(new Error("no handshake from the seeder")));
    sock.on("error", reject);
    sock.on("connect", () => {
      sock.write(
        Buffer.concat([
          Buffer.from([19]),
          Buffer.from("BitTorrent protocol"),
          Buffer.alloc(8),
          Buffer.from(infohashHex, "hex"),
          randomBytes(20),
        ]),
      );
    });
    sock.on("data", (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length >= 68) {
        sock.destroy();
        resolve(got.subarray(48, 68).toString("hex"));
      }
    });
  });
}

describe("given the running service seeding a torrent", () => {
  let origin: Origin;
  let svc: Service;
  const content = bytesRoute({ size: 1024 * 1024 + 77, seed: 21, contentType: "application/json" });
  let torrentBytes: Uint8Array;
  let infohash: string;

  beforeAll(async () => {
    origin = await startOrigin({ "/data.json": content });
    svc = await Service.start();
    const id = await svc.create({ url: origin.url("/data.json") });
    const st = await svc.waitFor(id);
    expect(st.status).toBe("ready");
    infohash = st.infohash!;
    torrentBytes = await svc.torrent(id);
  });
  afterAll(async () => {
    await svc?.stop();
    await origin?.close();
    await removeTmpDirs();
  });

  /** A real HTTP announce to the node's tracker on loopback. */
  async function httpAnnounce(a: Announce): Promise<BDict> {
    const q = [
      `info_hash=${binParam(infohash)}`,
      `peer_id=${binParam(a.peerId)}`,
      `port=${a.port}`,
      "uploaded=0",
      "downloaded=0",
      `left=${a.left ?? 1000}`,
      `compact=${a.compact ?? 1}`,
      ...(a.event ? [`event=${a.event}`] : []),
    ].join("&");
    // The owner's passkeyed announce URL, as the .torrent names it.
    const announce = text((bdecode(torrentBytes) as BDict).announce)!;
    const res = await fetch(`${announce}&${q}`);
    expect(res.status).toBe(200);
    const body = bdecode(new Uint8Array(await res.arrayBuffer()));
    if (!isDict(body)) throw new Error("tracker reply is not a dictionary");
    return body;
  }

  test("when someone announces stopped and another port with the seeder's peer id, then leechers still get the seeder and aria2c downloads", async () => {
    // The reply to a non-compact announce does not reveal the seeder's peer id either.
    const listed = (await httpAnnounce({ peerId: randomBytes(20).toString("hex"), port: 40100, compact: 0 }))[
      "peers"
    ] as BDict[];
    // Having announced with the passkey, this address may handshake (TORRENT__ACCESS=passkey).
    const seederId = await handshakePeerId(svc.torrentPort, infohash);
    const ids = listed.map((p) => Buffer.from(p["peer id"] as Uint8Array));
    const raw = Buffer.from(seederId, "hex");
    expect(ids.some((b) => b.equals(raw) || b.equals(Buffer.from(raw.toString("latin1"), "utf8")))).toBe(
      false,
    );

    await httpAnnounce({ peerId: seederId, port: svc.torrentPort, left: 0, event: "stopped" });
    await httpAnnounce({ peerId: seederId, port: 40999, left: 0, event: "started" });
    const fresh = await httpAnnounce({
      peerId: randomBytes(20).toString("hex"),
      port: 40101,
      event: "started",
    });
    expect(compactPeers(fresh["peers"])).toContain(`127.0.0.1:${svc.torrentPort}`);
    expect(compactPeers(fresh["peers"])).not.toContain("127.0.0.1:40999");

    // Without the url-list, the only way to the bytes is the seeder found through the tracker.
    const t = bdecode(torrentBytes) as BDict;
    delete t["url-list"];
    const dir = await tmpDir("pt-impersonation-");
    const torrentPath = join(dir, "tracker-only.torrent");
    await writeFile(torrentPath, bencode(t));
    const file = await aria2Download({ torrentPath, dir: join(dir, "out"), timeoutMs: 60_000 });
    expect(await sha256File(file)).toBe(content.body.sha256());
  });
});
