/**
 * Integrity through the real service: the caller's `expected_sha256` / `expected_size`, content
 * already in the store satisfying a request by its hash, and origins sending correct and wrong
 * Content-Digest (sha-256, sha-512), Repr-Digest and Content-MD5. A mismatch stores nothing.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { bytesRoute, type Origin, startOrigin, textRoute } from "../support/origin";
import { metricValue } from "../support/prometheus";
import { Service } from "../support/service";

let origin: Origin;
let svc: Service;

const good = bytesRoute({ size: 200_000, seed: 77, contentType: "text/plain" });
const other = bytesRoute({ size: 50_000, seed: 78, contentType: "text/plain" });
const data = Buffer.from("digest me ".repeat(3000));
const wrong = Buffer.from("not the body");
/** What the origins with wrong digests send: stored by nobody, so its blob must never appear. */
const served = Buffer.from("other body ".repeat(3000));
const b64 = (alg: string, d: Buffer) => createHash(alg).update(d).digest("base64");

const DIGESTS: {
  name: string;
  kind: string;
  header: (d: Buffer) => Record<string, string>;
  shown: string;
}[] = [
  {
    name: "Content-Digest sha-256",
    kind: "content_digest",
    header: (d) => ({ "content-digest": `sha-256=:${b64("sha256", d)}:` }),
    shown: `content-digest: sha-256=:${b64("sha256", data)}:`,
  },
  {
    name: "Content-Digest sha-512",
    kind: "content_digest",
    header: (d) => ({ "content-digest": `sha-512=:${b64("sha512", d)}:` }),
    shown: `content-digest: sha-512=:${b64("sha512", data)}:`,
  },
  {
    name: "Repr-Digest sha-256",
    kind: "repr_digest",
    header: (d) => ({ "repr-digest": `sha-256=:${b64("sha256", d)}:` }),
    shown: `repr-digest: sha-256=:${b64("sha256", data)}:`,
  },
  {
    name: "Content-MD5",
    kind: "content_md5",
    header: (d) => ({ "content-md5": b64("md5", d) }),
    shown: `content-md5: ${b64("md5", data)}`,
  },
];

beforeAll(async () => {
  origin = await startOrigin({
    "/good": good,
    "/good-again": good,
    "/bad-hash": other,
    "/bad-size": other,
    "/never": other,
  });
  DIGESTS.forEach((d, i) => {
    origin.route(`/ok-${i}`, textRoute(data, { contentType: "text/plain", headers: d.header(data) }));
    origin.route(`/bad-${i}`, textRoute(served, { contentType: "text/plain", headers: d.header(wrong) }));
  });
  // Two attempts: a digest mismatch is retried once (a corrupt transfer), an integrity mismatch is not.
  svc = await Service.start({ env: { FETCHER__MAX_ATTEMPTS: "2" } });
});
afterAll(async () => {
  await svc?.stop();
  await origin?.close();
});

const settle = (id: string) => svc.waitFor(id, ["ready", "error", "cancelled"], 60_000);
const blobPath = (sha: string) => join(svc.basePath, "cas", "sha256", sha.slice(0, 2), sha.slice(2, 4), sha);
async function partFiles(): Promise<string[]> {
  return (await readdir(join(svc.basePath, "tmp"))).filter((f) => f.endsWith(".part"));
}
const checks = (kind: string, outcome: string) =>
  metricValue(svc.url, "proxytorrent_integrity_checks_total", { kind, outcome });

