/** The API in-process over a real libSQL file, with a clock and a client address the test controls. */
import { createApp } from "../../src/api/app";
import { createApiKey } from "../../src/auth/keys";
import type { Scope } from "../../src/auth/scopes";
import type { Clock } from "../../src/clock";
import type { Env } from "../../src/config";
import { silentLogger } from "../../src/log";
import { manualClock, tempDatabase } from "../support/db";

/** A round minute plus one second, so minute windows do not roll over unless a test moves the clock. */
export const T0 = Date.UTC(2026, 0, 1, 12, 0, 1);

export async function authApp(env: Env = {}, opts: { clock?: Clock & { advance?(ms: number): void } } = {}) {
  const t = await tempDatabase(env);
  const clock = opts.clock ?? manualClock(T0);
  let peer: string | null = "127.0.0.1";
  const app = createApp({
    db: t.db,
    config: t.config,
    clock,
    log: silentLogger,
    runtime: "bun",
    startedAt: clock.now(),
    clientIp: () => peer,
  });
  return {
    ...t,
    app,
    clock: clock as Clock & { advance(ms: number): void },
    setPeer(ip: string | null) {
      peer = ip;
    },
    async key(name = "k", scopes?: Scope[], tenant?: string) {
      return createApiKey(t.db, { name, scopes, tenant, now: clock.now() });
    },
    close: () => t.client.close(),
  };
}

export type AuthApp = Awaited<ReturnType<typeof authApp>>;

export const BASE = "http://localhost";

export const bearer = (token: string, init: RequestInit = {}): RequestInit => {
  const headers = new Headers(init.headers);
  headers.set("authorization", `Bearer ${token}`);
  if (init.body) headers.set("content-type", "application/json");
  return { ...init, headers };
};

export const createBody = (url = "http://example.test/page") => JSON.stringify({ url });
