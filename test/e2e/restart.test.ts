/**
 * Crashes and restarts of the real service process: no job is lost, no partial blob is left under a
 * content name, and ready torrents are seeded again without a new request.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { readdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ContentStore } from "../../seeder/node/cas";
import { aria2Download, libtorrentDownload, sha256File, tmpDir } from "../support/clients";
import { bytesRoute, type Origin, startOrigin } from "../support/origin";
import { until } from "../support/poll";
import { Service } from "../support/service";

const origins: Origin[] = [];
const services: Service[] = [];
afterAll(async () => {
  for (const s of services) await s.stop();
  for (const o of origins) await o.close();
});

/** Bytes in the node's temporary (.part) files. */
async function partialBytes(base: string): Promise<number> {
  let total = 0;
  for (const f of await readdir(join(base, "tmp")).catch(() => [] as string[]))
    if (f.endsWith(".part")) total += (await stat(join(base, "tmp", f)).catch(() => ({ size: 0 }))).size;
  return total;
}

async function casBlobs(base: string): Promise<string[]> {
  const out: string[] = [];
  const root = join(base, "cas", "sha256");
  for (const a of await readdir(root).catch(() => [])) {
    for (const b of await readdir(join(root, a))) out.push(...(await readdir(join(root, a, b))));
  }
  return out;
}

describe("crash in the middle of a fetch", () => {
  test("SIGKILL while fetching; after a restart the job completes and the store holds only whole blobs", async () => {
    // About 4 MiB at 64 KiB per 40 ms: the fetch takes a few seconds, long enough to kill it mid-body.
    const slow = bytesRoute({ size: 4 * 1024 * 1024, seed: 21, contentType: "text/plain", chunkDelayMs: 40 });
    const origin = await startOrigin({ "/slow.txt": slow });
    origins.push(origin);
    const svc = await Service.start({ env: { NODE__LEASE_SECONDS: "5" } });
    services.push(svc);
    const id = await svc.create({ url: origin.url("/slow.txt") });
    await svc.waitFor(id, ["fetching"], 20_000);
    // mid-body: part of it is written to the node's temporary file
    await until(async () => (await partialBytes(svc.basePath)) > 0, "the first body bytes on disk", 20_000);
    expect((await svc.status(id)).status).toBe("fetching");
    await svc.kill("SIGKILL");
    expect(await casBlobs(svc.basePath)).toEqual([]);

    await svc.launch();
    const st = await svc.waitFor(id, ["ready", "error", "cancelled"], 60_000);
    expect(st.status).toBe("ready");
    expect(st.content_hash).toBe(slow.body.sha256());
    expect(await casBlobs(svc.basePath)).toEqual([slow.body.sha256()]);
    expect(await new ContentStore(svc.basePath).verify(slow.body.sha256())).toBe(true);
    const leftovers = (await readdir(join(svc.basePath, "tmp"))).filter((f) => f.endsWith(".part"));
    expect(leftovers).toEqual([]);
  });
});

describe("restart after ready", () => {
  test("the same .torrent downloads again after a restart, with no new request", async () => {
    const data = bytesRoute({ size: 2 * 1024 * 1024 + 7, seed: 22, contentType: "text/plain" });
    const origin = await startOrigin({ "/data.txt": data });
    origins.push(origin);
    const svc = await Service.start();
    services.push(svc);
    const id = await svc.create({ url: origin.url("/data.txt") });
    expect((await svc.waitFor(id)).status).toBe("ready");
    const dir = await tmpDir("pt-restart-");
    const torrentPath = join(dir, "data.torrent");
    await writeFile(torrentPath, await svc.torrent(id));

    await svc.kill("SIGKILL");
    await svc.launch();
    const fetchesBefore = origin.count("/data.txt");

    const viaTracker = await aria2Download({ torrentPath, dir: join(dir, "aria2"), timeoutMs: 60_000 });
    expect(await sha256File(viaTracker)).toBe(data.body.sha256());
    const direct = await libtorrentDownload({
      torrentPath,
      dir: join(dir, "lt"),
      connect: { host: "127.0.0.1", port: svc.torrentPort },
      timeoutMs: 60_000,
    });
    expect(await sha256File(direct)).toBe(data.body.sha256());
    expect(origin.count("/data.txt")).toBe(fetchesBefore);
    expect(svc.logs().some((l) => typeof l.reseed_ms === "number")).toBe(true); // the node started
  });

  test("SIGTERM hands a running job back, and the next start finishes it", async () => {
    const slow = bytesRoute({ size: 3 * 1024 * 1024, seed: 23, contentType: "text/plain", chunkDelayMs: 40 });
    const origin = await startOrigin({ "/slow2.txt": slow });
    origins.push(origin);
    const svc = await Service.start({ env: { NODE__LEASE_SECONDS: "60" } });
    services.push(svc);
    const id = await svc.create({ url: origin.url("/slow2.txt") });
    await svc.waitFor(id, ["fetching"], 20_000);
    await until(() => origin.count("/slow2.txt") > 0, "the fetch to reach the origin", 20_000);
    expect(await svc.kill("SIGTERM")).toBe(0);
    // Released, not left leased for 60 s: the next start picks it up at once.
    await svc.launch();
    const st = await svc.waitFor(id, ["ready", "error"], 30_000);
    expect(st.status).toBe("ready");
    expect(st.content_hash).toBe(slow.body.sha256());
  });
});
