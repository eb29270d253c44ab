/**
 * The library patches in seeder/patches/ and their start-up self-check (docs/patches.md): each
 * patch's check notices when the thing it patches is gone (drift simulated on the real module:
 * the target method removed or changed), a differing package version is reported, the service
 * refuses to start without a patch it relies on, and the fast-pipes patch really is the path a
 * running Swarm takes. The other patches' behaviour is proved where they are used:
 * test/db/statement-cache.test.ts (statements prepared once), test/swarm/mse-fast-dh.test.ts
 * (handshakes on our DH), test/swarm/tracker.test.ts (no self-echo),
 * test/fetcher/keepalive.test.ts (which idle connection a request may take) and
 * test/swarm/peer-gate.test.ts (unentitled peers get no byte back).
 */
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import http from "node:http";
import * as sqlite3 from "@libsql/client/sqlite3";
import Server from "bittorrent-tracker/server";
import ConnPool from "webtorrent/lib/conn-pool.js";
import Peer from "webtorrent/lib/peer.js";
import { KeepAlivePool } from "../../seeder/node/fetcher/keepalive";
import { Swarm } from "../../seeder/node/swarm/swarm";
import {
  checkLibraryPatches,
  LIBRARY_PATCHES,
  LibraryPatchError,
  patchesFor,
  verifyLibraryPatches,
} from "../../seeder/patches";
import { encryptorPrototype, mseFastDhPatch } from "../../seeder/patches/bittorrent-protocol-mse-dh";
import { trackerSwarmPatch } from "../../seeder/patches/bittorrent-tracker-swarm";
import { statementCachePatch } from "../../seeder/patches/libsql-statement-cache";
import { agentAddRequestPatch } from "../../seeder/patches/node-http-agent";
import { fastPipesPatch } from "../../seeder/patches/webtorrent-fast-pipes";
import { peerGatePatch } from "../../seeder/patches/webtorrent-peer-gate";
import { startEmbedded } from "../../seeder/process/start";
import { loadConfig } from "../../src/config";
import { createLogger } from "../../src/log";
import { freePort, libtorrentDownload, removeTmpDirs, sha256File, tmpDir } from "../support/clients";
import { randomContent, saveTorrent } from "../support/seeder-fixture";

const TEST_LIMIT = 120_000;

const restores: (() => void)[] = [];
afterEach(() => {
  for (const r of restores.splice(0).reverse()) r();
});
afterAll(removeTmpDirs);

/** Replace (or with `undefined`, remove) `key` on `target` until the test ends. */
function drift(target: object, key: string, value?: unknown): void {
  const before = Object.getOwnPropertyDescriptor(target, key);
  if (value === undefined) delete (target as Record<string, unknown>)[key];
  else Object.defineProperty(target, key, { value, configurable: true, writable: true });
  restores.push(() => {
    if (before) Object.defineProperty(target, key, before);
    else delete (target as Record<string, unknown>)[key];
  });
}

function capture() {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger({ level: "DEBUG", write: (l) => lines.push(JSON.parse(l)) });
  return { log, lines };
}

