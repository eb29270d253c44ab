/**
 * Benchmark 3: seeding 384 MiB on loopback, per piece size (TORRENT__PIECE_SIZE).
 *
 * For each piece size a fresh service fetches the object (PatternBody from a temp file), then, in
 * each of REPS rounds (round 1 is the first download after the request became ready):
 *  - BitTorrent to one python3-libtorrent leecher dialling the seeder directly (torrent without
 *    trackers and web seed, so only that peer connection carries data);
 *  - reference: python3-libtorrent SEEDING the same bytes (same torrent, one libtorrent session
 *    started per piece size, like the service; its first download is its round 1) to the same
 *    leecher script: what a user would run instead of this service;
 *  - BitTorrent to aria2c, which finds the seeder through the node's tracker (torrent without the
 *    web seed: aria2c otherwise prefers the url-list and never talks BitTorrent);
 *  - the web seed to aria2c (torrent without announce/announce-list, as in test/e2e);
 *  - reference: a plain `curl` GET of the web seed URL (the HTTP path with no BitTorrent client).
 *
 * Measured at the seeder: the service's TCP sockets on the serving port, sampled with
 * `ss -tin` every SS_MS (bytes_acked), rate = slope between 5 % and 95 % of the object. Not
 * /metrics: one scrape costs the service ~10 ms of event loop under Bun, which would slow the very
 * thing measured. The seeder's CPU time over the transfer comes from /proc/<pid>/stat.
 * Measured at the client, from transfer timestamps (never the client's wall time, which for
 * aria2c is mostly its own start-up and timers): libtorrent polls its status every 2 ms; aria2c's
 * info log stamps each finished piece; curl reports time_starttransfer and time_total.
 * The proxytorrent_upload_bytes_total{via} counters are read once before and after each download
 * to check that the bytes went the way intended.
 *
 *   npx bun bench/seeding.ts     (SIZE_MIB=384 REPS=3 PIECE_SIZES=auto,4194304 SS_MS=20
 *                                 KINDS=libtorrent,lt-seeder,aria2-bt,aria2-webseed,curl)
 */
import { linkSync, readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { spawn } from "bun";
import { type BDict, bdecode, bencode, text } from "../seeder/node/swarm/bencode";
import {
  appendResults,
  fileOrigin,
  fmt,
  freePort,
  hasCommand,
  log,
  MiB,
  mbps,
  median,
  promValue,
  type Row,
  removeDir,
  run,
  Service,
  tmpDir,
  toolVersion,
  track,
  waitForQuiet,
  writePatternFile,
} from "./lib";

await waitForQuiet();

const SIZE = Number(process.env.SIZE_MIB ?? 384) * MiB;
const REPS = Number(process.env.REPS ?? 3);
const PIECE_SIZES = (process.env.PIECE_SIZES ?? "auto,4194304").split(",");
const SS_MS = Number(process.env.SS_MS ?? 20);
const SEED = 7;
/** aria2c's info log gives client-side piece timestamps; ARIA2_LOG=0 runs it without (seeder side only). */
const ARIA2_LOG = process.env.ARIA2_LOG !== "0";

for (const cmd of ["aria2c", "curl", "ss"]) if (!hasCommand(cmd)) throw new Error(`${cmd} is required`);

// ---------- seeder-side sampling with ss ----------

interface Sample {
  t: number;
  bytes: number;
}

/** Sample bytes_acked summed over established TCP sockets with local port `port` until stopped. */
function ssSampler(port: number) {
  const perSocket = new Map<string, number>();
  const samples: Sample[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const t0 = performance.now();
      const p = spawn(["ss", "-tinH", "state", "established", `( sport = :${port} )`], { stdout: "pipe" });
      const out = await new Response(p.stdout).text();
      await p.exited;
      const t = performance.now();
      let peer = "";
      for (const line of out.split("\n")) {
        const head = line.match(/^\s*\d+\s+\d+\s+\S+:\d+\s+(\S+)\s*$/);
        if (head) {
          peer = head[1]!;
          continue;
        }
        const acked = line.match(/bytes_acked:(\d+)/);
        if (acked && peer) perSocket.set(peer, Math.max(perSocket.get(peer) ?? 0, Number(acked[1])));
      }
      let sum = 0;
      for (const v of perSocket.values()) sum += v;
      samples.push({ t: (t0 + t) / 2, bytes: sum });
      const wait = SS_MS - (performance.now() - t0);
      if (wait > 0) await Bun.sleep(wait);
    }
  })();
  return {
    async stop(): Promise<Sample[]> {
      running = false;
      await loop;
      return samples;
    },
  };
}

