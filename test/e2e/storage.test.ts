/**
 * The storage folder belongs to one running process and to its user alone: files 0600 and folders
 * 0700 after a real start and a real fetch, an existing group/world-readable folder is tightened,
 * a second node process on the same folder is refused (naming the folder and the holder's pid),
 * the lock goes with a SIGKILLed holder, and node names are unique among live nodes.
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { chmod, readdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { freePort, tmpDir } from "../support/clients";
import { bytesRoute, type Origin, startOrigin } from "../support/origin";
import { Service } from "../support/service";

setDefaultTimeout(120_000);

const origins: Origin[] = [];
const services: Service[] = [];
afterAll(async () => {
  for (const s of services) await s.stop();
  for (const o of origins) await o.close();
});

async function started(opts: Parameters<typeof Service.start>[0]): Promise<Service> {
  const s = await Service.start(opts);
  services.push(s);
  return s;
}

/** Start a service that must refuse to run; returns what it printed. */
async function refused(opts: Parameters<typeof Service.start>[0]): Promise<string> {
  try {
    services.push(await Service.start(opts));
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error("the service started, but should have refused");
}

const mode = async (path: string) => ((await stat(path)).mode & 0o777).toString(8);

/** Every file and folder under `dir` with its mode, relative names. */
async function modes(dir: string, prefix = ""): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const rel = prefix + e.name;
    out[rel] = await mode(join(dir, e.name));
    if (e.isDirectory()) Object.assign(out, await modes(join(dir, e.name), `${rel}/`));
  }
  return out;
}

describe("file modes", () => {
  test("after a start and a fetch: the folder and every folder in it 0700, the database, its WAL and SHM, blobs and the lock 0600", async () => {
    const data = bytesRoute({ size: 300_000, seed: 41, contentType: "text/plain" });
    const origin = await startOrigin({ "/d.txt": data });
    origins.push(origin);
    const base = join(await tmpDir("pt-modes-"), "data"); // created by the service
    const svc = await started({ basePath: base });
    const id = await svc.create({ url: origin.url("/d.txt") });
    expect((await svc.waitFor(id)).status).toBe("ready");

    expect(await mode(base)).toBe("700");
    const all = await modes(base);
    const blob = `cas/sha256/${data.body.sha256().slice(0, 2)}/${data.body.sha256().slice(2, 4)}/${data.body.sha256()}`;
    for (const f of [
      "proxytorrent.db",
      "proxytorrent.db-wal",
      "proxytorrent.db-shm",
      "proxytorrent.lock",
      blob,
    ])
      expect({ f, mode: all[f] }).toEqual({ f, mode: "600" });
    for (const [path, m] of Object.entries(all)) {
      const isDir = (await stat(join(base, path))).isDirectory();
      expect({ path, mode: m }).toEqual({ path, mode: isDir ? "700" : "600" });
    }
  });

  test("an existing folder readable by others (0755) is made 0700 at start, with a warning", async () => {
    const base = await tmpDir("pt-modes-open-");
    await chmod(base, 0o755);
    await writeFile(join(base, "left-by-an-old-version.txt"), "x", { mode: 0o644 });
    const svc = await started({ basePath: base });
    expect(await mode(base)).toBe("700");
    // the warning names the folder and its old mode
    expect(svc.logs().some((l) => l.level === "WARNING" && l.path === base && l.was === "0755")).toBe(true);
  });

  test("a database file outside the storage folder that others may read (0644) is made 0600 at start", async () => {
    const dir = await tmpDir("pt-modes-db-");
    const file = join(dir, "elsewhere.db");
    await writeFile(file, "", { mode: 0o644 });
    await chmod(file, 0o644);
    const svc = await started({ command: "api", env: { DATABASE__DATABASE_URL: `file:${file}` } });
    expect(await mode(file)).toBe("600");
    expect(await mode(`${file}-wal`)).toBe("600");
    expect(svc.logs().some((l) => l.level === "WARNING" && l.path === file && l.was === "0644")).toBe(true);
  });
});

describe("one process per storage folder", () => {
  test("a second `serve` on the same folder is refused, naming the folder and the first one's pid; the first keeps working", async () => {
    const first = await started({});
    const out = await refused({ basePath: first.basePath });
    expect(out).toContain("service exited with 1");
    expect(out).toContain(`the storage folder ${first.basePath} (STORAGE__BASE_PATH) is in use`);
    expect(out).toContain(`pid ${first.proc!.pid}`);
    expect((await fetch(`${first.url}/v1/health`)).status).toBe(200);
    expect(first.output).not.toContain("stopped");
  });

  test("a `seeder` on a folder a `serve` holds is refused too", async () => {
    const first = await started({});
    const out = await refused({
      command: "seeder",
      basePath: first.basePath,
      nodeHttpPort: await freePort(),
    });
    expect(out).toContain("is in use by another ProxyTorrent process");
  });

  test("after SIGKILL the lock is gone with the process: the same node starts again at once on the same folder", async () => {
    const svc = await started({});
    await svc.kill("SIGKILL");
    // Its registry row still looks live (heartbeat < 30 s ago): this is the same node coming back.
    await svc.launch();
    const health = (await (await fetch(`${svc.url}/v1/health`)).json()) as {
      checks: Record<string, { names?: string[] }>;
    };
    expect(health.checks.nodes!.names).toEqual(["node-1"]);
  });
});

describe("node names among processes sharing a database", () => {
  test("a second live node with the same NODE__NAME is refused, naming the node and where it runs; stopping it leaves the first registered", async () => {
    const dir = await tmpDir("pt-names-");
    const databaseUrl = `file:${join(dir, "shared.db")}`;
    const env = { DATABASE__DATABASE_URL: databaseUrl, NODE__NAME: "twin" };
    const api = await started({ command: "api", env: { DATABASE__DATABASE_URL: databaseUrl } });
    const aPort = await freePort();
    await started({ command: "seeder", nodeHttpPort: aPort, env });
    const out = await refused({ command: "seeder", nodeHttpPort: await freePort(), env });
    expect(out).toContain("service exited with 1");
    expect(out).toContain(`node name \\"twin\\" is in use by another live node at http://127.0.0.1:${aPort}`);
    const names = async () =>
      (
        (await (await fetch(`${api.url}/v1/health`)).json()) as {
          checks: Record<string, { names?: string[] }>;
        }
      ).checks.nodes!.names;
    // the refused one did not mark the first one stopped
    expect(await names()).toEqual(["twin"]);

    // once the first has stopped, the name is free
    await services.find((s) => s.port !== api.port && s.env.NODE__NAME === "twin")!.stop();
    const again = await started({ command: "seeder", nodeHttpPort: await freePort(), env });
    expect(again.logs().some((l) => typeof l.reseed_ms === "number")).toBe(true); // the node started
    expect(await names()).toEqual(["twin"]);
  });
});
