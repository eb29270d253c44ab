/** Every test file belongs to exactly one lane of test/lanes.ts, and every lane entry exists. */
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { LANES, laneFiles, ROOT, testFilesUnder } from "./lanes";

describe("test lanes", () => {
  test("every entry of every lane names an existing file or folder", () => {
    const missing = Object.values(LANES)
      .flat()
      .filter((e) => !existsSync(join(ROOT, e)));
    expect(missing).toEqual([]);
  });

  test("every test file under test/ is in exactly one lane", () => {
    const lanesOf = new Map<string, string[]>();
    for (const lane of Object.keys(LANES))
      for (const f of laneFiles(lane)) lanesOf.set(f, [...(lanesOf.get(f) ?? []), lane]);
    const problems = testFilesUnder("test")
      .map((f) => ({ file: f, lanes: lanesOf.get(f) ?? [] }))
      .filter((x) => x.lanes.length !== 1);
    // A file listed in no lane runs only under `npm test`; add it to the lane matching what it needs.
    expect(problems).toEqual([]);
    // and no lane names a file that is not a test file bun would run
    expect([...lanesOf.keys()].filter((f) => !testFilesUnder("test").includes(f))).toEqual([]);
  });

  test("unit-lane files start no process: no spawn, no service, microsocks, real clients or wrangler", () => {
    const starts =
      /\bspawn(Sync)?\(|support\/(service|socks)"|startEdgeDev|aria2Download|libtorrentDownload|child_process/;
    const offenders = laneFiles("unit")
      .filter((f) => f !== "test/lanes.test.ts") // names the patterns
      .filter((f) => starts.test(readFileSync(join(ROOT, f), "utf8")));
    // such a file belongs in e2e, swarm or edge (see test/lanes.ts)
    expect(offenders).toEqual([]);
  });
});