/** Rate over the steady part: from the first sample >= lo to the last sample <= hi (bytes). */
function steadyRate(samples: Sample[], size: number, lo = 0.05, hi = 0.95): number {
  const base = samples[0]?.bytes ?? 0;
  const rel = samples.map((s) => ({ t: s.t, b: s.bytes - base }));
  const a = rel.find((s) => s.b >= lo * size);
  const b = [...rel].reverse().find((s) => s.b <= hi * size);
  // Too short to sample (curl moves 256 MiB in ~0.1 s): no seeder-side figure.
  if (!a || !b || b.t <= a.t || rel.filter((s) => s.t >= a.t && s.t <= b.t).length < 3) return Number.NaN;
  return mbps(b.b - a.b, b.t - a.t);
}

// ---------- clients ----------

const LT_SCRIPT = `
import json, os, sys, time
import libtorrent as lt
args = json.loads(sys.argv[1])
ses = lt.session({
    "listen_interfaces": "127.0.0.1:0", "outgoing_interfaces": "127.0.0.1",
    "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
    "enable_outgoing_utp": False, "enable_incoming_utp": False,
    "user_agent": "proxytorrent-bench-libtorrent",
})
ti = lt.torrent_info(args["torrent"])
atp = lt.add_torrent_params()
atp.ti = ti
atp.save_path = args["dir"]
h = ses.add_torrent(atp)
peer = ("127.0.0.1", args["port"])
h.connect_peer(peer)
size = ti.total_size()
first = t5 = t95 = None
b5 = b95 = 0
last_dial = time.time()
deadline = time.time() + args["timeout"]
while time.time() < deadline:
    st = h.status()
    now = time.time()
    done = st.total_wanted_done
    if first is None and done > 0: first = now
    if t5 is None and done >= 0.05 * size: t5, b5 = now, done
    if done <= 0.95 * size: t95, b95 = now, done
    if st.is_seeding or st.is_finished: break
    if st.num_peers == 0 and now - last_dial > 2.0:
        h.connect_peer(peer); last_dial = now
    time.sleep(0.002)
end = time.time()
st = h.status()
print(json.dumps({"first": first, "end": end, "t5": t5, "b5": b5, "t95": t95, "b95": b95,
                  "done": st.total_wanted_done, "finished": bool(st.is_seeding or st.is_finished)}), flush=True)
ses.pause()
`;

/**
 * The reference seeder: one libtorrent session, same loopback-only settings, the torrent added
 * from the same .torrent over a directory holding the object under the torrent's name. libtorrent
 * checks the file when it is added (the ready line is printed once it seeds); it then serves until
 * its stdin closes. Settings are libtorrent's defaults otherwise: what a user would run.
 */
const LT_SEEDER_SCRIPT = `
import json, sys, time
import libtorrent as lt
args = json.loads(sys.argv[1])
ses = lt.session({
    "listen_interfaces": "127.0.0.1:%d" % args["port"], "outgoing_interfaces": "127.0.0.1",
    "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
    "enable_outgoing_utp": False, "enable_incoming_utp": False,
    "user_agent": "proxytorrent-bench-libtorrent-seeder",
})
atp = lt.add_torrent_params()
atp.ti = lt.torrent_info(args["torrent"])
atp.save_path = args["dir"]
h = ses.add_torrent(atp)
deadline = time.time() + 120
while not h.status().is_seeding:
    if time.time() > deadline: sys.exit("libtorrent seeder: not seeding after 120 s: %s" % h.status().state)
    time.sleep(0.01)
print(json.dumps({"port": ses.listen_port(), "seeding": True}), flush=True)
sys.stdin.read()
`;

interface LtSeeder {
  port: number;
  pid: number;
  cpuMs(): number;
  stop(): Promise<void>;
}

