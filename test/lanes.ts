/**
 * Test lanes: which test files need what. `npm test` still runs every file under test/; the lanes
 * let a developer run the fast part alone (`npm run test:unit`) or one slow part. A lane lists
 * folders (every test file below it) and files; test/lanes.test.ts checks that each test file is in
 * exactly one lane, so a new file cannot silently fall out of them.
 *
 *   bun test/lanes.ts unit            run one lane (extra arguments go to `bun test`)
 *   bun test/lanes.ts --list swarm    print its files
 *
 * unit   in-process only: real libSQL files and loopback servers the test itself runs
 *        (node:http, Bun.serve); no child process, no other program. Needs nothing but Bun.
 * e2e    child processes: the service and CLI as a user starts them, microsocks, helper Bun
 *        processes, shell tools (sh, openssl, curl, git, systemd-analyze).
 * swarm  real BitTorrent clients: aria2c and python3-libtorrent (/usr/bin/python3).
 * edge   the Worker under workerd (`wrangler dev`, which needs Node.js on PATH).
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";

export const ROOT = resolve(import.meta.dir, "..");

export const LANES: Record<string, string[]> = {
  unit: [
    "test/lanes.test.ts",
    "test/docs-paths.test.ts",
    "test/layout.test.ts",
    "test/api/limits.test.ts",
    "test/api/history.test.ts",
    "test/api/log.test.ts",
    "test/api/quotas.test.ts",
    "test/api/requests.test.ts",
    "test/api/retention.test.ts",
    "test/api/url-checks.test.ts",
    "test/auth/config.test.ts",
    "test/auth/jwt.test.ts",
    "test/auth/key-cache.test.ts",
    "test/auth/legacy.test.ts",
    "test/auth/revoke.test.ts",
    "test/auth/signature.test.ts",
    "test/auth/tenancy.test.ts",
    "test/config/config.test.ts",
    "test/config/node-timers.test.ts",
    "test/config/readme.test.ts",
    "test/db",
    "test/edge/hrana.test.ts",
    "test/egress",
    "test/fetcher/body-release.test.ts",
    "test/fetcher/integrity.test.ts",
    "test/fetcher/limits.test.ts",
    "test/fetcher/mime.test.ts",
    "test/fetcher/redirect-headers.test.ts",
    "test/fetcher/resume.test.ts",
    "test/fetcher/transport.test.ts",
    "test/scan/clamd-client.test.ts",
    "test/swarm/peer-entitlements.test.ts",
    "test/swarm/store.test.ts",
    "test/swarm/torrent-from-pieces.test.ts",
    "test/swarm/torrent.test.ts",
    "test/swarm/webseed.test.ts",
    "test/swarm/node-access.test.ts",
    "test/torrents",
    "test/webhooks/api.test.ts",
    "test/webhooks/delivery.test.ts",
    "test/webhooks/signing.test.ts",
  ],
  e2e: [
    "test/api/docs.test.ts",
    "test/auth/cli.test.ts",
    "test/auth/docs-example.test.ts",
    "test/auth/key-encryption.test.ts",
    "test/auth/quotas-cli.test.ts",
    "test/auth/rate-limit.test.ts",
    "test/cas",
    "test/config/cli.test.ts",
    "test/deploy",
    "test/e2e/cache-scope.test.ts",
    "test/e2e/cancel-and-proxy.test.ts",
    "test/e2e/disk-full.test.ts",
    "test/e2e/disk-space.test.ts",
    "test/e2e/errors.test.ts",
    "test/e2e/gc.test.ts",
    "test/e2e/http-hardening.test.ts",
    "test/e2e/integrity.test.ts",
    "test/e2e/partial-resume.test.ts",
    "test/e2e/proxy-required.test.ts",
    "test/e2e/release.test.ts",
    "test/e2e/retention.test.ts",
    "test/e2e/storage.test.ts",
    "test/e2e/virus-scan.test.ts",
    "test/fetcher/keepalive.test.ts",
    "test/fetcher/proxy.test.ts",
    "test/fetcher/ssrf.test.ts",
    "test/jobs",
    "test/webhooks/service.test.ts",
  ],
  swarm: [
    "test/swarm/private-access.test.ts",
    "test/distributed",
    "test/patches",
    "test/e2e/bittorrent-bind.test.ts",
    "test/e2e/embedded.test.ts",
    "test/e2e/metrics.test.ts",
    "test/e2e/restart.test.ts",
    "test/swarm/mse-fast-dh.test.ts",
    "test/swarm/peer-gate.test.ts",
    "test/swarm/seeding.test.ts",
    "test/swarm/store-recycle.test.ts",
    "test/swarm/swarm.test.ts",
    "test/swarm/tracker.test.ts",
  ],
  edge: ["test/auth/edge.test.ts", "test/edge/worker-config.test.ts", "test/edge/worker.test.ts"],
};

/** The names bun test picks up as test files (bun 1.4: *.test, *_test, *.spec, *_spec). */
const TEST_FILE = /[._](test|spec)\.(ts|tsx|js|jsx|mjs|cjs|mts|cts)$/;

/** Every test file below `dir` (repo-relative paths, sorted). */
export function testFilesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(join(ROOT, d), { withFileTypes: true })) {
      const p = `${d}/${e.name}`;
      if (e.isDirectory()) walk(p);
      else if (TEST_FILE.test(e.name)) out.push(p);
    }
  };
  walk(dir);
  return out.sort();
}

/** The test files of one lane. */
export function laneFiles(lane: string): string[] {
  const entries = LANES[lane];
  if (!entries) throw new Error(`unknown lane "${lane}"; lanes: ${Object.keys(LANES).join(", ")}`);
  const files = entries.flatMap((e) =>
    existsSync(join(ROOT, e)) && statSync(join(ROOT, e)).isDirectory() ? testFilesUnder(e) : [e],
  );
  return [...new Set(files)].sort();
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const list = args[0] === "--list";
  const lane = list ? args[1] : args[0];
  if (!lane) {
    console.error(`usage: bun test/lanes.ts [--list] <${Object.keys(LANES).join("|")}> [bun test args]`);
    process.exit(2);
  }
  const files = laneFiles(lane);
  if (list) {
    console.log(files.join("\n"));
  } else {
    // "./" makes bun test treat each argument as a path, not a name filter.
    const paths = files.map((f) => `./${f}`);
    const proc = Bun.spawn([process.execPath, "test", "--timeout", "120000", ...paths, ...args.slice(1)], {
      cwd: ROOT,
      stdio: ["inherit", "inherit", "inherit"],
    });
    process.exit(await proc.exited);
  }
}
