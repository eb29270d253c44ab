/**
 * SECURITY__KEY_ENCRYPTION_SECRET: the stored hash of an API key (the HMAC key of its signed
 * requests) is sealed with a server-side secret, so a copy of the database alone neither signs nor
 * authenticates; keys stored in clear before the secret was set are sealed at start-up and keep
 * working.
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { eq } from "drizzle-orm";
import type { createApp } from "../../src/api/app";
import { sha256Hex } from "../../src/auth/crypto";
import { createApiKey, signingKey, verifyApiKey } from "../../src/auth/keys";
import { signatureHeaders } from "../../src/auth/sign";
import { loadConfig } from "../../src/config";
import { apiKeys } from "../../src/db/schema";
import { testApp } from "../support/app";
import { tempDatabase } from "../support/db";
import { CLI, Service } from "../support/service";
import { BASE, bearer } from "./helpers";

setDefaultTimeout(60_000);

const SECRET = "k".repeat(16) + "e".repeat(16);
const services: Service[] = [];
afterAll(async () => {
  for (const s of services) await s.stop();
});

async function stored(db: Awaited<ReturnType<typeof tempDatabase>>["db"], id: string) {
  return (await db.select().from(apiKeys).where(eq(apiKeys.id, id)))[0]!.hash;
}

function appOver(t: Awaited<ReturnType<typeof tempDatabase>>, secret?: string) {
  const config = loadConfig({
    STORAGE__BASE_PATH: t.dir,
    ...(secret ? { SECURITY__KEY_ENCRYPTION_SECRET: secret } : {}),
  });
  return testApp({
    db: t.db,
    config,
  });
}

async function signedGet(app: ReturnType<typeof createApp>, key: string) {
  const url = `${BASE}/v1/requests/00000000-0000-0000-0000-000000000000`;
  return app.request(url, { headers: await signatureHeaders(key, { method: "GET", url }) });
}

describe("sealed API key hashes", () => {
  test("with the secret, the database holds no usable hash: without the secret a copy of it neither signs nor authenticates", async () => {
    const t = await tempDatabase({ SECURITY__KEY_ENCRYPTION_SECRET: SECRET });
    const made = await createApiKey(t.db, { name: "sealed", now: Date.now(), secret: SECRET });
    const hash = await stored(t.db, made.id);
    expect(hash.startsWith("aes256gcm:")).toBe(true);
    expect(hash).not.toContain(await sha256Hex(made.key));

    // The service, with the secret: bearer and signed requests work (404: authenticated, no such request).
    const app = appOver(t, SECRET);
    expect((await app.request(`${BASE}/v1/requests/x`, bearer(made.key))).status).toBe(404);
    expect((await signedGet(app, made.key)).status).toBe(404);

    // Someone with the database but not the secret: no HMAC key, no authentication.
    expect(await signingKey(t.db, made.id)).toBeNull();
    expect(await signingKey(t.db, made.id, "another secret of at least 32 chars!")).toBeNull();
    expect(await verifyApiKey(t.db, made.key, Date.now())).toBeNull();
    expect((await signedGet(appOver(t), made.key)).status).toBe(401);
    t.client.close();
  });

  test("a sealed value copied onto another key's row does not open", async () => {
    const t = await tempDatabase();
    const a = await createApiKey(t.db, { name: "a", now: Date.now(), secret: SECRET });
    const b = await createApiKey(t.db, { name: "b", now: Date.now(), secret: SECRET });
    await t.db
      .update(apiKeys)
      .set({ hash: await stored(t.db, a.id) })
      .where(eq(apiKeys.id, b.id));
    expect(await signingKey(t.db, b.id, SECRET)).toBeNull();
    t.client.close();
  });

  test("a secret shorter than 32 characters is a configuration error", () => {
    expect(() => loadConfig({ SECURITY__KEY_ENCRYPTION_SECRET: "short" })).toThrow(
      /SECURITY__KEY_ENCRYPTION_SECRET: must be at least 32 characters/,
    );
  });

  test("a key stored in clear before the secret was set is sealed when the service starts, and keeps working", async () => {
    const t = await tempDatabase();
    const old = await createApiKey(t.db, { name: "old", now: Date.now() });
    expect(await stored(t.db, old.id)).toBe(await sha256Hex(old.key));
    t.client.close();

    const svc = await Service.start({ basePath: t.dir, env: { SECURITY__KEY_ENCRYPTION_SECRET: SECRET } });
    services.push(svc);
    expect(svc.logs().find((l) => "keys" in l)?.keys).toBe(1); // sealed at start-up
    const res = await fetch(`${svc.url}/v1/requests/x`, { headers: { authorization: `Bearer ${old.key}` } });
    expect(res.status).toBe(404);
    const reopened = await tempDatabase({ STORAGE__BASE_PATH: t.dir });
    const hash = await stored(reopened.db, old.id);
    expect(hash.startsWith("aes256gcm:")).toBe(true);
    expect(await signingKey(reopened.db, old.id)).toBeNull();
    reopened.client.close();
  });

  test("`keys create` with the secret stores the new key sealed", async () => {
    const t = await tempDatabase();
    const p = Bun.spawn([CLI, "keys", "create", "--name", "cli", "--json"], {
      env: {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        STORAGE__BASE_PATH: t.dir,
        SECURITY__KEY_ENCRYPTION_SECRET: SECRET,
      },
      stdout: "pipe",
    });
    const made = JSON.parse(await new Response(p.stdout).text()) as { id: string; key: string };
    expect(await p.exited).toBe(0);
    expect((await stored(t.db, made.id)).startsWith("aes256gcm:")).toBe(true);
    expect((await verifyApiKey(t.db, made.key, Date.now(), SECRET))?.id).toBe(made.id);
    t.client.close();
  });
});
