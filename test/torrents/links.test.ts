/**
 * The owner's .torrent and magnet: the node's tracker and web seed URLs carry the request's
 * passkey, everything else (above all the `info` dictionary, hence the infohash) stays the same.
 */
import { describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { type BDict, bdecode, decodeTorrent, text } from "../../seeder/node/swarm/bencode";
import { torrentFromPieces } from "../../seeder/node/swarm/torrent";
import {
  announceUrl,
  magnetFor,
  passkeyedMagnet,
  passkeyedTorrent,
  webSeedUrl,
} from "../../src/torrents/links";

const PUB = "http://127.0.0.1:8000";
const EXTRA = "http://tracker.example.test:6969/announce";
const HASH = "cd".repeat(32);
const PASSKEY = "0123456789abcdef0123456789abcdef";

function stored() {
  const size = 70_000;
  return torrentFromPieces({
    name: "report (1).json",
    size,
    private: true,
    announce: [announceUrl(PUB), EXTRA],
    urlList: [webSeedUrl(PUB, HASH)],
    createdBy: "ProxyTorrent/test",
    creationDate: new Date(Date.UTC(2026, 0, 1)),
    pieces: { pieceLength: 16_384, hashes: new Uint8Array(randomBytes(20 * Math.ceil(size / 16_384))) },
  });
}

describe("passkeyedTorrent", () => {
  test("rewrites the node's tracker and web seed only, and keeps the info bytes, hence the infohash", () => {
    const made = stored();
    const out = passkeyedTorrent(made.torrent, PASSKEY);
    expect(decodeTorrent(out).infohash).toBe(made.infohash);
    const t = bdecode(out) as BDict;
    expect(text(t.announce)).toBe(`${PUB}/announce?passkey=${PASSKEY}`);
    expect((t["announce-list"] as Uint8Array[][]).map((tier) => tier.map((u) => text(u)))).toEqual([
      [`${PUB}/announce?passkey=${PASSKEY}`],
      [EXTRA],
    ]);
    expect((t["url-list"] as Uint8Array[]).map((u) => text(u))).toEqual([`${PUB}/webseed/${PASSKEY}/`]);
    const before = bdecode(made.torrent) as BDict;
    for (const key of ["created by", "creation date", "encoding"]) expect(t[key]).toEqual(before[key]!);
  });

  test("refuses anything that is not a passkey (it would end up in a URL)", () => {
    expect(() => passkeyedTorrent(stored().torrent, "x&tr=http://evil/")).toThrow("not a passkey");
  });
});

describe("passkeyedMagnet", () => {
  test("rewrites tr= and ws= of the node only; name, size and infohash are kept", () => {
    const made = stored();
    const magnet = magnetFor({
      infohash: made.infohash,
      name: "report (1) & more+.json",
      size: 70_000,
      trackers: [announceUrl(PUB), EXTRA],
      webSeeds: [webSeedUrl(PUB, HASH)],
    });
    const out = passkeyedMagnet(magnet, PASSKEY);
    const p = new URLSearchParams(out.slice("magnet:?".length));
    expect(p.get("xt")).toBe(`urn:btih:${made.infohash}`);
    expect(p.get("dn")).toBe("report (1) & more+.json");
    expect(p.get("xl")).toBe("70000");
    expect(p.getAll("tr")).toEqual([`${PUB}/announce?passkey=${PASSKEY}`, EXTRA]);
    expect(p.getAll("ws")).toEqual([`${PUB}/webseed/${PASSKEY}/`]);
    // The same links the owner's .torrent names.
    const t = bdecode(passkeyedTorrent(made.torrent, PASSKEY)) as BDict;
    expect(p.get("tr")).toBe(text(t.announce)!);
  });
});
