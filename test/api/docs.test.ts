/**
 * /docs works with no internet: the page names only same-origin URLs, and the service itself
 * serves Swagger UI's script and stylesheet (from the pinned swagger-ui-dist). The same checks run
 * under workerd in test/edge/worker.test.ts.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { removeTmpDirs } from "../support/clients";
import { docsAssetType, sameOriginAssets } from "../support/docs";
import { Service } from "../support/service";

const require = createRequire(import.meta.url);
let svc: Service;

beforeAll(async () => {
  svc = await Service.start();
});
afterAll(async () => {
  await svc?.stop();
  await removeTmpDirs();
});

describe("given the service on Bun", () => {
  for (const path of ["/docs", "/v1/docs"]) {
    test(`when ${path} is loaded, then it and every asset it names come from this service`, async () => {
      const res = await fetch(`${svc.url}${path}`);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toStartWith("text/html");
      expect(res.headers.get("content-security-policy")).toContain("script-src 'self'");
      const urls = sameOriginAssets(await res.text());
      expect(urls.sort()).toEqual([
        "/docs/assets/init.js",
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
      ]);
      for (const u of urls) {
        const a = await fetch(`${svc.url}${u}`);
        expect(a.status).toBe(200);
        expect(a.headers.get("content-type")).toBe(docsAssetType(u));
        expect((await a.text()).length).toBeGreaterThan(u.endsWith("init.js") ? 50 : 10_000);
      }
    });
  }

  test("when the bundle is fetched, then it is swagger-ui-dist's file, byte for byte, and it points the UI at /openapi.json", async () => {
    const served = await (await fetch(`${svc.url}/docs/assets/swagger-ui-bundle.js`)).text();
    const shipped = await readFile(require.resolve("swagger-ui-dist/swagger-ui-bundle.js"), "utf8");
    expect(served).toBe(shipped);
    const init = await (await fetch(`${svc.url}/docs/assets/init.js`)).text();
    expect(init).toContain('url: root.getAttribute("data-openapi")');
    const html = await (await fetch(`${svc.url}/docs`)).text();
    expect(html).toContain('data-openapi="/openapi.json"');
    expect((await fetch(`${svc.url}/openapi.json`)).status).toBe(200);
  });
});
