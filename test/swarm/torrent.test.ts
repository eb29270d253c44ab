/**
 * Making torrents: deterministic infohashes, exactly the trackers and web seeds asked for (never
 * create-torrent's public defaults), piece length choice, magnet links and safe names.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { type BDict, bdecode, decodeTorrent, text } from "../../seeder/node/swarm/bencode";
import { choosePieceLength, createTorrentFile, torrentNameFromUrl } from "../../seeder/node/swarm/torrent";
import { magnetFor } from "../../src/torrents/links";
import { removeTmpDirs, tmpDir } from "../support/clients";
import { writeCasBlob } from "../support/seeder-fixture";

afterAll(removeTmpDirs);

const KiB = 1024;
const MiB = 1024 * KiB;

describe("choosePieceLength", () => {
  test("given an explicit piece size, then it wins whatever the file size", () => {
    expect(choosePieceLength(10, 4 * MiB)).toBe(4 * MiB);
    expect(choosePieceLength(10 * 1024 * MiB, 16 * KiB)).toBe(16 * KiB);
  });

  test("given an explicit size that is not a power of two >= 16 KiB, then it throws", () => {
    expect(() => choosePieceLength(10, 3 * MiB)).toThrow();
    expect(() => choosePieceLength(10, 8 * KiB)).toThrow();
  });

  test("given auto, then small files get 256 KiB and files over 64 MiB at least 1 MiB", () => {
    expect(choosePieceLength(1, "auto")).toBe(256 * KiB);
    expect(choosePieceLength(64 * MiB, "auto")).toBe(256 * KiB);
    expect(choosePieceLength(64 * MiB + 1, "auto")).toBe(1 * MiB);
    expect(choosePieceLength(500 * MiB, "auto")).toBe(1 * MiB);
  });

  test("given auto and big files, then about 2000 pieces at most, capped at 16 MiB", () => {
    for (const size of [2 * 1024 * MiB, 4 * 1024 * MiB + 7, 30 * 1024 * MiB]) {
      const len = choosePieceLength(size, "auto");
      expect(len & (len - 1)).toBe(0);
      expect(Math.ceil(size / len)).toBeLessThanOrEqual(2000);
      expect(Math.ceil(size / (len / 2))).toBeGreaterThan(2000);
    }
    expect(choosePieceLength(1024 * 1024 * MiB, "auto")).toBe(16 * MiB);
  });
});

describe("createTorrentFile", () => {
  test("given the same blob, name and settings twice, then the infohash is the same, and it is the SHA-1 of the info dict", async () => {
    const base = await tmpDir("pt-tor-");
    const blob = await writeCasBlob(base, randomBytes(700 * KiB + 3));
    const opts = {
      path: blob.path,
      name: "page.html",
      size: blob.size,
      pieceSize: "auto" as const,
      private: true,
      announce: ["http://127.0.0.1:1/announce"],
      urlList: [],
    };
    const a = await createTorrentFile(opts);
    const b = await createTorrentFile({ ...opts, announce: [], urlList: ["http://127.0.0.1:1/webseed/x/"] });
    expect(b.infohash).toBe(a.infohash);
    expect(a.infohash).toMatch(/^[0-9a-f]{40}$/);
    expect(a.pieceLength).toBe(256 * KiB);
    const other = await createTorrentFile({ ...opts, name: "other.html" });
    expect(other.infohash).not.toBe(a.infohash);
    const open = await createTorrentFile({ ...opts, private: false });
    expect(open.infohash).not.toBe(a.infohash);
    expect(decodeTorrent(a.torrent).infohash).toBe(a.infohash);
  });

  test("given a creation date, then the .torrent bytes are identical too", async () => {
    const base = await tmpDir("pt-tor-");
    const blob = await writeCasBlob(base, randomBytes(100 * KiB));
    const opts = {
      path: blob.path,
      name: "x.bin",
      size: blob.size,
      pieceSize: 16 * KiB,
      private: true,
      announce: [],
      urlList: [],
      creationDate: new Date("2024-01-02T03:04:05Z"),
      createdBy: "ProxyTorrent/test",
    };
    const a = await createTorrentFile(opts);
    const b = await createTorrentFile(opts);
    expect(Buffer.from(a.torrent).equals(Buffer.from(b.torrent))).toBe(true);
  });

  test("given our tracker and web seed, then the file names exactly those, private, with the right pieces", async () => {
    const base = await tmpDir("pt-tor-");
    const bytes = randomBytes(600 * KiB + 11);
    const blob = await writeCasBlob(base, bytes);
    const made = await createTorrentFile({
      path: blob.path,
      name: "report.json",
      size: blob.size,
      pieceSize: 256 * KiB,
      private: true,
      announce: ["http://127.0.0.1:8000/announce", "https://extra.example/announce"],
      urlList: [`http://127.0.0.1:8000/webseed/${blob.sha256}/`],
      createdBy: "ProxyTorrent/0.2.0",
    });
    const t = bdecode(made.torrent) as BDict;
    const info = t["info"] as BDict;
    expect(text(t["announce"])).toBe("http://127.0.0.1:8000/announce");
    expect((t["announce-list"] as Uint8Array[][]).map((tier) => tier.map((u) => text(u)))).toEqual([
      ["http://127.0.0.1:8000/announce"],
      ["https://extra.example/announce"],
    ]);
    expect((t["url-list"] as Uint8Array[]).map((u) => text(u))).toEqual([
      `http://127.0.0.1:8000/webseed/${blob.sha256}/`,
    ]);
    expect(text(t["created by"])).toBe("ProxyTorrent/0.2.0");
    expect(info["private"]).toBe(1);
    expect(text(info["name"])).toBe("report.json");
    expect(info["length"]).toBe(bytes.length);
    expect(info["piece length"]).toBe(256 * KiB);
    const pieces = info["pieces"] as Uint8Array;
    expect(pieces.length).toBe(20 * 3);
    const last = createHash("sha1")
      .update(bytes.subarray(2 * 256 * KiB))
      .digest();
    expect(Buffer.from(pieces.subarray(40, 60)).equals(last)).toBe(true);
  });

  test("given no trackers at all, then the file has no announce keys (create-torrent's public defaults stay out)", async () => {
    const base = await tmpDir("pt-tor-");
    const blob = await writeCasBlob(base, randomBytes(1000));
    const made = await createTorrentFile({
      path: blob.path,
      name: "a.txt",
      size: blob.size,
      pieceSize: "auto",
      private: true,
      announce: [],
      urlList: [],
    });
    const t = bdecode(made.torrent) as BDict;
    expect(t["announce"]).toBeUndefined();
    expect(t["announce-list"]).toBeUndefined();
    expect(new TextDecoder().decode(made.torrent)).not.toContain("tracker");
  });

  test("given a size that does not match the blob, or an empty blob, then it refuses", async () => {
    const base = await tmpDir("pt-tor-");
    const blob = await writeCasBlob(base, randomBytes(1000));
    const common = {
      path: blob.path,
      name: "a",
      pieceSize: "auto" as const,
      private: true,
      announce: [],
      urlList: [],
    };
    await expect(createTorrentFile({ ...common, size: 999 })).rejects.toThrow(/size mismatch/);
    await expect(createTorrentFile({ ...common, size: 0 })).rejects.toThrow(/empty/);
    await expect(createTorrentFile({ ...common, size: 1000, name: "a/b" })).rejects.toThrow(
      /invalid torrent name/,
    );
  });
});

describe("magnetFor", () => {
  test("given a name and trackers with reserved characters, then every value is URL-encoded", () => {
    const m = magnetFor({
      infohash: "ABCDEF0123456789ABCDEF0123456789ABCDEF01",
      name: "my file & more #1.html",
      size: 12345,
      trackers: ["http://127.0.0.1:8000/announce", "https://t.example/a?x=1&y=2"],
    });
    expect(m).toBe(
      "magnet:?xt=urn:btih:abcdef0123456789abcdef0123456789abcdef01" +
        "&dn=my%20file%20%26%20more%20%231.html&xl=12345" +
        "&tr=http%3A%2F%2F127.0.0.1%3A8000%2Fannounce&tr=https%3A%2F%2Ft.example%2Fa%3Fx%3D1%26y%3D2",
    );
    const params = new URLSearchParams(m.slice("magnet:?".length));
    expect(params.get("dn")).toBe("my file & more #1.html");
    expect(params.getAll("tr")).toEqual(["http://127.0.0.1:8000/announce", "https://t.example/a?x=1&y=2"]);
  });

  test("given web seeds, then each is a URL-encoded ws= after the trackers", () => {
    const ws = "http://127.0.0.1:8000/webseed/ab cd/";
    const m = magnetFor({
      infohash: "abcdef0123456789abcdef0123456789abcdef01",
      name: "a.bin",
      size: 1,
      trackers: ["http://127.0.0.1:8000/announce"],
      webSeeds: [ws],
    });
    expect(m).toEndWith(`&ws=${encodeURIComponent(ws)}`);
    expect(m).toContain("ws=http%3A%2F%2F127.0.0.1%3A8000%2Fwebseed%2Fab%20cd%2F");
    expect(new URLSearchParams(m.slice("magnet:?".length)).getAll("ws")).toEqual([ws]);
  });

  test("given something that is not a v1 infohash, then it throws", () => {
    expect(() => magnetFor({ infohash: "xyz", name: "a", size: 1, trackers: [] })).toThrow();
  });
});

describe("torrentNameFromUrl", () => {
  const cases: [string, string | null, string][] = [
    ["https://example.com/files/report.json", "application/json", "report.json"],
    ["https://example.com/", "text/html; charset=utf-8", "example.com.html"],
    ["https://example.com", null, "example.com"],
    ["https://example.com/wiki/Main_Page", "text/html", "Main_Page.html"],
    ["https://example.com/a/b/photo?size=large#x", "image/jpeg", "photo.jpg"],
    ["https://example.com/v1.2", "text/plain", "v1.2.txt"],
    ["https://example.com/caf%C3%A9%20menu.pdf", "application/pdf", "café menu.pdf"],
    ["https://example.com/..%2F..%2Fetc%2Fpasswd", "text/plain", "_.._etc_passwd.txt"],
    ["https://example.com/.htaccess", "text/plain", "htaccess.txt"],
    ["https://example.com/a%00b%0Ac%1Fd.txt", null, "abcd.txt"],
    ["https://example.com/CON", "text/plain", "_CON.txt"],
    ["https://example.com/feed", "application/rss+xml", "feed.xml"],
    ["https://example.com/data", "application/vnd.api+json", "data.json"],
    ["https://[::1]:8080/", "text/html", "__1.html"],
    ["not a url", "text/html", "download.html"],
  ];
  for (const [url, type, expected] of cases) {
    test(`given ${url} (${type}), then the name is ${JSON.stringify(expected)}`, () => {
      expect(torrentNameFromUrl(url, type)).toBe(expected);
    });
  }

  test("given a very long last segment, then the name is at most 200 UTF-8 bytes and keeps its extension", () => {
    const long = `https://example.com/${"é".repeat(300)}.html`;
    const name = torrentNameFromUrl(long, "text/html");
    expect(new TextEncoder().encode(name).length).toBeLessThanOrEqual(200);
    expect(name.endsWith("é.html")).toBe(true);
    expect(torrentNameFromUrl(long, "text/html")).toBe(name);
    const plain = torrentNameFromUrl(`https://example.com/${"a".repeat(500)}`, "text/plain");
    expect(plain).toBe(`${"a".repeat(196)}.txt`);
  });

  test("given any name it returns, then it has no slash, no control character and no leading dot", () => {
    const urls = ["https://h/%2e%2e", "https://h/%2F", "https://h/..", "https://h/%7F%7F", "https://h/ . . "];
    for (const u of urls) {
      const n = torrentNameFromUrl(u, "text/plain");
      expect(n.length).toBeGreaterThan(0);
      expect([...n].some((c) => c === "/" || c === "\\" || c.charCodeAt(0) < 0x20 || c === "\x7f")).toBe(
        false,
      );
      expect(n.startsWith(".")).toBe(false);
    }
  });
});
