/**
 * Quotas set per API key through the real command line (`keys create --max-bytes --max-active`,
 * `keys set`, back to the default), applied at once by a running API process (`proxytorrent api`),
 * which counts its refusals in /metrics.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { parsePrometheus } from "../support/prometheus";
import { runToEnd } from "../support/run";
import { CLI, Service } from "../support/service";

// bun 1.4 ignores bunfig.toml's [test] timeout; each test spawns the CLI a few times.
setDefaultTimeout(60_000);

let svc: Service;
let key: { id: string; key: string; max_bytes: number | null; max_active: number | null };

async function cli(...args: string[]) {
  return runToEnd([CLI, "keys", ...args], {
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: svc.basePath, STORAGE__BASE_PATH: svc.basePath },
  });
}

const asKey = (path: string, init: RequestInit = {}) =>
  svc.api(path, { ...init, headers: { authorization: `Bearer ${key.key}` } });
let n = 0;
const post = () =>
  asKey("/v1/requests", { method: "POST", body: JSON.stringify({ url: `http://o.test/${++n}` }) });
const usage = async () => (await (await asKey("/v1/usage")).json()) as Record<string, unknown>;

beforeAll(async () => {
  // The API alone: no node, so requests stay queued (active) for as long as the test needs. Each
  // holds FETCHER__MAX_SIZE of the bytes quota until its size is known: keep that small here.
  svc = await Service.start({ command: "api", env: { FETCHER__MAX_SIZE: "100" } });
});
afterAll(() => svc?.stop());

describe("proxytorrent keys quotas", () => {
  test("create --max-bytes --max-active: the key's POSTs are held to them", async () => {
    const r = await cli("create", "--name", "small", "--max-bytes", "1000", "--max-active", "1", "--json");
    expect(r.code).toBe(0);
    key = JSON.parse(r.stdout);
    expect(key).toMatchObject({ max_bytes: 1000, max_active: 1 });
    expect((await post()).status).toBe(201);
    const refused = await post();
    expect(refused.status).toBe(403);
    expect(await refused.json()).toEqual({
      detail: "Active request quota reached: 1 of 1 (QUOTA__MAX_ACTIVE or keys set --max-active)",
    });
    expect(await usage()).toEqual({
      tenant: `key:${key.id}`,
      active_requests: 1,
      max_active_requests: 1,
      stored_bytes: 0,
      max_stored_bytes: 1000,
    });
  });

  test("the refusal is counted in /metrics", async () => {
    const m = parsePrometheus(await (await fetch(`${svc.url}/metrics`)).text());
    const samples = [...m.values()].flatMap((f) => f.samples);
    const active = samples.find(
      (s) => s.name === "proxytorrent_quota_refusals_total" && s.labels.quota === "active",
    );
    expect(active?.value).toBe(1);
  });

  test("set changes a quota for the next POST; default goes back to QUOTA__*; 0 = unlimited", async () => {
    const raised = await cli("set", key.id, "--max-active", "2", "--json");
    expect(raised.code).toBe(0);
    expect(JSON.parse(raised.stdout)).toMatchObject({ id: key.id, max_active: 2, max_bytes: 1000 });
    expect((await post()).status).toBe(201);
    expect((await post()).status).toBe(403);

    const cleared = await cli("set", key.id, "--max-active", "default", "--max-bytes", "0");
    expect(cleared.code).toBe(0);
    expect(cleared.stdout).toContain("max bytes unlimited, max active default (QUOTA__MAX_ACTIVE)");
    expect(await usage()).toMatchObject({
      active_requests: 2,
      max_active_requests: 100,
      max_stored_bytes: null,
    });
    expect((await post()).status).toBe(201);

    const listed = JSON.parse((await cli("list", "--json")).stdout) as Record<string, unknown>[];
    expect(listed.find((k) => k.id === key.id)).toMatchObject({ max_bytes: 0, max_active: null });
    const human = (await cli("list")).stdout;
    expect(human).toContain("MAX ACTIVE");
    expect(human).toContain("default (QUOTA__MAX_ACTIVE)");
  });

  test("set refuses bad values, nothing to set, and unknown keys", async () => {
    const bad = await cli("set", key.id, "--max-active", "-1");
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--max-active must be a whole number (0 = unlimited) or "default"');
    const nothing = await cli("set", key.id);
    expect(nothing.code).toBe(2);
    expect(nothing.stderr).toContain("nothing to set");
    const missing = await cli("set", "0123456789abcdef", "--max-active", "1");
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("no key with id 0123456789abcdef");
  });
});
