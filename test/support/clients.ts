/**
 * Real BitTorrent clients for tests (aria2c and python3-libtorrent), plus small helpers: a free
 * loopback port, temp directories, sha256 of a file.
 *
 * Every client runs with everything that could leave the machine switched off (DHT, LSD, PEX,
 * UPnP/NAT-PMP) and bound to 127.0.0.1. A client that does not finish within `timeoutMs` is
 * SIGKILLed and the error carries the tail of its output. Children and temp directories still
 * around when the test process exits are killed/removed (set KEEP_TMP=1 to keep directories).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, rmSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeTorrent, text } from "../../seeder/node/swarm/bencode";

const children = new Set<ChildProcess>();
const tempDirs = new Set<string>();
// For plain `bun script.ts` runs. bun test (1.4.5) fires neither 'exit' nor 'beforeExit' (checked),
// so test files call removeTmpDirs() in afterAll; bun test itself kills dangling child processes.
process.once("exit", () => {
  for (const c of children) c.kill("SIGKILL");
  if (process.env.KEEP_TMP !== "1") for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

export { freePort } from "../../seeder/dev/free-port";

/** A fresh directory under the OS temp dir, removed when the test process exits. */
export async function tmpDir(prefix = "pt-test-"): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

/** Remove every directory tmpDir() made so far in this process (KEEP_TMP=1 keeps them). */
export async function removeTmpDirs(): Promise<void> {
  if (process.env.KEEP_TMP === "1") return;
  const dirs = [...tempDirs];
  tempDirs.clear();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest("hex");
}

/** Name of the single file in a .torrent (where clients save it, relative to their dir). */
async function torrentFileName(torrentPath: string): Promise<string> {
  const { info } = decodeTorrent(new Uint8Array(await readFile(torrentPath)));
  const name = text(info["name"]);
  if (!name || info["files"] !== undefined) throw new Error(`${torrentPath}: expected a single-file torrent`);
  return name;
}

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
}

const OUTPUT_TAIL = 16 * 1024;

/** Run a client to completion or SIGKILL it at the deadline; output is stdout+stderr interleaved. */
function run(label: string, cmd: string, args: string[], timeoutMs: number): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    children.add(child);
    let output = "";
    const collect = (b: Buffer) => {
      output += b.toString("utf8");
      if (output.length > 2 * OUTPUT_TAIL) output = output.slice(-OUTPUT_TAIL);
    };
    child.stdout?.on("data", collect);
    child.stderr?.on("data", collect);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      children.delete(child);
      reject(new Error(`${label}: could not start ${cmd}: ${err.message}`));
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      const tail = output.slice(-OUTPUT_TAIL);
      if (timedOut) {
        reject(new Error(`${label}: no complete download within ${timeoutMs} ms (killed). Output:\n${tail}`));
      } else {
        resolve({ code, signal, output: tail });
      }
    });
  });
}

/** aria2c options that keep it on loopback and make it exit as soon as the download is complete. */
export const ARIA2_SAFE_FLAGS = [
  "--enable-dht=false",
  "--enable-dht6=false",
  "--bt-enable-lpd=false",
  "--enable-peer-exchange=false",
  "--seed-time=0",
  "--bt-stop-timeout=60",
  "--file-allocation=none",
];

export interface Aria2Options {
  /** A .torrent file, or else `magnet`. */
  torrentPath?: string;
  magnet?: string;
  dir: string;
  timeoutMs: number;
  /** Ignore the torrent's trackers, so only its web seeds (url-list) can serve it. */
  webSeedOnly?: boolean;
}

