/**
 * Integrity checks of the fetcher against a loopback origin: the caller's expected_sha256 and
 * expected_size, and the origin's Content-Digest / Repr-Digest (RFC 9530) and Content-MD5
 * (RFC 1864). A mismatch stores nothing: no blob, no temp file.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { claimedDigests } from "../../seeder/node/fetcher/digests";
import { bytesRoute, compress, type Origin, startOrigin, textRoute } from "../support/origin";
import { fetchError, type Harness, harness } from "./helpers";

let origin: Origin;
beforeAll(async () => {
  origin = await startOrigin();
});
afterAll(async () => {
  await origin.close();
});

const env = { EGRESS__ALLOW_PRIVATE_NETWORKS: "true", FETCHER__MIME_WHITELIST: "*/*" };
const b64 = (alg: string, data: Buffer) => createHash(alg).update(data).digest("base64");
const hex = (data: Buffer) => createHash("sha256").update(data).digest("hex");

type Check = [string, string];

async function withHarness(fn: (h: Harness, checks: Check[]) => Promise<void>) {
  const checks: Check[] = [];
  const h = await harness(env, { onIntegrityCheck: (kind, outcome) => checks.push([kind, outcome]) });
  try {
    await fn(h, checks);
    expect(await h.store.tempFiles()).toEqual([]);
  } finally {
    await h.cleanup();
  }
}

async function blobs(h: Harness): Promise<string[]> {
  const out: string[] = [];
  for await (const b of h.store.blobs()) out.push(b);
  return out;
}

const fetchWith = (h: Harness, url: string, expect?: { sha256?: string; size?: number }) =>
  h.fetcher.fetch({ url, method: "GET", headers: {} }, { signal: new AbortController().signal, expect });

async function failWith(h: Harness, url: string, expectation: { sha256?: string; size?: number }) {
  try {
    const r = await fetchWith(h, url, expectation);
    throw new Error(`expected the fetch to fail, got ${r.contentHash}`);
  } catch (e) {
    if ((e as Error).name !== "FetchError") throw e;
    return e as import("../../seeder/node/fetcher").FetchError;
  }
}

describe("claimedDigests (header parsing)", () => {
  const sha = Buffer.alloc(32, 1).toString("base64");
  const sha512 = Buffer.alloc(64, 2).toString("base64");

  test("reads sha-256 and sha-512 members and ignores unknown algorithms and malformed fields", () => {
    const got = claimedDigests(
      {
        "content-digest": `sha-256=:${sha}:, sha-512=:${sha512}:, md5=:${Buffer.alloc(16).toString("base64")}:, unixsum=3`,
        "repr-digest": "sha-256=not a byte sequence",
        "content-md5": "%%%",
      },
      200,
      "GET",
    );
    expect(got.map((d) => [d.field, d.label, d.value.length])).toEqual([
      ["content-digest", "sha-256", 32],
      ["content-digest", "sha-512", 64],
    ]);
    expect(claimedDigests({ "repr-digest": "sha-256=:%%:" }, 200, "GET")).toEqual([]);
  });

  test("a 206 checks its content (Content-Digest, Content-MD5) but not Repr-Digest; a HEAD nothing", () => {
    const headers = {
      "content-digest": `sha-256=:${sha}:`,
      "repr-digest": `sha-256=:${sha}:`,
      "content-md5": Buffer.alloc(16, 3).toString("base64"),
    };
    expect(claimedDigests(headers, 200, "GET").map((d) => d.kind)).toEqual([
      "content_digest",
      "repr_digest",
      "content_md5",
    ]);
    expect(claimedDigests(headers, 206, "GET").map((d) => d.kind)).toEqual(["content_digest", "content_md5"]);
    expect(claimedDigests(headers, 200, "HEAD")).toEqual([]);
  });
});

describe("expected_sha256 / expected_size", () => {
  const route = bytesRoute({ size: 300_000, seed: 41 });
  const body = route.body;

  test("given the right hash and size, the body is stored under it", async () => {
    origin.route("/exp-ok", route);
    await withHarness(async (h, checks) => {
      const r = await fetchWith(h, origin.url("/exp-ok"), { sha256: body.sha256(), size: body.size });
      expect(r.contentHash).toBe(body.sha256());
      expect(checks).toEqual([["expected_sha256", "ok"]]);
      r.pin.release();
    });
  });

  test("given a wrong hash, it fails with integrity_mismatch naming both hashes, and stores nothing", async () => {
    origin.route("/exp-bad", route);
    const wrong = "ab".repeat(32);
    await withHarness(async (h, checks) => {
      const e = await failWith(h, origin.url("/exp-bad"), { sha256: wrong });
      expect(e.code).toBe("integrity_mismatch");
      expect(e.transient).toBe(false);
      expect(e.message).toContain(wrong);
      expect(e.message).toContain(body.sha256());
      expect(await blobs(h)).toEqual([]);
      expect(checks).toEqual([["expected_sha256", "mismatch"]]);
    });
  });

  test("given a Content-Length other than expected_size, it is refused before the body is read", async () => {
    origin.route("/exp-size-cl", route);
    await withHarness(async (h) => {
      const e = await failWith(h, origin.url("/exp-size-cl"), { size: 1000 });
      expect(e.code).toBe("integrity_mismatch");
      expect(e.message).toBe(
        "The body is announced as 300000 bytes (Content-Length), not the expected 1000 bytes (expected_size); nothing was stored",
      );
      expect(await blobs(h)).toEqual([]);
    });
  });

  test("given a chunked body growing past expected_size, it stops while streaming", async () => {
    origin.route("/exp-size-chunked", bytesRoute({ size: 300_000, seed: 41, contentLength: false }));
    await withHarness(async (h) => {
      const e = await failWith(h, origin.url("/exp-size-chunked"), { size: 1000 });
      expect(e.code).toBe("integrity_mismatch");
      expect(e.message).toStartWith("The body is more than 1000 bytes");
      expect(await blobs(h)).toEqual([]);
    });
  });

  test("given a chunked body shorter than expected_size, it is refused at its end", async () => {
    origin.route("/exp-size-short", bytesRoute({ size: 5000, seed: 41, contentLength: false }));
    await withHarness(async (h) => {
      const e = await failWith(h, origin.url("/exp-size-short"), { size: 6000 });
      expect(e.code).toBe("integrity_mismatch");
      expect(e.message).toBe(
        "The body is 5000 bytes, not the expected 6000 bytes (expected_size); nothing was stored",
      );
      expect(await blobs(h)).toEqual([]);
    });
  });
});

