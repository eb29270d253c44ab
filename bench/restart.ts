/**
 * Benchmark 5: restart with N (1,000) ready items: time from spawning `bin/proxytorrent serve` until
 * /v1/health reports checks.seeding.torrents >= N, i.e. every ready torrent seeded again.
 *
 * Setup: N small distinct bodies (1 KiB, text/plain) created through the API with NODE__CONCURRENCY
 * raised, then a graceful stop (SIGTERM) and a restart on the same storage, database and ports.
 * The node's own "node started" log line gives `seeding` and `reseed_ms` (re-seeding alone).
 *
 * Reference, same run: spawn-to-healthy of the same service on an empty store (the fixed cost of
 * starting the process, opening the database, migrations, the swarm and the HTTP server).
 *
 *   npx bun bench/restart.ts      (ITEMS=1000 RESTARTS=2 to change)
 */
import { PatternBody, startOrigin } from "../test/support/origin";
import { appendResults, fmt, log, median, type Row, Service, waitForQuiet } from "./lib";

const ITEMS = Number(process.env.ITEMS ?? 1000);
const RESTARTS = Number(process.env.RESTARTS ?? 2);
const BATCH = 50;

await waitForQuiet();
const origin = await startOrigin({
  "/item.txt": (req, res) => {
    const i = Number(new URL(req.target, "http://x").searchParams.get("i") ?? 0);
    const body = new PatternBody(1024, 50_000 + i).bytes();
    res.writeHead(200, { "content-type": "text/plain", "content-length": String(body.length) });
    res.end(body);
  },
});

const seedingOf = (h: any) => Number(h?.checks?.seeding?.torrents ?? -1);

// ---- reference: an empty service ----
const refTimes: number[] = [];
{
  const empty = await Service.start();
  await empty.stop();
  for (let i = 0; i < RESTARTS; i++) {
    refTimes.push(await empty.launch({ pollMs: 10 }));
    await empty.stop();
  }
}
log(`empty service, spawn → healthy: ${refTimes.map((x) => fmt(x, 0)).join(", ")} ms`);

// ---- fill ----
const svc = await Service.start({ env: { NODE__CONCURRENCY: "32" } });
const t0 = performance.now();
const ids: string[] = [];
for (let i = 0; i < ITEMS; i += BATCH) {
  const n = Math.min(BATCH, ITEMS - i);
  ids.push(
    ...(await Promise.all(
      Array.from({ length: n }, (_, k) => svc.create({ url: origin.url(`/item.txt?i=${i + k}`) })),
    )),
  );
}
for (let i = 0; i < ids.length; ) {
  const st = await svc.status(ids[i]!);
  if (st.status === "ready") i++;
  else if (st.status === "error" || st.status === "cancelled")
    throw new Error(`item ${i}: ${st.error_message}`);
  else await Bun.sleep(100);
}
const fillMs = performance.now() - t0;
const before = seedingOf(await svc.health());
log(`${ITEMS} items ready in ${fmt(fillMs / 1000, 1)} s; seeding ${before}`);

// ---- restarts ----
interface Restart {
  firstHealthMs: number;
  allSeedingMs: number;
  reseedMs: number;
  logged: number;
  hwmMiB: number;
}
const restarts: Restart[] = [];
for (let r = 0; r < RESTARTS; r++) {
  await svc.stop();
  let firstHealthMs = Number.NaN;
  const allSeedingMs = await svc.launch({
    pollMs: 10,
    timeoutMs: 120_000,
    until: (h) => {
      if (Number.isNaN(firstHealthMs)) firstHealthMs = performance.now() - svc.spawnedAt;
      return seedingOf(h) >= before;
    },
  });
  const started = await Promise.race([svc.waitForLine("node started"), Bun.sleep(5000).then(() => null)]);
  const x: Restart = {
    firstHealthMs,
    allSeedingMs,
    reseedMs: Number(started?.reseed_ms ?? Number.NaN),
    logged: Number(started?.seeding ?? Number.NaN),
    hwmMiB: svc.procStatusKb("VmHWM") / 1024,
  };
  restarts.push(x);
  log(
    `restart #${r + 1}: first health ${fmt(x.firstHealthMs, 0)} ms, all ${before} seeding ${fmt(x.allSeedingMs, 0)} ms (node: seeding ${x.logged}, reseed_ms ${x.reseedMs}), VmHWM ${fmt(x.hwmMiB, 0)} MiB`,
  );
}
await svc.stop();
await origin.close();

const all = restarts.map((x) => x.allSeedingMs);
const rows: Row[] = [
  {
    figure: `restart with ${before} ready items: spawn → health reports all seeding (${RESTARTS} restarts: ${all.map((x) => fmt(x, 0)).join(", ")} ms)`,
    measured: `median ${fmt(median(all), 0)} ms`,
    reference: `same service, empty store, spawn → healthy: median ${fmt(median(refTimes), 0)} ms (${refTimes.map((x) => fmt(x, 0)).join(", ")})`,
    target: "≤ 10 s",
  },
  {
    figure: 'of which re-seeding (node\'s reseed_ms in its "node started" line)',
    measured: `${restarts.map((x) => `${fmt(x.reseedMs, 0)} ms (seeding ${x.logged})`).join(", ")}`,
  },
  {
    figure: "first health answer after spawn (the API listens only after re-seeding, embedded mode)",
    measured: `${restarts.map((x) => fmt(x.firstHealthMs, 0)).join(", ")} ms`,
  },
  {
    figure: `service peak RSS (VmHWM) after a restart seeding ${before} torrents`,
    measured: `${restarts.map((x) => fmt(x.hwmMiB, 0)).join(", ")} MiB`,
  },
  {
    figure: `creating the ${ITEMS} items (1 KiB each, NODE__CONCURRENCY=32, POSTs ${BATCH} at a time)`,
    measured: `${fmt(fillMs / 1000, 1)} s = ${fmt((ITEMS / fillMs) * 60_000, 0)}/min`,
  },
];
appendResults({
  title: `5. Restart with ${ITEMS} ready items`,
  setup: [
    "bin/proxytorrent serve, NODE__CONCURRENCY=32, other settings default (RATE_LIMIT__RATE_LIMIT_ENABLED=false); SIGTERM, then the same command on the same storage and ports",
    "timing: from Bun.spawn to the first /v1/health (polled every 10 ms) whose checks.seeding.torrents equals the count before the restart",
  ],
  rows,
});
process.exit(0);
