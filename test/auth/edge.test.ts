/**
 * The same auth under the real workerd runtime (the Worker from edge/worker.ts under `wrangler dev`,
 * over a libSQL file served by the dev Hrana server): signed requests with their nonce memory, JWTs
 * through jose, and rate limits shared between the Worker and a Bun API process on one database.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SignJWT } from "jose";
import { type EdgeDev, freePort, startEdgeDev } from "../../seeder/dev/hrana/dev-edge";
import { openDatabase } from "../../seeder/process/database";
import { createApiKey } from "../../src/auth/keys";
import { signatureHeaders } from "../../src/auth/sign";
import { loadConfig } from "../../src/config";
import { testApp } from "../support/app";
import { bearer, createBody, T0 } from "./helpers";

// bun 1.4 ignores bunfig.toml's [test] timeout; wrangler dev starts workerd.
setDefaultTimeout(120_000);

const JWT_SECRET = "edge-jwt-secret-0123456789abcdef-0123";
const ISS = "https://issuer.edge.test/";
const settings = {
  SECURITY__JWT_SECRET: JWT_SECRET,
  SECURITY__JWT_ISSUER: ISS,
  SECURITY__JWT_AUDIENCE: "pt",
  RATE_LIMIT__REQUESTS_PER_HOUR: "4",
  RATE_LIMIT__REQUESTS_PER_MINUTE: "1000",
  RATE_LIMIT__REQUESTS_PER_IP_MINUTE: "1000",
  MONITORING__LOG_LEVEL: "WARNING",
};
const dir = mkdtempSync(join(tmpdir(), "pt-edge-auth-"));
const databaseUrl = `file:${join(dir, "edge.db")}`;
let dev: EdgeDev | undefined;
let local: Awaited<ReturnType<typeof openDatabase>>;

beforeAll(async () => {
  dev = await startEdgeDev({
    databaseUrl,
    port: await freePort(),
    workerEnv: settings,
    stdio: "pipe",
    // edge/worker.ts itself, except that a request may name the time its clock reads
    main: join(import.meta.dir, "fixtures", "clock-worker.ts"),
  });
  local = await openDatabase(loadConfig({ ...settings, DATABASE__DATABASE_URL: databaseUrl }));
});

afterAll(async () => {
  local?.client.close();
  await dev?.stop();
  rmSync(dir, { recursive: true, force: true });
}, 30_000);

const newKey = async (name: string) => (await createApiKey(local.db, { name, now: Date.now() })).key;

async function signedFetch(key: string, method: string, path: string, body?: string) {
  const url = `${dev!.url}${path}`;
  const headers = await signatureHeaders(key, { method, url, body });
  if (body) headers["content-type"] = "application/json";
  const init = { method, headers, body };
  return { res: await fetch(url, init), url, init };
}

describe("auth under workerd", () => {
  test("a signed request is accepted once; its replay and a tampered path are refused", async () => {
    const key = await newKey("edge");
    const first = await signedFetch(
      key,
      "POST",
      "/v1/requests",
      createBody("http://example.test/edge-signed"),
    );
    expect(first.res.status).toBe(201);
    const { id } = (await first.res.json()) as { id: string };
    const replay = await fetch(first.url, first.init);
    expect(replay.status).toBe(401);
    expect(await replay.json()).toEqual({
      detail: "Invalid signature: nonce already used (replayed request)",
    });
    const read = await signedFetch(key, "GET", `/v1/requests/${id}`);
    expect(read.res.status).toBe(200);
    const moved = await fetch(`${dev!.url}/v1/requests/${id}/magnet`, { headers: read.init.headers });
    expect(moved.status).toBe(401);
  });

  test("JWTs are verified with pinned algorithms; expired and alg none are refused", async () => {
    const now = Math.floor(Date.now() / 1000);
    const token = (exp: number) =>
      new SignJWT({})
        .setProtectedHeader({ alg: "HS256" })
        .setIssuer(ISS)
        .setAudience("pt")
        .setSubject("edge-user")
        .setExpirationTime(exp)
        .sign(new TextEncoder().encode(JWT_SECRET));
    const post = (t: string) =>
      fetch(
        `${dev!.url}/v1/requests`,
        bearer(t, { method: "POST", body: createBody("http://example.test/jwt") }),
      );
    expect((await post(await token(now + 600))).status).toBe(201);
    expect((await post(await token(now - 600))).status).toBe(401);
    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");
    const none = `${b64({ alg: "none" })}.${b64({ iss: ISS, aud: "pt", sub: "edge-user", exp: now + 600 })}.`;
    expect((await post(none)).status).toBe(401);
  });

  test("the Worker and a Bun API process share one tenant's hourly limit", async () => {
    // Both read the same injected time (an hour plus one second), so the few requests below stay
    // inside one hour window whatever the wall clock says.
    const key = await newKey("shared");
    const bunApp = testApp({
      db: local.db,
      config: loadConfig({ ...settings, DATABASE__DATABASE_URL: databaseUrl }),
      clock: { now: () => T0 },
    });
    const viaWorker = () =>
      fetch(
        `${dev!.url}/v1/requests`,
        bearer(key, {
          method: "POST",
          body: createBody("http://example.test/w"),
          headers: { "x-test-now": String(T0) },
        }),
      );
    const viaBun = () =>
      bunApp.request("http://localhost/v1/requests", bearer(key, { method: "POST", body: createBody() }));
    const statuses = [
      (await viaWorker()).status,
      (await viaBun()).status,
      (await viaWorker()).status,
      (await viaBun()).status,
    ];
    expect(statuses).toEqual([201, 201, 201, 201]);
    const refusedAtEdge = await viaWorker();
    expect(refusedAtEdge.status).toBe(429);
    expect(await refusedAtEdge.json()).toEqual({ detail: "Rate limit exceeded: too many requests per hour" });
    expect(refusedAtEdge.headers.get("retry-after")).toMatch(/^\d+$/);
    expect((await viaBun()).status).toBe(429);
  });
});
