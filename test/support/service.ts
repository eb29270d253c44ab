/**
 * Runs the real service (`bin/proxytorrent serve` and friends) as a child process on loopback,
 * with its own storage directory, database file and ports, the way a user would start it.
 */

import { join, resolve } from "node:path";
import { type Subprocess, spawn } from "bun";
import { ApiClient } from "./api-client";
import { freePort, tmpDir } from "./clients";
import { until } from "./poll";

export const ROOT = resolve(import.meta.dir, "..", "..");
export const CLI = join(ROOT, "bin", "proxytorrent");
export const TOKEN = "test-token-0123456789abcdef";

export interface ServiceOptions {
  command?: "serve" | "api" | "seeder";
  env?: Record<string, string>;
  basePath?: string;
  port?: number;
  torrentPort?: number;
  nodeHttpPort?: number;
  /** A command line the service runs under (its arguments follow), e.g. `unshare … exec "$@"`. */
  wrap?: string[];
}

export class Service extends ApiClient {
  proc: Subprocess<"ignore", "pipe", "pipe"> | null = null;
  output = "";
  readonly basePath: string;
  readonly port: number;
  readonly torrentPort: number;
  readonly env: Record<string, string>;

  private constructor(
    readonly opts: ServiceOptions,
    basePath: string,
    port: number,
    torrentPort: number,
  ) {
    super();
    this.basePath = basePath;
    this.port = port;
    this.torrentPort = torrentPort;
    this.env = {
      HOST: "127.0.0.1",
      PORT: String(port),
      STORAGE__BASE_PATH: basePath,
      TORRENT__LISTEN_PORT: String(torrentPort),
      SECURITY__BEARER_TOKENS: TOKEN,
      EGRESS__ALLOW_PRIVATE_NETWORKS: "true",
      MONITORING__LOG_LEVEL: "DEBUG",
      NODE__POLL_INTERVAL_MS: "100",
      ...(opts.nodeHttpPort ? { NODE__HTTP_PORT: String(opts.nodeHttpPort) } : {}),
      ...opts.env,
    };
  }

  static async start(opts: ServiceOptions = {}): Promise<Service> {
    const s = new Service(
      opts,
      opts.basePath ?? (await tmpDir("pt-service-")),
      opts.port ?? (await freePort()),
      opts.torrentPort ?? (await freePort()),
    );
    await s.launch();
    return s;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Start (again) with the same storage, database and ports. */
  async launch(): Promise<void> {
    const cmd = this.opts.command ?? "serve";
    this.proc = spawn([...(this.opts.wrap ?? []), CLI, cmd], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/tmp", ...this.env },
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    });
    void this.collect(this.proc.stdout);
    void this.collect(this.proc.stderr);
    const probePath = cmd === "seeder" ? "/announce" : "/v1/health";
    const probePort = cmd === "seeder" ? Number(this.env.NODE__HTTP_PORT ?? this.port) : this.port;
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (this.proc.exitCode !== null)
        throw new Error(`service exited with ${this.proc.exitCode}:\n${this.output}`);
      try {
        await fetch(`http://127.0.0.1:${probePort}${probePath}`);
        return;
      } catch {
        await Bun.sleep(100);
      }
    }
    throw new Error(`service did not start within 30 s:\n${this.output}`);
  }

  private async collect(stream: ReadableStream<Uint8Array>) {
    const dec = new TextDecoder();
    const reader = stream.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      this.output += dec.decode(value, { stream: true });
    }
  }

  /** The JSON log lines written so far, parsed (other output is skipped). Match on fields, not on `msg`. */
  logs(): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
    for (const line of this.output.split("\n")) {
      if (!line.startsWith("{")) continue;
      try {
        out.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // a line still being written
      }
    }
    return out;
  }

  /** Poll until a log line satisfies `pred`; returns it. */
  async waitForLog(
    pred: (line: Record<string, unknown>) => boolean,
    what: string,
    timeoutMs = 30_000,
  ): Promise<Record<string, unknown>> {
    let found: Record<string, unknown> | undefined;
    await until(
      () => {
        found = this.logs().find(pred);
        return found !== undefined;
      },
      `${what}\n${this.output.slice(-4000)}`,
      timeoutMs,
    );
    return found!;
  }

  protected get token(): string {
    return TOKEN;
  }

  /** Poll until the request reaches one of `states`; returns the last status body. */
  async waitFor(id: string, states: string[] = ["ready", "error", "cancelled"], timeoutMs = 60_000) {
    const deadline = Date.now() + timeoutMs;
    let last: Record<string, any> = {};
    while (Date.now() < deadline) {
      last = await this.status(id);
      if (states.includes(last.status)) return last;
      await Bun.sleep(50);
    }
    throw new Error(
      `request ${id} did not reach ${states.join("/")} in ${timeoutMs} ms; last: ${JSON.stringify(last)}\n${this.output.slice(-4000)}`,
    );
  }

  async torrent(id: string): Promise<Uint8Array> {
    const res = await this.api(`/v1/requests/${id}/torrent`);
    if (res.status !== 200) throw new Error(`torrent failed: ${res.status} ${await res.text()}`);
    return new Uint8Array(await res.arrayBuffer());
  }

  async kill(signal: "SIGKILL" | "SIGTERM" = "SIGTERM"): Promise<number | null> {
    if (!this.proc) return null;
    this.proc.kill(signal);
    const code = await this.proc.exited;
    this.proc = null;
    return code;
  }

  async stop(): Promise<void> {
    if (this.proc && this.proc.exitCode === null) await this.kill("SIGTERM");
  }
}
