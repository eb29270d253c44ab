/**
 * Our HTTP tracker at the protocol level: bencoded announce/scrape replies for allowed infohashes,
 * failure reasons for everything else, and never a peer's own address in its peer list (the
 * loopback "libtorrent bans the seeder" bug, see seeder/swarm/tracker.ts).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { type BDict, bdecode, isDict, text } from "../../seeder/swarm/bencode";
import { createTracker, type Tracker } from "../../seeder/swarm/tracker";

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
      self: () => ({ peerIdHex: seederId, ip: "192.0.2.10" }),
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
});
