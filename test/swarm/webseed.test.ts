/**
 * The BEP 19 web seed over a real Bun.serve: whole file, single ranges, suffix ranges, HEAD,
 * unsatisfiable ranges, and the URL layout clients use.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import type { Server } from "bun";
import { parseRange, webSeedResponse } from "../../seeder/node/swarm/webseed";
import { nodePath, webSeedUrl } from "../../src/torrents/links";
import { removeTmpDirs, tmpDir } from "../support/clients";
import { writeCasBlob } from "../support/seeder-fixture";

const SIZE = 100_000;
let bytes: Buffer;
let server: Server<unknown>;
let base: string;

beforeAll(async () => {
  bytes = randomBytes(SIZE);
  const blob = await writeCasBlob(await tmpDir("pt-ws-"), bytes);
  server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch: (req) => webSeedResponse(req, blob.path, SIZE, 'résumé "final".pdf'),
  });
  base = `http://127.0.0.1:${server.port}/webseed/${blob.sha256}/x`;
});
afterAll(async () => {
  server?.stop(true);
  await removeTmpDirs();
});

async function get(headers: Record<string, string> = {}, method = "GET") {
  const res = await fetch(base, { method, headers });
  return { res, body: Buffer.from(await res.arrayBuffer()) };
}

describe("given a blob behind the web seed", () => {
  test("when fetched without Range, then 200 with the whole file and download headers", async () => {
    const { res, body } = await get();
    expect(res.status).toBe(200);
    expect(Buffer.compare(body, bytes)).toBe(0);
    expect(res.headers.get("accept-ranges")).toBe("bytes");
    expect(res.headers.get("content-type")).toBe("application/octet-stream");
    expect(res.headers.get("content-length")).toBe(String(SIZE));
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    expect(res.headers.get("content-disposition")).toBe(
      `attachment; filename="r_sum_ _final_.pdf"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.pdf`,
    );
  });

  test("when one byte range is asked, then 206 with exactly those bytes and Content-Range", async () => {
    const { res, body } = await get({ range: "bytes=1000-17383" });
    expect(res.status).toBe(206);
    expect(res.headers.get("content-range")).toBe(`bytes 1000-17383/${SIZE}`);
    expect(Buffer.compare(body, bytes.subarray(1000, 17384))).toBe(0);
  });

  test("when the range runs past the end or is open-ended or a suffix, then it is clipped to the file", async () => {
    const past = await get({ range: `bytes=${SIZE - 10}-${SIZE + 1000}` });
    expect(past.res.status).toBe(206);
    expect(Buffer.compare(past.body, bytes.subarray(SIZE - 10))).toBe(0);
    const open = await get({ range: "bytes=99000-" });
    expect(open.res.headers.get("content-range")).toBe(`bytes 99000-99999/${SIZE}`);
    expect(Buffer.compare(open.body, bytes.subarray(99000))).toBe(0);
    const suffix = await get({ range: "bytes=-500" });
    expect(Buffer.compare(suffix.body, bytes.subarray(SIZE - 500))).toBe(0);
  });

  test("when the range starts at or after the end, then 416 with the size", async () => {
    const { res, body } = await get({ range: `bytes=${SIZE}-` });
    expect(res.status).toBe(416);
    expect(res.headers.get("content-range")).toBe(`bytes */${SIZE}`);
    expect(body.length).toBe(0);
  });

  test("when HEAD is used, then the headers (length included) come without a body", async () => {
    const whole = await get({}, "HEAD");
    expect(whole.res.status).toBe(200);
    expect(whole.res.headers.get("content-length")).toBe(String(SIZE));
    expect(whole.body.length).toBe(0);
    const part = await get({ range: "bytes=0-9" }, "HEAD");
    expect(part.res.status).toBe(206);
    expect(part.res.headers.get("content-length")).toBe("10");
  });

  test("when another method is used, then 405", async () => {
    const { res } = await get({}, "POST");
    expect(res.status).toBe(405);
    expect(res.headers.get("allow")).toBe("GET, HEAD, OPTIONS");
  });
});

describe("parseRange", () => {
  test("given headers a server may ignore, then the whole file is served", () => {
    for (const h of [null, "", "items=0-1", "bytes=0-1,5-6", "bytes=5-3", "bytes=-", "bytes=abc"]) {
      expect(parseRange(h, 100)).toBeNull();
    }
  });

  test("given ranges that cannot be met, then unsatisfiable", () => {
    expect(parseRange("bytes=100-", 100)).toBe("unsatisfiable");
    expect(parseRange("bytes=-0", 100)).toBe("unsatisfiable");
    expect(parseRange("bytes=0-0", 0)).toBe("unsatisfiable");
  });
});

describe("web seed URLs", () => {
  const h = "ab".repeat(32);

  test("given the url-list entry, then it ends in a slash so clients append the torrent name", () => {
    expect(webSeedUrl("http://127.0.0.1:8000/", h)).toBe(`http://127.0.0.1:8000/webseed/${h}/`);
  });

  test("given request paths clients send, then the sha256 or passkey is found; other paths give null", () => {
    const at = (p: string) => nodePath(new URL(p, "http://127.0.0.1:8000"));
    const webSeedHash = (p: string) => {
      const got = at(p);
      return got?.kind === "webseed" ? got.hash : null;
    };
    expect(webSeedHash(`/webseed/${h}/report.json`)).toBe(h);
    expect(webSeedHash(`/webseed/${h}/`)).toBe(h);
    expect(webSeedHash(`/webseed/${h}`)).toBe(h);
    expect(webSeedHash(`/webseed/${h.toUpperCase()}/a/b`)).toBe(h);
    expect(webSeedHash(`/webseed/${h.slice(1)}/x`)).toBeNull();
    expect(webSeedHash(`/webseedx/${h}/x`)).toBeNull();
    expect(webSeedHash("/announce")).toBeNull();
    // Only at the root, where the node serves them: other prefixes belong to the API app.
    expect(webSeedHash(`/v1/webseed/${h}/x`)).toBeNull();
    const pk = "0123456789abcdef".repeat(2);
    expect(at(`/webseed/${pk}/file.bin`)).toEqual({ kind: "webseed", hash: null, passkey: pk });
    expect(at(`/announce?passkey=${pk}&info_hash=x`)).toEqual({
      kind: "tracker",
      action: "announce",
      passkey: pk,
    });
    expect(at(`/scrape?passkey=${pk}`)).toEqual({ kind: "tracker", action: "scrape", passkey: pk });
    expect(at("/announce")).toEqual({ kind: "tracker", action: "announce", passkey: null });
    expect(at(`/x/announce?passkey=${pk}`)).toBeNull();
    expect(at(`/webseed/${pk}1/x`)).toBeNull();
  });
});