describe("origin digests", () => {
  const data = Buffer.from("integrity ".repeat(5000));
  const wrongData = Buffer.from("something else");
  const serve = (path: string, headers: Record<string, string>, body = data) =>
    origin.route(path, textRoute(body, { contentType: "text/plain", headers }));

  const cases: {
    name: string;
    kind: string;
    headers: (d: Buffer) => Record<string, string>;
    shown: (d: Buffer) => string;
  }[] = [
    {
      name: "Content-Digest sha-256",
      kind: "content_digest",
      headers: (d) => ({ "content-digest": `sha-256=:${b64("sha256", d)}:` }),
      shown: (d) => `content-digest: sha-256=:${b64("sha256", d)}:`,
    },
    {
      name: "Content-Digest sha-512",
      kind: "content_digest",
      headers: (d) => ({ "content-digest": `sha-512=:${b64("sha512", d)}:` }),
      shown: (d) => `content-digest: sha-512=:${b64("sha512", d)}:`,
    },
    {
      name: "Repr-Digest sha-256",
      kind: "repr_digest",
      headers: (d) => ({ "repr-digest": `sha-256=:${b64("sha256", d)}:` }),
      shown: (d) => `repr-digest: sha-256=:${b64("sha256", d)}:`,
    },
    {
      name: "Content-MD5",
      kind: "content_md5",
      headers: (d) => ({ "content-md5": b64("md5", d) }),
      shown: (d) => `content-md5: ${b64("md5", d)}`,
    },
  ];

  for (const c of cases) {
    const slug = c.kind.replace("_", "-") + c.name.replace(/\W/g, "");
    test(`given a correct ${c.name}, the body is stored and the digest reported as verified`, async () => {
      serve(`/ok-${slug}`, c.headers(data));
      await withHarness(async (h, checks) => {
        const r = await fetchWith(h, origin.url(`/ok-${slug}`));
        expect(r.contentHash).toBe(hex(data));
        expect(r.verifiedDigests).toEqual([c.shown(data)]);
        expect(checks).toEqual([[c.kind, "ok"]]);
        r.pin.release();
      });
    });

    test(`given a wrong ${c.name}, it fails with digest_mismatch and stores nothing`, async () => {
      serve(`/bad-${slug}`, c.headers(wrongData));
      await withHarness(async (h, checks) => {
        const e = await fetchError(h, origin.url(`/bad-${slug}`));
        expect(e.code).toBe("digest_mismatch");
        expect(e.transient).toBe(true);
        expect(e.message).toContain("does not match its");
        expect(await blobs(h)).toEqual([]);
        expect(checks).toEqual([[c.kind, "mismatch"]]);
      });
    });
  }

  test("given a gzip body, Content-Digest and Repr-Digest are checked over the bytes as sent (encoded)", async () => {
    const encoded = compress(data, "gzip");
    origin.route(
      "/gz",
      textRoute(encoded, {
        contentType: "text/plain",
        headers: {
          "content-encoding": "gzip",
          "content-digest": `sha-256=:${b64("sha256", encoded)}:`,
          "repr-digest": `sha-512=:${b64("sha512", encoded)}:`,
        },
      }),
    );
    await withHarness(async (h, checks) => {
      const r = await fetchWith(h, origin.url("/gz"));
      expect(r.contentHash).toBe(hex(data));
      expect(r.verifiedDigests).toEqual([
        `content-digest: sha-256=:${b64("sha256", encoded)}:`,
        `repr-digest: sha-512=:${b64("sha512", encoded)}:`,
      ]);
      expect(checks).toEqual([
        ["content_digest", "ok"],
        ["repr_digest", "ok"],
      ]);
      r.pin.release();
    });
  });

  test("given only unknown algorithms, nothing is checked and the body is stored", async () => {
    serve("/unknown-alg", { "content-digest": "unixsum=12345, adler=:AAAA:" });
    await withHarness(async (h, checks) => {
      const r = await fetchWith(h, origin.url("/unknown-alg"));
      expect(r.verifiedDigests).toEqual([]);
      expect(checks).toEqual([]);
      r.pin.release();
    });
  });
});
