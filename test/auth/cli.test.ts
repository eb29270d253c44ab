/**
 * `proxytorrent keys create|list|revoke` through the real command line, against a database in a
 * temp directory; the key it prints works against the API at once, and stops working when revoked.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { openDatabase } from "../../seeder/process/database";
import type { createApp } from "../../src/api/app";
import { signatureHeaders } from "../../src/auth/sign";
import { loadConfig } from "../../src/config";
import { testApp } from "../support/app";
import { runToEnd } from "../support/run";
import { BASE, bearer, createBody } from "./helpers";

// bun 1.4 ignores bunfig.toml's [test] timeout; each test spawns the CLI a few times.
setDefaultTimeout(60_000);

const BIN = resolve(import.meta.dir, "../../bin/proxytorrent");
let dir: string;

async function cli(...args: string[]) {
  return cliWith({}, ...args);
}

async function cliWith(env: Record<string, string>, ...args: string[]) {
  const { stdout, stderr, code } = await runToEnd([BIN, "keys", ...args], {
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir, STORAGE__BASE_PATH: dir, ...env },
  });
  return { stdout, stderr, code };
}

let api: { app: ReturnType<typeof createApp>; close(): void };

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "pt-cli-"));
});

async function openApi() {
  // No key cache: "revoke" below checks the next request (the cache's bound: key-cache.test.ts).
  const config = loadConfig({ STORAGE__BASE_PATH: dir, SECURITY__API_KEY_CACHE_SECONDS: "0" });
  const { client, db } = await openDatabase(config);
  const app = testApp({
    db,
    config,
  });
  return { app, close: () => client.close() };
}
afterAll(() => api?.close());

describe("proxytorrent keys", () => {
  let created: { id: string; key: string; name: string; scopes: string[] };

  test("create --json prints id, key, name and scopes once, on a database that did not exist", async () => {
    const r = await cli("create", "--name", "ci", "--json");
    expect(r.code).toBe(0);
    created = JSON.parse(r.stdout);
    expect(created.id).toMatch(/^[0-9a-f]{16}$/);
    expect(created.key).toMatch(new RegExp(`^pt_${created.id}_[0-9a-f]{64}$`));
    expect(created.name).toBe("ci");
    expect(created.scopes).toEqual(["requests:create", "requests:read", "requests:cancel"]);
  });

  test("the key works against the API as a bearer token and for signing", async () => {
    api = await openApi();
    const res = await api.app.request(
      `${BASE}/v1/requests`,
      bearer(created.key, { method: "POST", body: createBody() }),
    );
    expect(res.status).toBe(201);
    const { id } = (await res.json()) as { id: string };
    const url = `${BASE}/v1/requests/${id}`;
    const signed = await api.app.request(url, {
      headers: await signatureHeaders(created.key, { method: "GET", url }),
    });
    expect(signed.status).toBe(200);
  });

  test("list shows the key's id, name, scopes and last use, never the key or its hash", async () => {
    const r = await cli("list", "--json");
    expect(r.code).toBe(0);
    const rows = JSON.parse(r.stdout) as Record<string, unknown>[];
    expect(rows).toHaveLength(1);
    expect(rows[0]!.id).toBe(created.id);
    expect(rows[0]!.name).toBe("ci");
    expect(rows[0]!.last_used_at).not.toBeNull();
    expect(r.stdout).not.toContain(created.key.slice(20));
    expect(Object.keys(rows[0]!)).not.toContain("hash");
    const human = await cli("list");
    expect(human.stdout).toContain(created.id);
    expect(human.stdout).toContain("requests:create,requests:read,requests:cancel");
  });

  test("create without --json prints the key and how to use it; --scopes is checked", async () => {
    const r = await cli("create", "--name", "admin key", "--scopes", "admin");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/pt_[0-9a-f]{16}_[0-9a-f]{64}/);
    expect(r.stdout).toContain("Authorization: Bearer");
    const bad = await cli("create", "--name", "x", "--scopes", "requests:create,everything");
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("unknown scope everything");
    expect((await cli("create")).code).not.toBe(0);
  });

  test("the curl example names the configured HOST and PORT (or NODE__PUBLIC_URL) and API prefix", async () => {
    const r = await cliWith({ HOST: "127.0.0.2", PORT: "9123" }, "create", "--name", "port");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(
      /curl -H "Authorization: Bearer pt_\S+" http:\/\/127\.0\.0\.2:9123\/v1\/requests\/<id>/,
    );
    const pub = await cliWith(
      { PORT: "9123", NODE__PUBLIC_URL: "https://pt.example.test", API_PREFIX: "/api" },
      "create",
      "--name",
      "public",
    );
    expect(pub.stdout).toContain(" https://pt.example.test/api/requests/<id>");
    expect(pub.stdout).not.toContain(":8000");
  });

  test("revoke makes the key fail at once; revoking an unknown id exits 1", async () => {
    const r = await cli("revoke", created.id);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Revoked key ${created.id}`);
    const res = await api.app.request(`${BASE}/v1/requests/x`, bearer(created.key));
    expect(res.status).toBe(401);
    expect((await cli("revoke", created.id)).stdout).toContain("already revoked");
    const missing = await cli("revoke", "0000000000000000");
    expect(missing.code).toBe(1);
    const list = JSON.parse((await cli("list", "--json")).stdout) as { id: string }[];
    expect(list.map((k) => k.id)).not.toContain(created.id);
    const all = JSON.parse((await cli("list", "--all", "--json")).stdout) as {
      id: string;
      revoked_at: string;
    }[];
    expect(all.find((k) => k.id === created.id)!.revoked_at).not.toBeNull();
  });
});
