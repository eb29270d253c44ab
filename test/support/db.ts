/** A real libSQL database file with migrations applied, in a fresh temp directory. */
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openDatabase, runMigrations } from "../../seeder/process/database";
import { type Config, type Env, loadConfig } from "../../src/config";
import type { NewRequest } from "../../src/requests/service";

export async function tempDatabase(env: Env = {}) {
  const dir = await mkdtemp(join(tmpdir(), "pt-db-"));
  const config: Config = loadConfig({ STORAGE__BASE_PATH: dir, ...env });
  const { client, db } = await openDatabase(config);
  await runMigrations(db);
  return { dir, config, client, db, url: config.database.url };
}

/** A clock the test moves by hand. */
export function manualClock(start = Date.UTC(2026, 0, 1)) {
  let t = start;
  return {
    now: () => t,
    advance(ms: number) {
      t += ms;
    },
  };
}

/** A createRequest input with the dull fields filled (GET, no headers or body, ttl 0, 3 attempts). */
export function requestInput(over: Partial<NewRequest> & Pick<NewRequest, "url">): NewRequest {
  return {
    method: "GET",
    headers: null,
    body: null,
    ttl: 0,
    userId: "tenant-a",
    clientIp: null,
    requestId: null,
    maxAttempts: 3,
    ...over,
  };
}
