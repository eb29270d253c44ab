/**
 * Where the BitTorrent port listens: on the host the operator chose (HOST, or TORRENT__LISTEN_HOST),
 * never on every interface behind their back; a taken port names the setting to change; and a
 * public HOST with a loopback NODE__PUBLIC_URL is called out at start-up.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { readFile, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { type BDict, bdecode, bencode } from "../../seeder/node/swarm/bencode";
import { loopbackPublicUrlWarning } from "../../seeder/process/bind-warnings";
import { loadConfig } from "../../src/config";
import { aria2Download, freePort, removeTmpDirs, sha256File, tmpDir } from "../support/clients";
import { bytesRoute, startOrigin } from "../support/origin";
import { runToEnd } from "../support/run";
import { CLI, ROOT, Service, TOKEN } from "../support/service";

afterAll(removeTmpDirs);

/** Addresses with a listening TCP socket on `port`, read from /proc/net/tcp and tcp6. */
async function listenersOn(port: number): Promise<string[]> {
  const out: string[] = [];
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    const lines = (await readFile(file, "utf8")).trim().split("\n").slice(1);
    for (const line of lines) {
      const [, local, , state] = line.trim().split(/\s+/);
      const [hex, portHex] = local!.split(":");
      if (state !== "0A" || Number.parseInt(portHex!, 16) !== port) continue; // 0A = LISTEN
      if (hex!.length === 8) {
        // Little-endian IPv4.
        out.push(
          hex!
            .match(/../g)!
            .reverse()
            .map((b) => Number.parseInt(b, 16))
            .join("."),
        );
      } else {
        out.push(hex === "0".repeat(32) ? "::" : `ipv6:${hex}`);
      }
    }
  }
  return out;
}

describe("given HOST=127.0.0.1", () => {
  test("when the service has started, then the BitTorrent port listens on 127.0.0.1 only", async () => {
    const svc = await Service.start();
    try {
      expect(await listenersOn(svc.torrentPort)).toEqual(["127.0.0.1"]);
    } finally {
      await svc.stop();
    }
  });

  test("when the BitTorrent port is taken, then start-up fails naming TORRENT__LISTEN_PORT and the address", async () => {
    const port = await freePort();
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen({ port, host: "127.0.0.1" }, resolve));
    try {
      const { stdout, stderr, code } = await runToEnd([CLI, "serve"], {
        cwd: ROOT,
        env: {
          PATH: process.env.PATH ?? "/usr/bin:/bin",
          HOME: process.env.HOME ?? "/tmp",
          HOST: "127.0.0.1",
          PORT: String(await freePort()),
          STORAGE__BASE_PATH: await tmpDir("pt-bind-"),
          TORRENT__LISTEN_PORT: String(port),
          SECURITY__BEARER_TOKENS: TOKEN,
        },
      });
      expect(code).not.toBe(0);
      const output = stdout + stderr;
      expect(output).toContain("TORRENT__LISTEN_PORT");
      expect(output).toContain(`127.0.0.1:${port}`);
    } finally {
      blocker.close();
    }
  });
});

describe("given TORRENT__LISTEN_HOST=127.0.0.2", () => {
  test("when a client downloads through the tracker, then it reaches the seeder there", async () => {
    const content = bytesRoute({ size: 512 * 1024 + 3, seed: 31, contentType: "application/json" });
    const origin = await startOrigin({ "/x.json": content });
    // NODE__ANNOUNCE_IP: the tracker must hand out the address the port is bound to.
    const svc = await Service.start({
      env: { TORRENT__LISTEN_HOST: "127.0.0.2", NODE__ANNOUNCE_IP: "127.0.0.2" },
    });
    try {
      expect(await listenersOn(svc.torrentPort)).toEqual(["127.0.0.2"]);
      const id = await svc.create({ url: origin.url("/x.json") });
      expect((await svc.waitFor(id)).status).toBe("ready");
      // No url-list: the bytes can only come from the seeder at 127.0.0.2.
      const t = bdecode(await svc.torrent(id)) as BDict;
      delete t["url-list"];
      const dir = await tmpDir("pt-bind-dl-");
      const torrentPath = join(dir, "t.torrent");
      await writeFile(torrentPath, bencode(t));
      const file = await aria2Download({ torrentPath, dir: join(dir, "out"), timeoutMs: 60_000 });
      expect(await sha256File(file)).toBe(content.body.sha256());
    } finally {
      await svc.stop();
      await origin.close();
    }
  });
});

describe("a public HOST with a loopback NODE__PUBLIC_URL", () => {
  // Only the configuration is built here: nothing binds a public address.
  test.each([
    [{ HOST: "0.0.0.0" }, true],
    [{ HOST: "::" }, true],
    [{ HOST: "0.0.0.0", NODE__PUBLIC_URL: "http://localhost:8000" }, true],
    [{ HOST: "192.0.2.7", NODE__PUBLIC_URL: "http://127.0.0.1:8000" }, true],
    [{ HOST: "0.0.0.0", NODE__PUBLIC_URL: "http://192.0.2.7:8000" }, false],
    [{ HOST: "0.0.0.0", NODE__PUBLIC_URL: "https://node1.example.com" }, false],
    [{ HOST: "127.0.0.1" }, false],
    [{ HOST: "localhost" }, false],
  ])("%j warns: %p", (env, warns) => {
    const message = loopbackPublicUrlWarning(loadConfig(env));
    if (warns) {
      expect(message).toContain("NODE__PUBLIC_URL");
      expect(message).toContain(`HOST=${env.HOST}`);
    } else expect(message).toBeNull();
  });
});