describe("given the packages this checkout installs", () => {
  test("then every patch applies and was written for exactly the installed version", () => {
    // A dependency bump fails here until each patch was re-checked and its writtenFor updated.
    for (const s of checkLibraryPatches()) expect(s).toEqual({ name: s.name, problem: null, drift: [] });
    expect(LIBRARY_PATCHES.map((p) => p.name)).toEqual([
      "webtorrent-fast-pipes",
      "bittorrent-protocol-mse-dh",
      "bittorrent-tracker-swarm",
      "libsql-statement-cache",
      "node-http-agent-add-request",
      "webtorrent-peer-gate",
    ]);
  });

  test("then the self-check logs one structured line naming the active patches", () => {
    const { log, lines } = capture();
    verifyLibraryPatches(log, LIBRARY_PATCHES);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: "INFO", msg: "library patches" });
    expect(lines[0]!["active"]).toEqual(LIBRARY_PATCHES.map((p) => p.name));
    expect(lines[0]!["drift"]).toBeUndefined();
  });

  test("then a process relies only on the patches its settings use", () => {
    const names = (env: Record<string, string>, role: "embedded" | "api" | "seeder") =>
      patchesFor(loadConfig(env), role).map((p) => p.name);
    const file = { DATABASE__DATABASE_URL: "file:/tmp/x.db" };
    expect(names(file, "embedded")).toEqual(LIBRARY_PATCHES.map((p) => p.name));
    expect(names(file, "api")).toEqual(["libsql-statement-cache"]);
    expect(names({ ...file, TORRENT__UPLOAD_RATE_LIMIT: "1000000" }, "seeder")).not.toContain(
      "webtorrent-fast-pipes",
    );
    expect(names({ DATABASE__DATABASE_URL: "libsql://db.example.test" }, "api")).toEqual([]);
    expect(names({ ...file, TORRENT__ACCESS: "open" }, "seeder")).not.toContain("webtorrent-peer-gate");
  });
});

describe("given a package version that differs from the one a patch was written for", () => {
  test("then the self-check warns and logs the drift, and still runs the patch when it applies", () => {
    const { log, lines } = capture();
    const older = { ...fastPipesPatch, writtenFor: { webtorrent: "3.0.20" } };
    verifyLibraryPatches(log, [older]);
    const warning = lines.find((l) => l["level"] === "WARNING")!;
    expect(warning).toMatchObject({
      patch: "webtorrent-fast-pipes",
      package: "webtorrent",
      writtenFor: "3.0.20",
      installed: "3.0.21",
    });
    const summary = lines.find((l) => l["msg"] === "library patches")!;
    expect(summary["active"]).toEqual(["webtorrent-fast-pipes"]);
    expect(summary["drift"]).toEqual([
      { patch: "webtorrent-fast-pipes", package: "webtorrent", writtenFor: "3.0.20", installed: "3.0.21" },
    ]);
  });
});

/** Each patch, and how its target drifts away in a future version of the package. */
const drifts = [
  {
    patch: fastPipesPatch,
    version: "webtorrent 3.0.21",
    problem: /setThrottlePipes/,
    breakIt: () => drift((Peer as unknown as { prototype: object }).prototype, "setThrottlePipes"),
  },
  {
    patch: mseFastDhPatch,
    version: "bittorrent-protocol 5.0.9",
    problem: /dh/,
    // The lazy getter became a plain field.
    breakIt: () => drift(encryptorPrototype()!, "dh", null),
  },
  {
    patch: trackerSwarmPatch,
    version: "bittorrent-tracker 11.2.3",
    problem: /createSwarm/,
    breakIt: () => drift(Server.prototype, "createSwarm"),
  },
  {
    patch: statementCachePatch,
    version: "@libsql/client 0.18.0, libsql 0.5.29",
    problem: /acquireSync/,
    breakIt: () => drift(sqlite3.ConnectionPool.prototype, "acquireSync"),
  },
  {
    patch: agentAddRequestPatch,
    version: "bun 1.4.5",
    problem: /freeSockets/,
    // Same name, but no longer picking from freeSockets itself (e.g. moved to a private helper).
    breakIt: () => {
      const original = (http.Agent.prototype as unknown as { addRequest: (...a: unknown[]) => void })
        .addRequest;
      drift(http.Agent.prototype, "addRequest", function addRequest(this: unknown, ...a: unknown[]) {
        original.apply(this, a);
      });
    },
  },
  {
    patch: peerGatePatch,
    version: "webtorrent 3.0.21",
    problem: /_addIncomingPeer/,
    // Same name, but replying to the handshake without handing the peer to the torrent first.
    breakIt: () =>
      drift(ConnPool.prototype, "_onConnection", function _onConnection(conn: unknown, _type: string) {
        return { conn, onHandshake: "peer.onHandshake(infoHash, peerId)" };
      }),
  },
];

