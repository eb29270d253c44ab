/**
 * Partial bodies belong to their job, through the real service: the temp file is named after the
 * job, survives a SIGKILL, and the restarted node continues the fetch from the bytes already on
 * disk (Range + If-Range, the origin's request log shows it) to the right sha256. When the job
 * ends, its partial body goes: cancelled mid-body, or ended while the node was down (found at
 * start-up).
 */
import { describe, expect, test } from "bun:test";
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { createClient } from "@libsql/client";
import { ContentStore } from "../../seeder/node/cas";
import { bytesRoute } from "../support/origin";
import { until } from "../support/poll";
import { testScope } from "../support/scope";
import type { Service } from "../support/service";

const { origin, service } = testScope({ env: { NODE__LEASE_SECONDS: "5" } });

const tmpFiles = async (svc: Service) => (await readdir(join(svc.basePath, "tmp")).catch(() => [])).sort();
const UUID_PART = /^[0-9a-f-]{36}\.part$/;

/** The one partial body in the node's temp folder, once it holds more than `min` bytes. */
async function partialBody(svc: Service, min: number): Promise<string> {
  let name = "";
  await until(
    async () => {
      name = (await tmpFiles(svc)).find((f) => f.endsWith(".part")) ?? "";
      return (
        name !== "" && (await stat(join(svc.basePath, "tmp", name)).catch(() => ({ size: 0 }))).size > min
      );
    },
    `a partial body of more than ${min} bytes`,
    20_000,
  );
  return name;
}

/** A slow body with range support: about 4 MiB at 64 KiB per 40 ms (a few seconds). */
const slowBody = (seed: number) =>
  bytesRoute({ size: 4 * 1024 * 1024, seed, contentType: "text/plain", ranges: true, chunkDelayMs: 40 });

describe("a partial body across a SIGKILL", () => {
  test("the restarted node asks for the rest from the offset already on disk, and the sha256 is right", async () => {
    const body = slowBody(81);
    const o = await origin({ "/slow.txt": body });
    const svc = await service();
    const id = await svc.create({ url: o.url("/slow.txt") });
    const name = await partialBody(svc, 256 * 1024);
    await svc.kill("SIGKILL");
    // Named after its job, with what it takes to ask for the rest next to it.
    expect(name).toMatch(UUID_PART);
    expect(await tmpFiles(svc)).toEqual([name.replace(/\.part$/, ".json"), name]);
    const onDisk = (await stat(join(svc.basePath, "tmp", name))).size;
    expect(onDisk).toBeGreaterThan(256 * 1024);
    expect(onDisk).toBeLessThan(body.body.size);

    await svc.launch();
    const st = await svc.waitFor(id, ["ready", "error", "cancelled"], 60_000);
    expect(st.status).toBe("ready");
    expect(st.content_hash).toBe(body.body.sha256());
    expect(await new ContentStore(svc.basePath).verify(body.body.sha256())).toBe(true);

    const asked = o.requests.filter((r) => r.path === "/slow.txt");
    expect(asked.length).toBe(2);
    expect(asked[0]!.headers.range).toBeUndefined();
    expect(asked[1]!.headers.range).toBe(`bytes=${onDisk}-`);
    expect(asked[1]!.headers["if-range"]).toBe(`"pb-81-${body.body.size}"`);
    expect(await tmpFiles(svc)).toEqual([]);
  });
});

describe("a partial body goes when its job ends", () => {
  test("cancelled mid-body: the temp file is removed", async () => {
    const o = await origin({ "/slow.txt": slowBody(82) });
    const svc = await service();
    const id = await svc.create({ url: o.url("/slow.txt") });
    await partialBody(svc, 64 * 1024);
    expect((await svc.api(`/v1/requests/${id}`, { method: "DELETE" })).status).toBeLessThan(300);
    expect((await svc.waitFor(id, ["cancelled"], 20_000)).status).toBe("cancelled");
    await until(async () => (await tmpFiles(svc)).length === 0, "the partial body removed", 20_000);
  });

  test("ended while the node was down: the start-up cleanup finds no active job for it and removes it", async () => {
    const o = await origin({ "/slow.txt": slowBody(83) });
    const svc = await service();
    const id = await svc.create({ url: o.url("/slow.txt") });
    await partialBody(svc, 64 * 1024);
    await svc.kill("SIGKILL");
    expect((await tmpFiles(svc)).length).toBe(2);
    // Another process ends the job meanwhile (here: the database, as an operator could).
    const db = createClient({ url: `file:${join(svc.basePath, "proxytorrent.db")}` });
    await db.execute({
      sql: "UPDATE fetch_jobs SET status = 'error', error_code = 'gone', lease_token = NULL WHERE id = (SELECT job_id FROM fetch_requests WHERE id = ?)",
      args: [id],
    });
    db.close();
    await svc.launch();
    expect(await tmpFiles(svc)).toEqual([]);
    expect(o.count("/slow.txt")).toBe(1);
  });
});
