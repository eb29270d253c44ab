/**
 * Docs name real files: every backticked repository path in README.md and docs/*.md exists.
 * A path counts when it starts with a top-level folder of the repo (`src/…`, `seeder/…`) or names a
 * file at the root (`wrangler.toml`); placeholders (`<id>`, `*`, `…`) are skipped.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "..");

const TOP = new Set(readdirSync(ROOT).filter((n) => !n.startsWith(".") && n !== "node_modules"));

function repoPaths(markdown: string): string[] {
  const out = new Set<string>();
  for (const [, inner] of markdown.matchAll(/`([^`\s]+)`/g)) {
    const p = (inner ?? "").replace(/[.,:;]$/, "");
    if (/[<>*…$]/.test(p) || p.includes("://")) continue;
    const first = p.split("/")[0] ?? "";
    if (TOP.has(first) && (p.includes("/") || /\.\w+$/.test(p))) out.add(p);
  }
  return [...out];
}

const DOCS = [
  "README.md",
  ...readdirSync(join(ROOT, "docs"))
    .filter((f) => f.endsWith(".md"))
    .map((f) => `docs/${f}`),
];

describe("paths named in the docs", () => {
  test.each(DOCS)("%s names only files that exist", (doc) => {
    const missing = repoPaths(readFileSync(join(ROOT, doc), "utf8")).filter(
      (p) => !existsSync(join(ROOT, p)),
    );
    expect(missing).toEqual([]);
  });
});