/** Download a .torrent with aria2c; resolves to the downloaded file's path. */
export async function aria2Download(opts: Aria2Options): Promise<string> {
  const name = opts.torrentPath
    ? await torrentFileName(opts.torrentPath)
    : new URLSearchParams(opts.magnet?.slice("magnet:?".length)).get("dn");
  if (!name) throw new Error("aria2Download needs a torrent file or a magnet with dn=");
  await mkdir(opts.dir, { recursive: true });
  const args = [
    "--no-conf=true",
    ...ARIA2_SAFE_FLAGS,
    // Listen on and connect from loopback only.
    "--interface=127.0.0.1",
    `--dir=${opts.dir}`,
    "--allow-overwrite=true",
    "--auto-file-renaming=false",
    "--bt-save-metadata=false",
    "--summary-interval=0",
    "--console-log-level=notice",
    "--enable-color=false",
    ...(opts.webSeedOnly ? ["--bt-exclude-tracker=*"] : []),
    ...(opts.torrentPath ? [`--torrent-file=${opts.torrentPath}`] : [opts.magnet!]),
  ];
  const res = await run("aria2c", "aria2c", args, opts.timeoutMs);
  if (res.code !== 0) throw new Error(`aria2c exited with ${res.code ?? res.signal}. Output:\n${res.output}`);
  const path = join(opts.dir, name);
  await stat(path).catch(() => {
    throw new Error(`aria2c succeeded but ${path} is missing. Output:\n${res.output}`);
  });
  return path;
}

/**
 * The libtorrent leecher, run by /usr/bin/python3 (the python3 first on PATH may lack the module).
 * argv[1] is a JSON object: torrent, dir, optional bind (loopback address to listen on and connect
 * from, default 127.0.0.1), optional host/port to dial directly, optional
 * encryption ("rc4" | "both": MSE/PE forced in and out, RC4 only or libtorrent's pe_both).
 * Prints "DONE <path>" once every piece is downloaded and checked (preceded, when encryption was
 * forced, by "ENC <kinds>": the encryption of the peer connections it used), progress on stderr.
 */
const LIBTORRENT_SCRIPT = String.raw`
import json, os, sys, time
import libtorrent as lt

args = json.loads(sys.argv[1])
bind = args.get("bind", "127.0.0.1")
settings = {
    "listen_interfaces": bind + ":0",
    "outgoing_interfaces": bind,
    "enable_dht": False,
    "enable_lsd": False,
    "enable_upnp": False,
    "enable_natpmp": False,
    "enable_outgoing_utp": False,
    "enable_incoming_utp": False,
    "enable_outgoing_tcp": True,
    "enable_incoming_tcp": True,
    "user_agent": "proxytorrent-test-libtorrent",
    "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.status_notification
        | lt.alert.category_t.tracker_notification
        | lt.alert.category_t.connect_notification
        | lt.alert.category_t.peer_notification,
}
enc = args.get("encryption")
if enc:
    settings["out_enc_policy"] = int(lt.enc_policy.pe_forced)
    settings["in_enc_policy"] = int(lt.enc_policy.pe_forced)
    settings["allowed_enc_level"] = int({"rc4": lt.enc_level.rc4, "both": lt.enc_level.pe_both}[enc])
    settings["prefer_rc4"] = enc == "rc4"
    # Keep the connection to the seeder once done (seed to seed), so its encryption flags can still
    # be read when a fast download finished between two samples.
    settings["close_redundant_connections"] = False
ses = lt.session(settings)
if enc:
    s = ses.get_settings()
    sys.stderr.write("enc settings: out=%s in=%s level=%s\n" % (s["out_enc_policy"], s["in_enc_policy"], s["allowed_enc_level"]))
if args.get("magnet"):
    # Metadata comes from a peer (BEP 9); the magnet's ws= web seeds are used once it is known.
    atp = lt.parse_magnet_uri(args["magnet"])
else:
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(args["torrent"])
atp.save_path = args["dir"]
h = ses.add_torrent(atp)
peer = (args["host"], args["port"]) if args.get("host") else None
if peer:
    h.connect_peer(peer)

seen = set()
def sample_encryption():
    for p in (h.get_peer_info() if enc else []):
        if p.flags & (lt.peer_info.connecting | lt.peer_info.handshake):
            continue  # not established yet: no encryption flags to read
        if p.flags & lt.peer_info.rc4_encrypted:
            seen.add("rc4")
        elif p.flags & lt.peer_info.plaintext_encrypted:
            seen.add("plaintext-after-handshake")
        else:
            seen.add("none")
last_print = 0.0
last_dial = time.time()
while True:
    for a in ses.pop_alerts():
        sys.stderr.write("alert: %s: %s\n" % (type(a).__name__, a.message()))
    sample_encryption()
    st = h.status()
    if st.is_seeding or st.is_finished:
        sample_encryption()  # the connection is kept open (close_redundant_connections off)
        break
    now = time.time()
    if now - last_print > 1.0:
        sys.stderr.write("state=%s progress=%.3f peers=%d down=%d\n" % (st.state, st.progress, st.num_peers, st.total_done))
        last_print = now
    # A dialled peer is not retried on its own once the connection failed; dial again while idle.
    if peer and st.num_peers == 0 and now - last_dial > 2.0:
        h.connect_peer(peer)
        last_dial = now
    time.sleep(0.05)

# Make sure every byte is on disk before the caller hashes the file.
h.flush_cache()
deadline = time.time() + 10
while time.time() < deadline:
    if any(isinstance(a, lt.cache_flushed_alert) for a in ses.pop_alerts()):
        break
    time.sleep(0.02)
ses.pause()
if enc:
    print("ENC " + ",".join(sorted(seen)), flush=True)
print("DONE " + os.path.join(args["dir"], h.torrent_file().files().file_path(0)), flush=True)
`;

