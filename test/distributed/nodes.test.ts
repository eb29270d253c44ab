/**
 * Distributed mode with real processes sharing one libSQL file: the API alone (`proxytorrent api`),
 * seeder nodes alone (`proxytorrent seeder`), and the Worker under workerd. The database is the only
 * channel between them.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { freePort, startEdgeDev } from "../../seeder/dev/hrana/dev-edge";
import { type BDict, bdecode, text } from "../../seeder/node/swarm/bencode";
import { aria2Download, sha256File, tmpDir } from "../support/clients";
import { bytesRoute, startOrigin } from "../support/origin";
import { until } from "../support/poll";
import { parsePrometheus } from "../support/prometheus";
import { Service, TOKEN } from "../support/service";

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

async function seederNode(databaseUrl: string, name: string, env: Record<string, string> = {}) {
  const httpPort = await freePort();
  const node = await Service.start({
    command: "seeder",
    nodeHttpPort: httpPort,
    env: { DATABASE__DATABASE_URL: databaseUrl, NODE__NAME: name, ...env },
  });
  cleanups.push(() => node.stop());
  return node;
}

async function downloadAndHash(torrent: Uint8Array): Promise<string> {
  const dir = await tmpDir("pt-dist-");
  const path = join(dir, "x.torrent");
  await writeFile(path, torrent);
  return sha256File(await aria2Download({ torrentPath: path, dir: join(dir, "dl"), timeoutMs: 60_000 }));
}

describe("the Worker and a Bun seeder node", () => {
  test("POST to the Worker; a node sharing the database makes it ready; the Worker serves the .torrent; aria2c downloads it", async () => {
    const edgeFile = bytesRoute({ size: 1_500_000, seed: 31, contentType: "text/plain" });
    const origin = await startOrigin({ "/edge.txt": edgeFile });
    cleanups.push(() => origin.close());
    const dir = await tmpDir("pt-edge-dist-");
    const databaseUrl = `file:${join(dir, "shared.db")}`;
    const edge = await startEdgeDev({
      databaseUrl,
      port: await freePort(),
      // The API judges literal destinations at POST with its own settings: like the node's.
      workerEnv: {
        SECURITY__BEARER_TOKENS: TOKEN,
        MONITORING__LOG_LEVEL: "WARNING",
        EGRESS__ALLOW_PRIVATE_NETWORKS: "true",
      },
      stdio: "pipe",
    });
    cleanups.push(() => edge.stop());
    const node = await seederNode(databaseUrl, "edge-node");

    const call = (path: string, init: RequestInit = {}) =>
      fetch(`${edge.url}${path}`, {
        ...init,
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
      });
    const created = await call("/v1/requests", {
      method: "POST",
      body: JSON.stringify({ url: origin.url("/edge.txt") }),
    });
    expect(created.status).toBe(201);
    const { id } = (await created.json()) as { id: string };
    let st: Record<string, unknown> = {};
    for (let i = 0; i < 600 && st.status !== "ready" && st.status !== "error"; i++) {
      st = (await (await call(`/v1/requests/${id}`)).json()) as Record<string, unknown>;
      if (st.status !== "ready") await Bun.sleep(100);
    }
    expect(st.status).toBe("ready");
    expect(st.content_hash).toBe(edgeFile.body.sha256());
    const res = await call(`/v1/requests/${id}/torrent`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/x-bittorrent");
    const torrent = new Uint8Array(await res.arrayBuffer());
    expect(await downloadAndHash(torrent)).toBe(edgeFile.body.sha256());
    // The Worker hands out the request's passkey (TORRENT__ACCESS=passkey), which the node checks
    // in the shared database; the same magnet without it gets nothing. Proving an absence needs a
    // bounded wait: 6 s is many times the download above.
    const announce = text((bdecode(torrent) as BDict).announce)!;
    expect(announce).toMatch(/\/announce\?passkey=[0-9a-f]{32}$/);
    const plain = `magnet:?xt=urn:btih:${st.infohash}&dn=edge.txt&tr=${encodeURIComponent(announce.replace(/\?.*$/, ""))}`;
    const denied = await aria2Download({
      magnet: plain,
      dir: await tmpDir("pt-edge-denied-"),
      timeoutMs: 6_000,
    }).then(
      () => "downloaded",
      (e: Error) => e.message,
    );
    expect(denied).toContain("no complete download");
    const health = (await (await fetch(`${edge.url}/v1/health`)).json()) as {
      runtime: string;
      checks: Record<string, { status: string; names?: string[] }>;
    };
    expect(health.runtime).toBe("workerd");
    expect(health.checks.nodes!.names).toContain("edge-node");
    // the node logs after its commit, so the line may trail the API's "ready" a little
    await node.waitForLog((l) => l.job_status === "ready", "the node to log the job ready");
  });
});

describe("several nodes", () => {
  test("a node killed mid-fetch loses its lease; another node finishes the job with the right bytes", async () => {
    const slow = bytesRoute({ size: 3 * 1024 * 1024, seed: 32, contentType: "text/plain", chunkDelayMs: 40 });
    const origin = await startOrigin({ "/slow.txt": slow });
    cleanups.push(() => origin.close());
    const dir = await tmpDir("pt-kill-");
    const databaseUrl = `file:${join(dir, "shared.db")}`;
    const api = await Service.start({ command: "api", env: { DATABASE__DATABASE_URL: databaseUrl } });
    cleanups.push(() => api.stop());
    const a = await seederNode(databaseUrl, "node-a", { NODE__LEASE_SECONDS: "5" });

    const id = await api.create({ url: origin.url("/slow.txt") });
    await api.waitFor(id, ["fetching"], 20_000);
    await until(() => origin.count("/slow.txt") > 0, "the fetch to reach the origin", 20_000);
    await a.kill("SIGKILL");
    const b = await seederNode(databaseUrl, "node-b", { NODE__LEASE_SECONDS: "5" });

    const st = await api.waitFor(id, ["ready", "error"], 60_000);
    expect(st.status).toBe("ready");
    expect(st.content_hash).toBe(slow.body.sha256());
    expect(origin.count("/slow.txt")).toBe(2); // the killed attempt and the one that finished
    await b.waitForLog((l) => l.job_status === "ready", "node-b to log the job ready");
    expect(await downloadAndHash(await api.torrent(id))).toBe(slow.body.sha256());
    const list = (await (await api.api(`/v1/requests/${id}`)).json()) as { status: string };
    expect(list.status).toBe("ready");
  });

  test("two nodes share 24 requests: all ready, no URL fetched twice, every torrent downloadable", async () => {
    const routes: Record<string, ReturnType<typeof bytesRoute>> = {};
    for (let i = 0; i < 24; i++)
      routes[`/item-${i}.txt`] = bytesRoute({
        size: 64 * 1024 + i,
        seed: 100 + i,
        contentType: "text/plain",
        chunkDelayMs: 2,
      });
    const origin = await startOrigin(routes);
    cleanups.push(() => origin.close());
    const dir = await tmpDir("pt-two-");
    const databaseUrl = `file:${join(dir, "shared.db")}`;
    const api = await Service.start({ command: "api", env: { DATABASE__DATABASE_URL: databaseUrl } });
    cleanups.push(() => api.stop());
    const a = await seederNode(databaseUrl, "node-a", { NODE__CONCURRENCY: "4" });
    const b = await seederNode(databaseUrl, "node-b", { NODE__CONCURRENCY: "4" });

    const ids = await Promise.all(Object.keys(routes).map((p) => api.create({ url: origin.url(p) })));
    const done = await Promise.all(ids.map((id) => api.waitFor(id, ["ready", "error"], 60_000)));
    expect(done.every((d) => d.status === "ready")).toBe(true);
    for (const [path, _route] of Object.entries(routes)) expect(origin.count(path)).toBe(1);
    const byHash = new Map(Object.values(routes).map((r) => [r.body.sha256(), r]));
    for (const d of done) expect(byHash.has(d.content_hash)).toBe(true);
    // both nodes did work (otherwise this proves nothing about sharing)
    const readyOn = (n: Service) => n.logs().filter((l) => l.job_status === "ready").length;
    // each node logs after its commit: wait for the lines to catch up with the API's answers
    await until(() => readyOn(a) + readyOn(b) >= 24, "both nodes to log every job ready", 10_000);
    expect(readyOn(a) + readyOn(b)).toBe(24);
    expect(readyOn(a)).toBeGreaterThan(0);
    expect(readyOn(b)).toBeGreaterThan(0);
    // each node's own HTTP port serves its metrics, and they agree with what it logged
    for (const n of [a, b]) {
      const page = await (await fetch(`http://127.0.0.1:${n.env.NODE__HTTP_PORT}/metrics`)).text();
      const ready = parsePrometheus(page)
        .get("proxytorrent_requests_total")!
        .samples.find((x) => x.labels.status === "ready");
      expect(ready?.value).toBe(readyOn(n));
    }
    // every torrent downloads from whichever node holds it (a few at a time)
    for (let i = 0; i < ids.length; i += 6) {
      const batch = ids.slice(i, i + 6);
      const hashes = await Promise.all(batch.map(async (id) => downloadAndHash(await api.torrent(id))));
      expect(hashes).toEqual(batch.map((id) => done[ids.indexOf(id)]!.content_hash));
    }
  });
});