/** Start the libtorrent seeder over `file` (linked as `name` into `dir`); resolves once it seeds. */
async function startLtSeeder(
  torrentPath: string,
  dir: string,
  name: string,
  file: string,
): Promise<LtSeeder> {
  await mkdir(dir, { recursive: true });
  linkSync(file, join(dir, name));
  const port = await freePort();
  const p = track(
    spawn(["/usr/bin/python3", "-c", LT_SEEDER_SCRIPT, JSON.stringify({ torrent: torrentPath, dir, port })], {
      stdin: "pipe",
      stdout: "pipe",
      stderr: "pipe",
    }),
  );
  const reader = p.stdout.getReader();
  let out = "";
  const deadline = performance.now() + 150_000;
  while (!out.includes("\n") && performance.now() < deadline) {
    const { done, value } = await reader.read();
    if (done) break;
    out += new TextDecoder().decode(value);
  }
  if (!out.includes('"seeding": true')) {
    p.kill("SIGKILL");
    throw new Error(`libtorrent seeder did not start: ${out}${await new Response(p.stderr).text()}`);
  }
  // Keep draining its output so it never blocks on a full pipe.
  void (async () => {
    while (!(await reader.read()).done) {}
  })();
  return {
    port: JSON.parse(out.trim()).port,
    pid: p.pid,
    cpuMs: () => procCpuMs(p.pid),
    async stop() {
      p.stdin.end();
      const t = setTimeout(() => p.kill("SIGKILL"), 10_000);
      await p.exited;
      clearTimeout(t);
    },
  };
}

/** utime+stime of a process in ms (/proc/<pid>/stat). */
function procCpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
  } catch {
    return Number.NaN;
  }
}

interface ClientResult {
  /** Client-side MB/s over 5-95 % of the object. */
  clientSteady: number;
  /** Client-side MB/s from first to last payload byte (or piece). */
  clientFull: number;
  wallMs: number;
}

async function libtorrent(torrentPath: string, dir: string, port: number): Promise<ClientResult> {
  const spec = JSON.stringify({ torrent: torrentPath, dir, port, timeout: 120 });
  const r = await run(["/usr/bin/python3", "-c", LT_SCRIPT, spec], { timeoutMs: 150_000 });
  const line = r.out.split("\n").find((l) => l.startsWith("{"));
  if (!line) throw new Error(`libtorrent failed:\n${r.out.slice(-3000)}`);
  const j = JSON.parse(line);
  if (!j.finished) throw new Error(`libtorrent did not finish: ${line}`);
  return {
    clientSteady: mbps(j.b95 - j.b5, (j.t95 - j.t5) * 1000),
    clientFull: mbps(SIZE, (j.end - j.first) * 1000),
    wallMs: r.ms,
  };
}

/** aria2c with an info log; piece completion times from the log ("we got new piece" for BT, "Good chunk checksum" for HTTP). */
async function aria2(torrentPath: string, dir: string, pieceLength: number): Promise<ClientResult> {
  const logPath = join(dir, "aria2.log");
  const r = await run(
    [
      "aria2c",
      "--no-conf=true",
      "--enable-dht=false",
      "--enable-dht6=false",
      "--bt-enable-lpd=false",
      "--enable-peer-exchange=false",
      "--seed-time=0",
      "--bt-stop-timeout=60",
      "--file-allocation=none",
      "--interface=127.0.0.1",
      `--dir=${join(dir, "out")}`,
      "--summary-interval=0",
      "--console-log-level=warn",
      ...(ARIA2_LOG ? [`--log=${logPath}`, "--log-level=info"] : []),
      `--torrent-file=${torrentPath}`,
    ],
    { timeoutMs: 120_000 },
  );
  if (r.code !== 0) throw new Error(`aria2c exited ${r.code}:\n${r.out.slice(-3000)}`);
  if (!ARIA2_LOG) return { clientSteady: Number.NaN, clientFull: Number.NaN, wallMs: r.ms };
  const times: number[] = [];
  for (const line of readFileSync(logPath, "utf8").split("\n")) {
    if (!line.includes("we got new piece") && !line.includes("Good chunk checksum")) continue;
    // "2026-11-26 12:46:03.910096": only differences matter, so the zone is irrelevant.
    const m = line.match(/^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)\.(\d{6})/);
    if (m) times.push(Date.parse(`${m[1]}T${m[2]}Z`) + Number(m[3]) / 1000);
  }
  const n = times.length;
  const pieces = Math.ceil(SIZE / pieceLength);
  if (n < 2) throw new Error(`aria2c log has ${n} piece lines`);
  const i5 = Math.floor(0.05 * n);
  const i95 = Math.max(i5 + 1, Math.ceil(0.95 * n) - 1);
  return {
    clientSteady: mbps((i95 - i5) * pieceLength, times[i95]! - times[i5]!),
    // From the first finished piece to the last: (n - 1) pieces.
    clientFull: mbps(((n - 1) / pieces) * SIZE, times[n - 1]! - times[0]!),
    wallMs: r.ms,
  };
}

