/**
 * The layout rules README "What runs where" states, checked on the import lines of every source
 * file: src/ runs on Workers (no node:*, bun:*, nothing from seeder/ or edge/), the node daemon does
 * not reach into the CLI, and nothing that is deployed imports the dev-only tooling.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "..");

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(ROOT, dir))) {
    const rel = join(dir, name);
    if (statSync(join(ROOT, rel)).isDirectory()) out.push(...sources(rel));
    else if (/\.ts$/.test(name)) out.push(rel);
  }
  return out;
}

/** Each module a file imports (static, dynamic and `export … from`), relative ones resolved to repo paths. */
function importsOf(file: string): string[] {
  const text = readFileSync(join(ROOT, file), "utf8");
  const specs = [
    ...text.matchAll(
      /(?:^|\n)\s*(?:import|export)\b[^"'`;]*?from\s*["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)|^\s*import\s+["']([^"']+)["']/gm,
    ),
  ]
    .map((m) => m[1] ?? m[2] ?? m[3]!)
    .filter(Boolean);
  return specs.map((s) => (s.startsWith(".") ? relative(ROOT, resolve(ROOT, dirname(file), s)) : s));
}

function offenders(files: string[], bad: (spec: string) => boolean): string[] {
  return files.flatMap((f) =>
    importsOf(f)
      .filter(bad)
      .map((s) => `${f} imports ${s}`),
  );
}

describe("layout", () => {
  test("src/ imports no node:* or bun:* module and nothing from seeder/ or edge/", () => {
    const files = sources("src");
    expect(files.length).toBeGreaterThan(30);
    expect(
      offenders(files, (s) => /^(node|bun):/.test(s) || s === "bun" || /^(seeder|edge)\//.test(s)),
    ).toEqual([]);
  });

  test("the node daemon does not import the CLI; deployed code does not import seeder/dev/", () => {
    expect(offenders(sources("seeder/node"), (s) => s.startsWith("seeder/cli/"))).toEqual([]);
    const deployed = [
      ...sources("src"),
      ...sources("edge"),
      ...sources("seeder/cli"),
      ...sources("seeder/process"),
      ...sources("seeder/node"),
      ...sources("seeder/patches"),
    ];
    expect(offenders(deployed, (s) => s.startsWith("seeder/dev/"))).toEqual([]);
  });

  test("the import scanner sees relative and package imports (so the checks above can fail)", () => {
    const seen = importsOf("seeder/process/start.ts");
    expect(seen.some((s) => s.startsWith("src/"))).toBe(true);
    expect(seen.some((s) => s.startsWith("node:"))).toBe(true);
  });
});