export interface LibtorrentOptions {
  /** A .torrent file, or else `magnet`. */
  torrentPath?: string;
  /** A magnet link instead of a .torrent (its metadata must come from a peer). */
  magnet?: string;
  dir: string;
  /** Dial this peer directly (besides whatever trackers the torrent names). */
  connect?: { host: string; port: number };
  /** Listen on and connect (trackers included) from this loopback address; default 127.0.0.1. */
  bind?: string;
  /** Require MSE/PE encryption both ways: RC4 only, or libtorrent's pe_both. */
  encryption?: "rc4" | "both";
  timeoutMs: number;
}

export interface LibtorrentDownload {
  path: string;
  /** With `encryption`: what the peer connections used ("rc4", "plaintext-after-handshake", "none"). */
  encryption: string[];
  output: string;
}

/** Download a .torrent with python3-libtorrent; resolves to the file, encryption seen, and output. */
export async function libtorrentDownloadDetailed(opts: LibtorrentOptions): Promise<LibtorrentDownload> {
  await mkdir(opts.dir, { recursive: true });
  const spec = JSON.stringify({
    ...(opts.magnet ? { magnet: opts.magnet } : { torrent: opts.torrentPath }),
    dir: opts.dir,
    ...(opts.bind ? { bind: opts.bind } : {}),
    ...(opts.connect ? { host: opts.connect.host, port: opts.connect.port } : {}),
    ...(opts.encryption ? { encryption: opts.encryption } : {}),
  });
  const res = await run("libtorrent", "/usr/bin/python3", ["-c", LIBTORRENT_SCRIPT, spec], opts.timeoutMs);
  const done = res.output.match(/^DONE (.+)$/m);
  if (res.code !== 0 || !done) {
    throw new Error(
      `libtorrent exited with ${res.code ?? res.signal} before finishing. Output:\n${res.output}`,
    );
  }
  const enc = res.output.match(/^ENC (.*)$/m)?.[1] ?? "";
  return { path: done[1]!.trim(), encryption: enc ? enc.split(",") : [], output: res.output };
}

/** Download a .torrent with python3-libtorrent; resolves to the downloaded file's path. */
export async function libtorrentDownload(opts: LibtorrentOptions): Promise<string> {
  return (await libtorrentDownloadDetailed(opts)).path;
}