async function curl(url: string): Promise<ClientResult> {
  const r = await run(
    [
      "curl",
      "-s",
      "-o",
      "/dev/null",
      "-w",
      "%{time_starttransfer} %{time_total} %{size_download} %{http_code}",
      url,
    ],
    { timeoutMs: 60_000 },
  );
  const [start, total, size, code] = r.out.trim().split(/\s+/).map(Number);
  if (code !== 200 || size !== SIZE) throw new Error(`curl: ${r.out}`);
  const full = mbps(size!, (total! - start!) * 1000);
  return { clientSteady: full, clientFull: full, wallMs: r.ms };
}

// ---------- the run ----------

type Kind = "libtorrent" | "lt-seeder" | "aria2-bt" | "aria2-webseed" | "curl";
const ALL_KINDS: Kind[] = ["libtorrent", "lt-seeder", "aria2-bt", "aria2-webseed", "curl"];
const KINDS = (process.env.KINDS?.split(",").filter(Boolean) as Kind[] | undefined) ?? ALL_KINDS;
for (const k of KINDS)
  if (!ALL_KINDS.includes(k)) throw new Error(`unknown kind ${k} (${ALL_KINDS.join(", ")})`);

const work = await tmpDir("pt-bench-seed-");
const file = join(work, "seed.bin");
await writePatternFile(file, SIZE, SEED);
const origin = fileOrigin({ "/files/seed.bin": { path: file, type: "application/octet-stream" } });

interface Measure {
  kind: Kind;
  /** 1-based; round 1 is the first download from that seeder. */
  round: number;
  seeder: number;
  client: ClientResult;
  cpuMs: number;
  peerBytes: number;
  webseedBytes: number;
}
const results = new Map<string, { pieceLength: number; runs: Measure[] }>();

for (const ps of PIECE_SIZES) {
  const svc = await Service.start({
    env: {
      TORRENT__PIECE_SIZE: ps,
      FETCHER__MAX_SIZE: String(4 * SIZE),
      FETCHER__TOTAL_TIMEOUT: "3600",
      FETCHER__MIME_WHITELIST: "application/octet-stream",
      // libtorrent dials the BitTorrent port with a tracker-less .torrent (the same one the
      // libtorrent seeder gets), so it never announces a passkey: the port's peer gate would
      // refuse it. The gate costs one map lookup per connection, nothing per byte.
      TORRENT__ACCESS: "open",
    },
  });
  const id = await svc.create({ url: origin.url("/files/seed.bin") });
  await svc.waitReady(id, 20, 300_000);
  const tBytes = await svc.torrent(id);
  const dict = bdecode(tBytes) as BDict;
  const info = dict.info as BDict;
  const pieceLength = Number(info["piece length"]);
  const name = text(info.name)!;
  const urlList = dict["url-list"];
  const webSeed = Array.isArray(urlList) ? text(urlList[0]) : text(urlList);
  const variant = (drop: string[]) => {
    const d = bdecode(tBytes) as BDict;
    for (const k of drop) delete d[k];
    return bencode(d);
  };
  const dir = join(work, `ps-${ps}`);
  await mkdir(dir, { recursive: true });
  const paths = {
    direct: join(dir, "direct.torrent"),
    bt: join(dir, "bt.torrent"),
    web: join(dir, "webseed.torrent"),
  };
  await Bun.write(paths.direct, variant(["url-list", "announce", "announce-list"]));
  await Bun.write(paths.bt, variant(["url-list"]));
  await Bun.write(paths.web, variant(["announce", "announce-list"]));
  const runs: Measure[] = [];
  results.set(ps, { pieceLength, runs });
  // Started after the service's request is ready, so both seeders meet their first leecher cold.
  const ltSeeder = KINDS.includes("lt-seeder")
    ? await startLtSeeder(paths.direct, join(dir, "lt-seeder"), name, file)
    : null;

  const measure = async (
    kind: Kind,
    round: number,
    port: number,
    cpu: () => number,
    go: (d: string) => Promise<ClientResult>,
  ) => {
    const d = join(dir, `${kind}-${round}`);
    await mkdir(d, { recursive: true });
    const m0 = await svc.metrics();
    const cpu0 = cpu();
    const sampler = ssSampler(port);
    const client = await go(d);
    const samples = await sampler.stop();
    const cpuMs = cpu() - cpu0;
    const m1 = await svc.metrics();
    const delta = (via: string) =>
      promValue(m1, "proxytorrent_upload_bytes_total", { via }) -
      promValue(m0, "proxytorrent_upload_bytes_total", { via });
    const r: Measure = {
      kind,
      round,
      seeder: steadyRate(samples, SIZE),
      client,
      cpuMs,
      peerBytes: delta("peer"),
      webseedBytes: delta("webseed"),
    };
    runs.push(r);
    removeDir(d);
    log(
      `piece ${ps} (${pieceLength / 1024} KiB) ${kind} round ${round}: seeder ${fmt(r.seeder, 0)} MB/s, client ${fmt(client.clientSteady, 0)} MB/s (first→last ${fmt(client.clientFull, 0)}), wall ${fmt(client.wallMs, 0)} ms, seeder CPU ${fmt(cpuMs, 0)} ms, counters peer ${fmt(r.peerBytes / MiB, 0)} MiB webseed ${fmt(r.webseedBytes / MiB, 0)} MiB`,
    );
  };

  const svcCpu = () => svc.cpuMs();
  for (let round = 1; round <= REPS; round++) {
    const ours = async () => {
      if (KINDS.includes("libtorrent"))
        await measure("libtorrent", round, svc.torrentPort, svcCpu, (d) =>
          libtorrent(paths.direct, d, svc.torrentPort),
        );
    };
    const reference = async () => {
      if (ltSeeder)
        await measure("lt-seeder", round, ltSeeder.port, ltSeeder.cpuMs, (d) =>
          libtorrent(paths.direct, d, ltSeeder.port),
        );
    };
    // Ours first in round 1 (the first download after the request became ready), then the two
    // alternate, so neither always follows the other's disk writes.
    if (round % 2 === 1) {
      await ours();
      await reference();
    } else {
      await reference();
      await ours();
    }
    if (KINDS.includes("aria2-bt"))
      await measure("aria2-bt", round, svc.torrentPort, svcCpu, (d) => aria2(paths.bt, d, pieceLength));
    if (KINDS.includes("aria2-webseed"))
      await measure("aria2-webseed", round, svc.port, svcCpu, (d) => aria2(paths.web, d, pieceLength));
    if (KINDS.includes("curl"))
      await measure("curl", round, svc.port, svcCpu, () => curl(`${webSeed}${encodeURIComponent(name)}`));
  }
  await ltSeeder?.stop();
  await svc.stop();
}
origin.stop();

