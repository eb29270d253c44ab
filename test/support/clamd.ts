/**
 * A real clamd (Debian `clamav-daemon`, installed by .ci/run) for tests: its own config file, its
 * own database directory holding only signatures the test writes (the official ones need
 * freshclam, which must never run here), and a unix socket in a temp directory. Nothing is
 * downloaded and nothing listens beyond that socket.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { type Subprocess, spawn } from "bun";
import { tmpDir } from "./clients";
import { until } from "./poll";

export const CLAMD_BIN = "/usr/sbin/clamd";

export interface Clamd {
  readonly socket: string;
  readonly pid: number;
  /** Everything clamd wrote to stdout and stderr. */
  output(): string;
  stop(): Promise<void>;
}

/** clamd's `.ndb` body signature: `name:0:*:<hex>` matches `pattern` anywhere in any file. */
export function bodySignature(name: string, pattern: string): string {
  return `${name}:0:*:${Buffer.from(pattern).toString("hex")}\n`;
}

/** Start clamd with only `signatures` (file name → content, e.g. `test.ndb`) as its database. */
export async function startClamd(signatures: Record<string, string>, extraConfig = ""): Promise<Clamd> {
  const dir = await tmpDir("pt-clamd-");
  const db = join(dir, "db");
  await mkdir(db);
  for (const [name, content] of Object.entries(signatures)) await writeFile(join(db, name), content);
  const socket = join(dir, "clamd.sock");
  const config = join(dir, "clamd.conf");
  // Foreground: the test owns the process. No User (it would drop privileges as root and lose
  // access to the temp dir), no DatabaseMirror/NotifyClamd: nothing here talks to freshclam.
  await writeFile(
    config,
    [
      `DatabaseDirectory ${db}`,
      `LocalSocket ${socket}`,
      "Foreground yes",
      `PidFile ${join(dir, "clamd.pid")}`,
      `TemporaryDirectory ${dir}`,
      "SelfCheck 0",
      extraConfig,
    ].join("\n"),
  );
  let out = "";
  const proc: Subprocess<"ignore", "pipe", "pipe"> = spawn([CLAMD_BIN, `--config-file=${config}`], {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const collect = async (s: ReadableStream<Uint8Array>) => {
    const reader = s.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      out += new TextDecoder().decode(value);
    }
  };
  void collect(proc.stdout);
  void collect(proc.stderr);
  const answers = () =>
    new Promise<boolean>((resolve) => {
      const sock = connect({ path: socket });
      sock.on("connect", () => sock.write("zPING\0"));
      sock.on("data", (d: Buffer) => {
        resolve(d.toString().startsWith("PONG"));
        sock.destroy();
      });
      sock.on("error", () => resolve(false));
    });
  await until(
    async () => {
      if (proc.exitCode !== null) throw new Error(`clamd exited with ${proc.exitCode}:\n${out}`);
      return answers();
    },
    "clamd to answer PING",
    60_000,
    100,
  );
  return {
    socket,
    pid: proc.pid,
    output: () => out,
    async stop() {
      if (proc.exitCode === null) proc.kill("SIGTERM");
      await proc.exited;
    },
  };
}
