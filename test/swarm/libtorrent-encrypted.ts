/**
 * python3-libtorrent as a leecher that REQUIRES protocol encryption (MSE/PE): in and out
 * `pe_forced`, and an allowed level of RC4 only (the payload is encrypted too) or `pe_both`.
 * Same loopback-only settings as `libtorrentDownload` in clients.ts; it dials one peer directly.
 * Resolves to the downloaded file and the encryption libtorrent reports for the peers it used
 * (from peer_info flags), so a test can tell an encrypted transfer from a plaintext one.
 */
import { spawn } from "node:child_process";
import { mkdir } from "node:fs/promises";

const SCRIPT = String.raw`
import json, os, sys, time
import libtorrent as lt

args = json.loads(sys.argv[1])
level = {"rc4": lt.enc_level.rc4, "both": lt.enc_level.pe_both}[args["level"]]
settings = {
    "listen_interfaces": "127.0.0.1:0",
    "outgoing_interfaces": "127.0.0.1",
    "enable_dht": False,
    "enable_lsd": False,
    "enable_upnp": False,
    "enable_natpmp": False,
    "enable_outgoing_utp": False,
    "enable_incoming_utp": False,
    "enable_outgoing_tcp": True,
    "enable_incoming_tcp": True,
    "user_agent": "proxytorrent-test-libtorrent-encrypted",
    "out_enc_policy": int(lt.enc_policy.pe_forced),
    "in_enc_policy": int(lt.enc_policy.pe_forced),
    "allowed_enc_level": int(level),
    "prefer_rc4": args["level"] == "rc4",
    "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.status_notification
        | lt.alert.category_t.connect_notification
        | lt.alert.category_t.peer_notification,
}
ses = lt.session(settings)
s = ses.get_settings()
sys.stderr.write("enc settings: out=%s in=%s level=%s\n" % (s["out_enc_policy"], s["in_enc_policy"], s["allowed_enc_level"]))
ti = lt.torrent_info(args["torrent"])
atp = lt.add_torrent_params()
atp.ti = ti
atp.save_path = args["dir"]
h = ses.add_torrent(atp)
peer = (args["host"], args["port"])
h.connect_peer(peer)

seen = set()
last_print = 0.0
last_dial = time.time()
while True:
    for a in ses.pop_alerts():
        sys.stderr.write("alert: %s: %s\n" % (type(a).__name__, a.message()))
    for p in h.get_peer_info():
        if p.flags & (lt.peer_info.connecting | lt.peer_info.handshake):
            continue  # not established yet: no encryption flags to read
        if p.flags & lt.peer_info.rc4_encrypted:
            seen.add("rc4")
        elif p.flags & lt.peer_info.plaintext_encrypted:
            seen.add("plaintext-after-handshake")
        else:
            seen.add("none")
    st = h.status()
    if st.is_seeding or st.is_finished:
        break
    now = time.time()
    if now - last_print > 1.0:
        sys.stderr.write("state=%s progress=%.3f peers=%d down=%d\n" % (st.state, st.progress, st.num_peers, st.total_done))
        last_print = now
    if st.num_peers == 0 and now - last_dial > 2.0:
        h.connect_peer(peer)
        last_dial = now
    time.sleep(0.02)

h.flush_cache()
deadline = time.time() + 10
while time.time() < deadline:
    if any(isinstance(a, lt.cache_flushed_alert) for a in ses.pop_alerts()):
        break
    time.sleep(0.02)
ses.pause()
print("ENC " + ",".join(sorted(seen)), flush=True)
print("DONE " + os.path.join(args["dir"], ti.files().file_path(0)), flush=True)
`;

export interface EncryptedLibtorrentOptions {
  torrentPath: string;
  dir: string;
  connect: { host: string; port: number };
  /** "rc4": handshake and payload encrypted (default); "both": libtorrent's pe_both. */
  level?: "rc4" | "both";
  timeoutMs: number;
}

export interface EncryptedDownload {
  path: string;
  /** Encryption of the peer connections libtorrent saw: "rc4", "plaintext-after-handshake", "none". */
  encryption: string[];
  output: string;
}

export async function libtorrentEncryptedDownload(
  opts: EncryptedLibtorrentOptions,
): Promise<EncryptedDownload> {
  await mkdir(opts.dir, { recursive: true });
  const spec = JSON.stringify({
    torrent: opts.torrentPath,
    dir: opts.dir,
    host: opts.connect.host,
    port: opts.connect.port,
    level: opts.level ?? "rc4",
  });
  const child = spawn("/usr/bin/python3", ["-c", SCRIPT, spec], { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const collect = (b: Buffer) => {
    output = (output + b.toString("utf8")).slice(-32 * 1024);
  };
  child.stdout.on("data", collect);
  child.stderr.on("data", collect);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, opts.timeoutMs);
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", resolve);
  }).finally(() => clearTimeout(timer));
  const done = output.match(/^DONE (.+)$/m);
  if (timedOut || code !== 0 || !done) {
    throw new Error(
      `encrypted libtorrent ${timedOut ? `killed after ${opts.timeoutMs} ms` : `exited with ${code}`}. Output:\n${output}`,
    );
  }
  const enc = output.match(/^ENC (.*)$/m)?.[1] ?? "";
  return { path: done[1]!.trim(), encryption: enc ? enc.split(",") : [], output };
}