// ---------- report ----------

const LABEL: Record<Kind, string> = {
  libtorrent: "BitTorrent → libtorrent (direct connect)",
  "lt-seeder": "libtorrent seeding → libtorrent",
  "aria2-bt": "BitTorrent → aria2c (via tracker)",
  "aria2-webseed": "web seed → aria2c",
  curl: "web seed → curl (HTTP reference)",
};
const rows: Row[] = [];
const med = (xs: number[]) => fmt(median(xs), 0);
const cpuPerGiB = (rs: Measure[]) => fmt(median(rs.map((r) => (r.cpuMs / SIZE) * MiB * 1024)), 0);
const seederText = (rs: Measure[], ratio = "") =>
  `seeder ${med(rs.map((r) => r.seeder))} MB/s (${rs.map((r) => fmt(r.seeder, 0)).join(", ")})${ratio}; client ${med(rs.map((r) => r.client.clientSteady))} MB/s (${rs.map((r) => fmt(r.client.clientSteady, 0)).join(", ")}); seeder CPU ${cpuPerGiB(rs)} ms/GiB`;
for (const [ps, { pieceLength, runs }] of results) {
  const of = (k: Kind) => runs.filter((r) => r.kind === k);
  const pieces = `TORRENT__PIECE_SIZE=${ps} (${pieceLength / 1024} KiB pieces)`;
  const curlRuns = of("curl");
  const curlText = curlRuns.length
    ? `curl from the web seed: ${med(curlRuns.map((r) => r.client.clientSteady))} MB/s at the client, ${med(curlRuns.map((r) => r.seeder))} MB/s at the seeder`
    : "–";
  const ours = of("libtorrent");
  const lt = of("lt-seeder");
  if (ours.length) {
    const ltMed = median(lt.map((r) => r.seeder));
    const ltText = lt.length
      ? `libtorrent ${toolVersion(["/usr/bin/python3", "-c", "import libtorrent; print(libtorrent.version)"], /[\d.]+/)} seeding the same torrent to the same leecher: ${seederText(lt)}`
      : curlText;
    const ratio = (x: number) => (lt.length ? ` = ${fmt(x / ltMed, 2)}× libtorrent's median` : "");
    const oursMed = median(ours.map((r) => r.seeder));
    rows.push({
      figure: `${LABEL.libtorrent}, ${pieces}`,
      measured: `${seederText(ours, ratio(oursMed))}; client wall ${med(ours.map((r) => r.client.wallMs))} ms`,
      reference: ltText,
      target: lt.length
        ? "≥ 1.0× libtorrent's median and ≥ 500 MB/s at the seeder"
        : "≥ 500 MB/s at the seeder",
    });
    const first = ours.find((r) => r.round === 1);
    const ltFirst = lt.find((r) => r.round === 1);
    if (first)
      rows.push({
        figure: `of which the first download after the request became ready, ${pieces}`,
        measured: `seeder ${fmt(first.seeder, 0)} MB/s${ratio(first.seeder)}; seeder CPU ${fmt((first.cpuMs / SIZE) * MiB * 1024, 0)} ms/GiB`,
        reference: ltFirst
          ? `libtorrent's first download: ${fmt(ltFirst.seeder, 0)} MB/s, CPU ${fmt((ltFirst.cpuMs / SIZE) * MiB * 1024, 0)} ms/GiB`
          : "–",
        target: lt.length ? "≥ 0.8× libtorrent's median" : "–",
      });
  }
  for (const k of ["aria2-bt", "aria2-webseed"] as Kind[]) {
    const rs = of(k);
    if (!rs.length) continue;
    rows.push({
      figure: `${LABEL[k]}, ${pieces}`,
      measured: `${seederText(rs)}; client wall ${med(rs.map((r) => r.client.wallMs))} ms`,
      reference: curlText,
      target: k === "aria2-webseed" ? "≥ 500 MB/s (web seed)" : "≥ 500 MB/s at the seeder",
    });
  }
}
const wrong = [...results.values()]
  .flatMap((x) => x.runs)
  .filter((r) =>
    r.kind === "lt-seeder"
      ? r.peerBytes > 0 || r.webseedBytes > 0
      : r.kind === "libtorrent" || r.kind === "aria2-bt"
        ? r.peerBytes < SIZE * 0.99 || r.webseedBytes > 0
        : r.peerBytes > 0 || r.webseedBytes < SIZE * 0.99,
  );