for (const d of drifts) {
  describe(`given ${d.patch.name} and its target changed upstream`, () => {
    test("then the check reports it and the self-check refuses, naming the patch and the package version", () => {
      expect(d.patch.check()).toBeNull();
      d.breakIt();
      expect(d.patch.check()).toMatch(d.problem);
      const status = checkLibraryPatches([d.patch])[0]!;
      expect(status.problem).toMatch(d.problem);
      const { log, lines } = capture();
      let error: unknown;
      try {
        verifyLibraryPatches(log, LIBRARY_PATCHES);
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(LibraryPatchError);
      expect((error as LibraryPatchError).patch).toBe(d.patch.name);
      expect((error as Error).message).toContain(`"${d.patch.name}" cannot apply to ${d.version}`);
      const summary = lines.find((l) => l["msg"] === "library patches")!;
      expect(summary["failed"]).toEqual([d.patch.name]);
      expect(summary["active"]).not.toContain(d.patch.name);
    });
  });
}

describe("given a patch the service relies on cannot apply", () => {
  test("when the embedded service starts, then it refuses before touching storage or the database", async () => {
    const dir = await tmpDir("pt-patches-");
    const config = loadConfig({
      STORAGE__BASE_PATH: `${dir}/storage`,
      DATABASE__DATABASE_URL: `file:${dir}/db.sqlite`,
    });
    drift((Peer as unknown as { prototype: object }).prototype, "setThrottlePipes");
    const { log } = capture();
    await expect(startEmbedded(config, { log })).rejects.toThrow(
      /library patch "webtorrent-fast-pipes" cannot apply to webtorrent 3\.0\.21: .*setThrottlePipes/,
    );
    expect(await Bun.file(`${dir}/db.sqlite`).exists()).toBe(false);
  });

  test("when the fetcher builds its keep-alive pool, then it throws instead of sharing held sockets", () => {
    drift(http.Agent.prototype, "addRequest");
    expect(() => new KeepAlivePool({} as never)).toThrow(LibraryPatchError);
  });
});

describe("given a running Swarm without an upload limit", () => {
  /**
   * webtorrent's stock path builds each peer's pipeline through `throttleGroups.{down,up}.throttle()`;
   * the patched path never does. Counted on the client's own throttle groups while libtorrent
   * downloads.
   */
  async function download(fastPipes: boolean): Promise<{ throttles: number; sha256: string; want: string }> {
    const content = await randomContent(1024 * 1024 + 123, "pipes.bin");
    const saved = await saveTorrent(content, { file: "pipes.torrent", pieceSize: 256 * 1024 });
    const port = await freePort();
    const swarm = new Swarm(
      { torrent: { listenPort: port, maxConnections: 10, uploadRateLimit: 0 } },
      { fastPipes },
    );
    await swarm.start();
    try {
      await swarm.seed({ infohash: saved.infohash, torrent: saved.torrent, path: content.blob.path });
      const groups = (swarm as unknown as { client: { throttleGroups: Record<"up" | "down", object> } })
        .client.throttleGroups;
      let throttles = 0;
      for (const g of [groups.up, groups.down] as { throttle(): unknown }[]) {
        const original = g.throttle;
        g.throttle = function counted(this: unknown) {
          throttles++;
          return original.call(this);
        };
      }
      const path = await libtorrentDownload({
        torrentPath: saved.path,
        dir: await tmpDir("pt-pipes-"),
        connect: { host: "127.0.0.1", port },
        timeoutMs: 60_000,
      });
      return { throttles, sha256: await sha256File(path), want: content.blob.sha256 };
    } finally {
      await swarm.stop();
    }
  }

  test(
    "when libtorrent downloads, then the peer is wired without webtorrent's throttle streams",
    async () => {
      const fast = await download(true);
      expect(fast.sha256).toBe(fast.want);
      expect(fast.throttles).toBe(0);
      // The same download with the patch switched off takes the stock path (the counter works).
      const stock = await download(false);
      expect(stock.sha256).toBe(stock.want);
      expect(stock.throttles).toBeGreaterThan(0);
    },
    TEST_LIMIT,
  );
});
