/** Checks shared by the /docs tests on Bun (test/api/docs.test.ts) and workerd (test/edge). */
import { expect } from "bun:test";

/** Every URL the /docs page loads, after checking that it names no other host. */
export function sameOriginAssets(html: string): string[] {
  expect(html).not.toMatch(/https?:\/\//i);
  expect(html).not.toMatch(/(src|href)\s*=\s*["']?\/\//i);
  const urls = [...html.matchAll(/\b(?:src|href)\s*=\s*"([^"]*)"/gi)].map((m) => m[1]!);
  for (const u of urls) expect(u.startsWith("/")).toBe(true);
  return urls;
}

/** The Content-Type each /docs asset must be served with. */
export function docsAssetType(path: string): string {
  return path.endsWith(".css") ? "text/css; charset=utf-8" : "text/javascript; charset=utf-8";
}
