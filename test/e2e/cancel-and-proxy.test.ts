/**
 * Through the real service: DELETE reaches a running fetch and a seeding torrent, and a configured
 * SOCKS5 proxy carries every fetch (and fails closed).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { bytesRoute, type Origin, startOrigin } from "../support/origin";
import { until } from "../support/poll";
import { Service } from "../support/service";
import { startMicrosocks } from "../support/socks";

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

async function origin(routes: Parameters<typeof startOrigin>[0]): Promise<Origin> {
  const o = await startOrigin(routes);
  cleanups.push(() => o.close());
  return o;
}
async function service(env: Record<string, string> = {}): Promise<Service> {
  const s = await Service.start({ env });
  cleanups.push(() => s.stop());
  return s;
}

describe("cancel", () => {
  test("DELETE during a slow fetch aborts it: the request and job end cancelled, nothing is stored", async () => {
    const slow = bytesRoute({ size: 8 * 1024 * 1024, seed: 51, contentType: "text/plain", chunkDelayMs: 50 });
    const o = await origin({ "/slow.txt": slow });
    const svc = await service({ NODE__LEASE_SECONDS: "5" });
    const id = await svc.create({ url: o.url("/slow.txt") });
    await svc.waitFor(id, ["fetching"], 20_000);
    await until(() => o.count("/slow.txt") > 0, "the fetch to reach the origin", 20_000);
    const res = await svc.api(`/v1/requests/${id}`, { method: "DELETE" });
    expect(res.status).toBe(204);
    expect((await svc.status(id)).status).toBe("cancelled");
    // the worker sees the cancel at its next heartbeat (lease/3) and closes the origin connection
    await svc.waitForLog((l) => l.job_status === "cancelled", "the node to log the job cancelled", 10_000);
    const health = (await (await fetch(`${svc.url}/v1/health`)).json()) as {
      checks: { seeding: { active_jobs: number; torrents: number } };
    };
    expect(health.checks.seeding.active_jobs).toBe(0);
    expect(health.checks.seeding.torrents).toBe(0);
    expect(await readdir(join(svc.basePath, "cas", "sha256"))).toEqual([]);
    expect((await readdir(join(svc.basePath, "tmp"))).filter((f) => f.endsWith(".part"))).toEqual([]);
  });

  test("DELETE of a ready request stops seeding once no other live request needs it", async () => {
    const data = bytesRoute({ size: 300_000, seed: 52, contentType: "text/plain" });
    const other = bytesRoute({ size: 1_000, seed: 54, contentType: "text/plain" });
    const o = await origin({ "/d.txt": data, "/other.txt": other });
    const svc = await service();
    const first = await svc.create({ url: o.url("/d.txt") });
    const st = await svc.waitFor(first);
    // an unrelated torrent, deleted with `first`: once the node has dropped it, a seeding reconcile
    // has run that already saw `first` deleted
    const marker = await svc.waitFor(await svc.create({ url: o.url("/other.txt") }));
    expect(marker.status).toBe("ready");
    const unseeded = (infohash: unknown) => (l: Record<string, unknown>) =>
      l.unseeded === true && l.infohash === infohash;
    const second = await svc.create({ url: o.url("/d.txt") }); // answered from the ready result
    expect((await svc.status(second)).status).toBe("ready");
    // `second`'s own web seed URL (its passkey): it works while `second` is live.
    const webseed = `${await svc.webSeed(second)}d.txt`;
    expect((await fetch(webseed, { headers: { range: "bytes=0-9" } })).status).toBe(206);

    await svc.api(`/v1/requests/${first}`, { method: "DELETE" });
    await svc.api(`/v1/requests/${marker.id}`, { method: "DELETE" });
    await svc.waitForLog(unseeded(marker.infohash), "the node to stop seeding the unrelated torrent", 10_000);
    expect(svc.logs().filter(unseeded(st.infohash))).toEqual([]);
    expect((await fetch(webseed, { headers: { range: "bytes=0-9" } })).status).toBe(206); // `second` still needs it
    expect((await svc.status(second)).status).toBe("ready");

    await svc.api(`/v1/requests/${second}`, { method: "DELETE" });
    const deadline = Date.now() + 10_000;
    let status = 206;
    while (status !== 404 && Date.now() < deadline) {
      status = (await fetch(webseed, { headers: { range: "bytes=0-9" } })).status;
      if (status !== 404) await Bun.sleep(100);
    }
    expect(status).toBe(404);
    // the web seed refuses at once; the swarm then finishes removing the torrent and says so
    await svc.waitForLog(
      unseeded(st.infohash),
      "the node to stop seeding it",
      Math.max(0, deadline - Date.now()),
    );
    expect((await svc.api(`/v1/requests/${second}/torrent`)).status).toBe(400);
  });
});

describe("through a SOCKS5 proxy", () => {
  test("every fetch crosses the proxy; a wrong password fails closed and the origin sees nothing", async () => {
    const data = bytesRoute({ size: 200_000, seed: 53, contentType: "text/plain" });
    const o = await origin({ "/p.txt": data, "/never.txt": data });
    const socks = await startMicrosocks({ user: "alice", password: "s3cret" });
    cleanups.push(() => socks.stop());

    const good = await service({ PROXY__PROXY_URL: socks.url("socks5") });
    const id = await good.create({ url: o.url("/p.txt") });
    const st = await good.waitFor(id);
    expect(st.status).toBe("ready");
    expect(st.content_hash).toBe(data.body.sha256());
    // microsocks opened the origin connection (it logs each one it makes)
    expect(socks.connectedTo(o.port)).toBe(1);

    const bad = await service({
      PROXY__PROXY_URL: `socks5://alice:wrong@127.0.0.1:${socks.port}`,
      FETCHER__MAX_ATTEMPTS: "1",
    });
    const failed = await bad.waitFor(await bad.create({ url: o.url("/never.txt") }));
    expect(failed.status).toBe("error");
    expect(failed.error_message).toBe("The proxy rejected our credentials");
    expect(failed.error_message).not.toContain("wrong");
    expect(o.count("/never.txt")).toBe(0);
    expect(bad.output).not.toContain("wrong@");
  });
});
