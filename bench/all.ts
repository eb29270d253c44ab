/**
 * Every benchmark, one after the other, each in its own process (`npm run bench`). A benchmark that
 * fails does not stop the others; the exit code says whether all of them ran. Each appends its own
 * section to bench/results.md. Several minutes on the 2-core reference machine; each bench prints its own time.
 *
 *   npx bun bench/all.ts                 (ONLY=seeding,restart to run some)
 */

import { join } from "node:path";
import { spawn } from "bun";

const BENCHES = [
  "small-objects",
  "large-object",
  "scan-cost",
  "seeding",
  "status-throughput",
  "restart",
  "webseed-access",
  "export",
];
const only = process.env.ONLY?.split(",").filter(Boolean);
const failed: string[] = [];
const t0 = performance.now();
for (const name of BENCHES) {
  if (only && !only.includes(name)) continue;
  console.log(`\n=== bench/${name}.ts ===`);
  const t = performance.now();
  const p = spawn([process.execPath, join(import.meta.dir, `${name}.ts`)], {
    stdio: ["ignore", "inherit", "inherit"],
    env: process.env,
  });
  const code = await p.exited;
  console.log(
    `=== ${name}: ${code === 0 ? "done" : `FAILED (exit ${code})`} in ${Math.round((performance.now() - t) / 1000)} s`,
  );
  if (code !== 0) failed.push(name);
}
console.log(
  `\nall benchmarks: ${Math.round((performance.now() - t0) / 1000)} s${failed.length ? `; failed: ${failed.join(", ")}` : ""}`,
);
process.exit(failed.length ? 1 : 0);
