/**
 * What a newcomer's checkout needs to say: which Node it needs (and that this machine's fits), and
 * that a `.env` with secrets is never committed.
 */
import { describe, expect, test } from "bun:test";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { ROOT } from "../support/service";

const version = (v: string) => v.replace(/^v/, "").split(".").map(Number) as [number, number, number];
const atLeast = (a: number[], b: number[]) => {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i]! > b[i]!;
  return true;
};

describe("checkout", () => {
  test("package.json declares the Node version, the README says it, and this machine's node meets it", async () => {
    const pkg = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8")) as {
      engines?: { node?: string };
    };
    const range = pkg.engines?.node ?? "";
    expect(range).toMatch(/^>=\d+\.\d+\.\d+$/);
    const min = version(range.slice(2));
    expect(await readFile(join(ROOT, "README.md"), "utf8")).toContain(`Node.js ${min.join(".")} or later`);
    const node = Bun.spawnSync(["node", "-p", "process.versions.node"], { stdout: "pipe" });
    expect(atLeast(version(node.stdout.toString().trim()), min)).toBe(true);
  });

  test(".env is ignored by git", () => {
    const r = Bun.spawnSync(["git", "check-ignore", "--no-index", "-q", ".env"], { cwd: ROOT });
    expect(r.exitCode).toBe(0);
  });
});
