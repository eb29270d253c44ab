/**
 * Bad input and bad origins, through the real service: each ends in a documented status or in
 * `error` with a message a caller can act on, and leaves nothing half-written in the store.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { bytesRoute, type Origin, startOrigin, statusRoute, textRoute } from "../support/origin";
import { Service } from "../support/service";

let origin: Origin;
let svc: Service;

beforeAll(async () => {
  origin = await startOrigin({
    "/big": bytesRoute({ size: 300_000, seed: 1, contentType: "text/plain" }),
    "/big-chunked": bytesRoute({ size: 300_000, seed: 2, contentType: "text/plain", contentLength: false }),
    "/zip": bytesRoute({ size: 1000, seed: 3, contentType: "application/zip" }),
    "/gone": statusRoute(404),
    "/stall": bytesRoute({ size: 100_000, seed: 4, contentType: "text/plain", stallAfter: 10 }),
    "/ok": textRoute("hello", { contentType: "text/plain" }),
    "/empty": textRoute("", { contentType: "text/plain" }),
  });
  svc = await Service.start({
    env: {
      FETCHER__MAX_SIZE: "200000",
      FETCHER__READ_TIMEOUT: "1",
      FETCHER__MAX_ATTEMPTS: "1",
    },
  });
});
afterAll(async () => {
  await svc?.stop();
  await origin?.close();
});

async function failsWith(path: string): Promise<string> {
  const id = await svc.create({ url: origin.url(path) });
  const st = await svc.waitFor(id, ["ready", "error", "cancelled"], 30_000);
  expect(st.status).toBe("error");
  expect(st.completed_at).toBeNull();
  return st.error_message as string;
}

describe("origins that must not become torrents", () => {
  test("a body over FETCHER__MAX_SIZE (announced by Content-Length) is refused", async () => {
    expect(await failsWith("/big")).toMatch(/200000|size|large/i);
  });

  test("a body over FETCHER__MAX_SIZE without Content-Length is cut off while streaming", async () => {
    expect(await failsWith("/big-chunked")).toMatch(/200000|size|large/i);
  });

  test("a content type outside the whitelist is refused", async () => {
    expect(await failsWith("/zip")).toContain("application/zip");
  });

  test("a 404 from the origin is an error, not a torrent of the error page", async () => {
    expect(await failsWith("/gone")).toContain("404");
  });

  test("an origin that stops sending times out", async () => {
    expect(await failsWith("/stall")).toMatch(/sent nothing for 1 s/);
  });

  test("an empty body is an error, not an empty torrent", async () => {
    expect(await failsWith("/empty")).toBe("The origin sent an empty body: there is nothing to share");
  });

  test("nothing half-written is left in the store", async () => {
    const tmp = await readdir(join(svc.basePath, "tmp"));
    expect(tmp.filter((f) => f.endsWith(".part"))).toEqual([]);
  });
});

describe("bad input over HTTP", () => {
  const post = (body: string) =>
    svc.api("/v1/requests", { method: "POST", body, headers: { "content-type": "application/json" } });

  test("malformed JSON is 422 json_invalid", async () => {
    const res = await post("{");
    expect(res.status).toBe(422);
    expect(((await res.json()) as { detail: { type: string }[] }).detail[0]!.type).toBe("json_invalid");
  });

  test("an unknown method is 422 naming the field", async () => {
    const res = await post(JSON.stringify({ url: origin.url("/ok"), method: "BREW" }));
    expect(res.status).toBe(422);
    expect(((await res.json()) as { detail: { loc: string[] }[] }).detail[0]!.loc).toEqual([
      "body",
      "method",
    ]);
  });

  test("a URL with user:pass@ is 422; the password is neither echoed, stored nor logged", async () => {
    const before = origin.count("/ok");
    const url = origin.url("/ok").replace("http://", "http://alice:pw-never-shown@");
    const res = await svc.api("/v1/requests", { method: "POST", body: JSON.stringify({ url }) });
    expect(res.status).toBe(422);
    const text = await res.text();
    expect(text).toContain("user name or password");
    expect(text).not.toContain("pw-never-shown");
    expect(svc.output).not.toContain("pw-never-shown");
    expect(origin.count("/ok")).toBe(before);
  });

  test("a bad URL is 422 naming the field", async () => {
    const res = await post(JSON.stringify({ url: "javascript:alert(1)" }));
    expect(res.status).toBe(422);
    expect(((await res.json()) as { detail: { loc: string[] }[] }).detail[0]!.loc).toEqual(["body", "url"]);
  });
});

describe("egress guard", () => {
  test("loopback origins are refused unless EGRESS__ALLOW_PRIVATE_NETWORKS=true", async () => {
    const strict = await Service.start({
      env: { EGRESS__ALLOW_PRIVATE_NETWORKS: "false", FETCHER__MAX_ATTEMPTS: "1" },
    });
    try {
      const before = origin.count("/ok");
      // A literal loopback URL can never be fetched under these settings: 422 at once, naming
      // the setting that would allow it, instead of a 201 that ends in error.
      const res = await strict.api("/v1/requests", {
        method: "POST",
        body: JSON.stringify({ url: origin.url("/ok") }),
      });
      expect(res.status).toBe(422);
      const detail = ((await res.json()) as { detail: { loc: string[]; msg: string }[] }).detail[0]!;
      expect(detail.loc).toEqual(["body", "url"]);
      expect(detail.msg).toContain("loopback");
      expect(detail.msg).toContain("EGRESS__ALLOW_PRIVATE_NETWORKS=true");
      expect(origin.count("/ok")).toBe(before);
    } finally {
      await strict.stop();
    }
  });
});
