/**
 * `proxytorrent serve` as the CLI runs it, plus one loopback-only port (HEAP_PROBE_PORT) for the
 * benchmarks: each GET there runs a full, synchronous garbage collection and answers what is still
 * alive (JSC heap size and object count) and the RSS after it. That is the figure that tells live
 * objects (something kept per row) from garbage not yet collected (RSS that a collection gives
 * back). Bench-only: the service itself never forces a collection.
 */
import { heapStats } from "bun:jsc";
import { readFileSync } from "node:fs";
import { join } from "node:path";

function statusKb(field: string): number {
  const m = readFileSync("/proc/self/status", "utf8").match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"));
  return m ? Number(m[1]) : Number.NaN;
}

Bun.serve({
  hostname: "127.0.0.1",
  port: Number(process.env.HEAP_PROBE_PORT),
  fetch() {
    Bun.gc(true);
    const h = heapStats();
    return Response.json({
      heapBytes: h.heapSize,
      extraBytes: h.extraMemorySize,
      objects: h.objectCount,
      rssKb: statusKb("VmRSS"),
      anonKb: statusKb("RssAnon"),
    });
  },
});

const cli = join(import.meta.dir, "..", "seeder", "cli", "index.ts");
process.argv = [process.argv[0]!, cli, "serve"];
await import(cli);