describe("expected_sha256 and expected_size", () => {
  test("given the right expected_sha256 (upper-case) and size, the request becomes ready", async () => {
    const id = await svc.create({
      url: origin.url("/good"),
      expected_sha256: good.body.sha256().toUpperCase(),
      expected_size: good.body.size,
    });
    const st = await settle(id);
    expect(st.status).toBe("ready");
    expect(st.content_hash).toBe(good.body.sha256());
    expect(st.verified_digests).toBeNull();
    expect(await checks("expected_sha256", "ok")).toBe(1);
  });

  test("given a wrong expected_sha256, it ends in integrity_mismatch naming both hashes, asked once, nothing stored", async () => {
    const expected = "0123456789abcdef".repeat(4);
    const id = await svc.create({ url: origin.url("/bad-hash"), expected_sha256: expected });
    const st = await settle(id);
    expect(st.status).toBe("error");
    expect(st.error_code).toBe("integrity_mismatch");
    expect(st.error_message).toContain(expected);
    expect(st.error_message).toContain(other.body.sha256());
    expect(st.content_hash).toBeNull();
    expect(origin.count("/bad-hash")).toBe(1);
    expect(existsSync(blobPath(other.body.sha256()))).toBe(false);
    expect(await partFiles()).toEqual([]);
    expect(await checks("expected_sha256", "mismatch")).toBe(1);
  });

  test("given a wrong expected_size, it is refused (integrity_mismatch) and nothing is stored", async () => {
    const id = await svc.create({ url: origin.url("/bad-size"), expected_size: 1234 });
    const st = await settle(id);
    expect(st.status).toBe("error");
    expect(st.error_code).toBe("integrity_mismatch");
    expect(st.error_message).toContain("1234");
    expect(st.error_message).toContain(String(other.body.size));
    expect(origin.count("/bad-size")).toBe(1);
    expect(existsSync(blobPath(other.body.sha256()))).toBe(false);
    expect(await partFiles()).toEqual([]);
  });

  test("given expected_sha256 of content already stored, the request is ready without asking the origin", async () => {
    const id = await svc.create({ url: origin.url("/never"), expected_sha256: good.body.sha256(), ttl: 0 });
    const st = await settle(id);
    expect(st.status).toBe("ready");
    expect(st.content_hash).toBe(good.body.sha256());
    expect(st.content_size).toBe(good.body.size);
    expect(st.content_type).toBeNull();
    expect(origin.count("/never")).toBe(0);
  });

  test("a request expecting a hash does not join a ready fetch of the same URL that did not check it", async () => {
    const plain = await svc.create({ url: origin.url("/good-again") });
    expect((await settle(plain)).status).toBe("ready");
    const asked = origin.count("/good-again");
    const id = await svc.create({ url: origin.url("/good-again"), expected_size: 999 });
    const st = await settle(id);
    expect(st.error_code).toBe("integrity_mismatch");
    expect(origin.count("/good-again")).toBe(asked + 1);
  });

  test("invalid values are 422", async () => {
    for (const extra of [
      { expected_sha256: "abc" },
      { expected_sha256: "g".repeat(64) },
      { expected_size: 0 },
      { expected_size: 1.5 },
      { expected_size: "10" },
    ]) {
      const res = await svc.api("/v1/requests", {
        method: "POST",
        body: JSON.stringify({ url: origin.url("/good"), ...extra }),
      });
      expect(res.status).toBe(422);
      const detail = ((await res.json()) as { detail: { loc: string[] }[] }).detail;
      expect(detail[0]!.loc).toEqual(["body", Object.keys(extra)[0]!]);
    }
  });
});

describe("origin digests", () => {
  test("given correct digests, each request becomes ready with the digest recorded", async () => {
    const ids = await Promise.all(DIGESTS.map((_, i) => svc.create({ url: origin.url(`/ok-${i}`), ttl: 0 })));
    for (const [i, id] of ids.entries()) {
      const st = await settle(id);
      expect(st.status).toBe("ready");
      expect(st.verified_digests).toEqual([DIGESTS[i]!.shown]);
    }
    expect(await checks("content_digest", "ok")).toBe(2);
    expect(await checks("repr_digest", "ok")).toBe(1);
    expect(await checks("content_md5", "ok")).toBe(1);
  });

  test("given wrong digests, each request ends in digest_mismatch after one retry, nothing stored", async () => {
    const ids = await Promise.all(
      DIGESTS.map((_, i) => svc.create({ url: origin.url(`/bad-${i}`), ttl: 0 })),
    );
    for (const [i, id] of ids.entries()) {
      const st = await settle(id);
      expect(st.status).toBe("error");
      expect(st.error_code).toBe("digest_mismatch");
      const field = Object.keys(DIGESTS[i]!.header(wrong))[0]!;
      expect(st.error_message).toContain(`does not match its ${field}`);
      expect(origin.count(`/bad-${i}`)).toBe(2);
    }
    expect(await checks("content_digest", "mismatch")).toBe(4);
    expect(await checks("repr_digest", "mismatch")).toBe(2);
    expect(await checks("content_md5", "mismatch")).toBe(2);
    expect(existsSync(blobPath(createHash("sha256").update(served).digest("hex")))).toBe(false);
    expect(await partFiles()).toEqual([]);
  });
});