appendResults({
  title: `3. Seeding ${SIZE / MiB} MiB on loopback`,
  setup: [
    `one fresh service per piece size (bin/proxytorrent serve, defaults + FETCHER__* raised); ${REPS} rounds, each: ${KINDS.join(", ")}; round 1 of the service is the first download after its request became ready; the service and the libtorrent seeder alternate who goes first from round 2 on; medians shown with each round in brackets (round 1 first)`,
    `reference seeder: one python3-libtorrent session per piece size (defaults, loopback only, no uTP), started after the service's request was ready, seeding the same torrent from the source file (linked under the torrent's name; libtorrent checks it on add, so the page cache is warm for both)`,
    `seeder = the seeder's sockets on its BitTorrent or HTTP port (ss -tin bytes_acked every ${SS_MS} ms), MB/s between 5 % and 95 % of the object; client = transfer timestamps over the same 5–95 % (libtorrent status every 2 ms; aria2c info-log piece stamps; curl time_total − time_starttransfer over the whole body); seeder CPU from /proc/<pid>/stat`,
    `clients: libtorrent ${toolVersion(["/usr/bin/python3", "-c", "import libtorrent; print(libtorrent.version)"], /[\d.]+/)} (python3-libtorrent), ${toolVersion(["aria2c", "--version"], /aria2 version ([\d.]+)/)} aria2c, curl ${toolVersion(["curl", "--version"], /curl ([\d.]+)/)}; MB = 10^6 bytes`,
    `auto piece size for ${SIZE / MiB} MiB resolves to ${(results.get("auto")?.pieceLength ?? 0) / 1024} KiB`,
  ],
  rows,
  notes: wrong.length
    ? [`${wrong.length} download(s) did not go the intended way (check the counters in the log).`]
    : [
        "proxytorrent_upload_bytes_total{via} confirmed every BitTorrent download from the service went over peer connections, every web-seed download over the web seed, and the service sent nothing while libtorrent seeded.",
      ],
});
process.exit(0);
