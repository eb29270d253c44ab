/**
 * A real SOCKS5 server for tests: `microsocks` (Debian package) on 127.0.0.1 and a free port,
 * optionally with a user name and password. Its log lines are collected: microsocks prints one
 * per client it connects, e.g. `client[4] 127.0.0.1: connected to 127.0.0.1:41234`, which is how
 * a test proves that traffic really crossed the proxy.
 *
 *   const socks = await startMicrosocks({ user: "alice", password: "s3cret" });
 *   ... PROXY__PROXY_URL = socks.url("socks5") ...
 *   expect(socks.connectedTo(origin.port)).toBe(1);
 *   await socks.stop();
 */

import net from "node:net";
import { type Subprocess, spawn } from "bun";
import { freePort as freeLoopbackPort } from "../../seeder/dev/free-port";

export interface Microsocks {
  host: "127.0.0.1";
  port: number;
  user?: string;
  password?: string;
  /** Proxy URL with credentials percent-encoded, e.g. `socks5h://alice:s3cret@127.0.0.1:1080`. */
  url(scheme?: "socks5" | "socks5h"): string;
  /** Everything microsocks printed so far. */
  log(): string;
  /** How many times microsocks reported connecting a client to 127.0.0.1:`port` (or [::1]:port). */
  connectedTo(port: number): number;
  stop(): Promise<void>;
}

export { freeLoopbackPort };

async function waitForListen(port: number, proc: Subprocess, log: () => string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (proc.exitCode !== null) throw new Error(`microsocks exited (${proc.exitCode}): ${log()}`);
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: "127.0.0.1", port });
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (up) return;
    await Bun.sleep(25);
  }
  throw new Error(`microsocks did not listen on ${port}: ${log()}`);
}

/** Start microsocks; with `user` and `password`, it requires RFC 1929 authentication. */
export async function startMicrosocks(opts: { user?: string; password?: string } = {}): Promise<Microsocks> {
  for (let attempt = 0; ; attempt++) {
    const port = await freeLoopbackPort();
    const args = ["microsocks", "-i", "127.0.0.1", "-p", String(port)];
    if (opts.user !== undefined) args.push("-u", opts.user, "-P", opts.password ?? "");
    const proc = spawn(args, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    let out = "";
    const drain = async (stream: ReadableStream<Uint8Array>) => {
      const dec = new TextDecoder();
      const reader = stream.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        out += dec.decode(value, { stream: true });
      }
    };
    void drain(proc.stdout);
    void drain(proc.stderr);
    try {
      await waitForListen(port, proc, () => out);
    } catch (e) {
      proc.kill();
      // Another process took the port between our probe and microsocks' bind: try another.
      if (attempt < 3) continue;
      throw e;
    }
    // Our readiness probe connected without a handshake; it is not a client connection.
    const enc = encodeURIComponent;
    return {
      host: "127.0.0.1",
      port,
      user: opts.user,
      password: opts.password,
      url: (scheme = "socks5") =>
        opts.user !== undefined
          ? `${scheme}://${enc(opts.user)}:${enc(opts.password ?? "")}@127.0.0.1:${port}`
          : `${scheme}://127.0.0.1:${port}`,
      log: () => out,
      connectedTo: (target) =>
        out
          .split("\n")
          .filter((l) =>
            new RegExp(`connected to (127\\.0\\.0\\.1|\\[?::1\\]?|localhost):${target}\\b`).test(l),
          ).length,
      stop: async () => {
        proc.kill();
        await proc.exited;
      },
    };
  }
}
