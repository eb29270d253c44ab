/**
 * The Cloudflare Worker entry: the same Hono app as the Bun API (`src/api/app.ts`), over a libSQL
 * database reached by HTTP (Turso, a self-hosted sqld, or locally the dev Hrana server that
 * `npm run dev:edge` starts). The API never talks to a seeder node: they meet in the database.
 *
 * Configuration comes from the Worker's bindings ([vars] in wrangler.toml plus secrets), read by the
 * same `loadConfig` as everywhere else, so the variable names are the original's `GROUP__FIELD`.
 * The app, its database client and its config are built on the first request an isolate serves and
 * reused while the bindings stay the same.
 *
 * Nothing here may import `node:*` or a native module: wrangler bundles it for workerd.
 */
import { type Client, createClient } from "@libsql/client/web";
import type { ExecutionContext } from "hono";
// package.json "imports": edge/docs-assets.ts under wrangler ("workerd" condition), the Bun
// version when tests load this file under Bun.
import { docsAssets } from "#docs-assets";
import { type App, createApp } from "../src/api/app";
import { type Clock, systemClock } from "../src/clock";
import {
  type Config,
  ConfigError,
  type Env,
  loadConfig,
  unknownSettingMessage,
  unknownSettings,
} from "../src/config";
import { createDatabase } from "../src/db";
import { createLogger, type Logger } from "../src/log";
import { liveNodesCheck } from "../src/nodes/registry";

/** The bindings the Worker reads: every `GROUP__FIELD` setting, as a var or a secret. */
export type EdgeEnv = Record<string, unknown>;

/** A database URL a Worker cannot use (a file, a WebSocket URL): the message says what to do. */
export class EdgeDatabaseUrlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "EdgeDatabaseUrlError";
  }
}

export interface EdgeApp {
  app: App;
  config: Config;
  client: Client;
  log: Logger;
}

/** String bindings only: [vars] may hold JSON values and other bindings (KV, …) are objects. */
export function envFromBindings(bindings: EdgeEnv): Env {
  const env: Env = {};
  for (const [name, value] of Object.entries(bindings ?? {})) {
    if (typeof value === "string") env[name] = value;
    else if (typeof value === "number" || typeof value === "boolean") env[name] = String(value);
  }
  return env;
}

/**
 * The database URL as the Worker must see it: `libsql://` (Turso), `https://` or `http://`. A
 * `file:` URL (also the default when DATABASE__DATABASE_URL is unset) is refused with a message
 * naming the variable, because a Worker has no file system.
 */
export function edgeDatabaseUrl(env: Env, config: Config): string {
  const raw = env.DATABASE__DATABASE_URL?.trim();
  const url = config.database.url;
  if (!raw) {
    throw new EdgeDatabaseUrlError(
      "DATABASE__DATABASE_URL is not set. On Cloudflare Workers it must name a libSQL server reached over " +
        "HTTP: a Turso database (libsql://<db>-<org>.turso.io, with DATABASE__AUTH_TOKEN) or a self-hosted " +
        "sqld (https://…). Set it with `wrangler secret put DATABASE__DATABASE_URL`; locally " +
        "`npm run dev:edge` sets it for you.",
    );
  }
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase();
  if (scheme === "file" || scheme === undefined) {
    throw new EdgeDatabaseUrlError(
      `DATABASE__DATABASE_URL is a local file (${url.split("?")[0]}), which a Worker cannot open: Workers ` +
        "have no file system. Use a libSQL server over HTTP (Turso libsql://…, or sqld https://…). " +
        "To run the Worker locally against a file, use `npm run dev:edge`, which serves the file over " +
        "HTTP for the Worker.",
    );
  }
  if (scheme !== "libsql" && scheme !== "https" && scheme !== "http") {
    throw new EdgeDatabaseUrlError(
      `DATABASE__DATABASE_URL has the scheme "${scheme}:", but the Worker talks to libSQL over HTTP only: ` +
        "use libsql://, https:// or http://.",
    );
  }
  return url;
}

/** Build the app for one set of bindings (exported for tests; the fetch handler caches it). */
export function buildEdgeApp(bindings: EdgeEnv, opts: { log?: Logger; clock?: Clock } = {}): EdgeApp {
  const clock = opts.clock ?? systemClock;
  const env = envFromBindings(bindings);
  const config = loadConfig(env);
  const log =
    opts.log ?? createLogger({ level: config.monitoring.logLevel, json: config.monitoring.jsonLogs });
  for (const u of unknownSettings(env))
    log.warn(unknownSettingMessage(u), { variable: u.variable, suggestion: u.suggestion });
  const url = edgeDatabaseUrl(env, config);
  // No client-side queue: the client's default limit (20) would start a queued query from inside
  // another request's promise continuation, and workerd ties I/O to the request that started it.
  const client = createClient({ url, authToken: config.database.authToken, concurrency: 10_000 });
  const db = createDatabase(client, { logSql: config.database.echoSql });
  const app = createApp({
    db,
    config,
    clock,
    log,
    runtime: "workerd",
    docsAssets,
    // Date.now() is only meaningful inside a request on Workers; this runs on the first one.
    startedAt: clock.now(),
    clientIp: (req) => req.headers.get("CF-Connecting-IP"),
    healthChecks: [liveNodesCheck(db, clock)],
  });
  return { app, config, client, log };
}

// ---- per-isolate cache ----

interface Cached {
  bindings: EdgeEnv;
  key: string;
  built: EdgeApp;
}
let cached: Cached | undefined;

/** A stable fingerprint of the string bindings: the same settings give the same app. */
function bindingsKey(env: Env): string {
  return JSON.stringify(Object.entries(env).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** The app for these bindings, built once per isolate (rebuilt if the bindings change). */
export function edgeAppFor(bindings: EdgeEnv): EdgeApp {
  if (cached && cached.bindings === bindings) return cached.built;
  const key = bindingsKey(envFromBindings(bindings));
  if (cached && cached.key === key) {
    cached.bindings = bindings;
    return cached.built;
  }
  // The previous client is not closed: requests still running may be using it (it holds no
  // sockets of its own; every query is a plain fetch).
  const built = buildEdgeApp(bindings);
  cached = { bindings, key, built };
  return built;
}

/** Configuration problems: one log line naming the variables, and a 500 that reveals no values. */
function misconfigured(err: Error): Response {
  const variables = err instanceof ConfigError ? err.problems.map((p) => p.variable) : undefined;
  console.error(
    JSON.stringify({
      time: new Date().toISOString(),
      level: "ERROR",
      msg: "worker misconfigured",
      error: err.message,
      variables,
    }),
  );
  return new Response(JSON.stringify({ detail: "Service misconfigured; see the Worker's logs." }), {
    status: 500,
    headers: { "content-type": "application/json" },
  });
}

export default {
  async fetch(request: Request, env: EdgeEnv, ctx: ExecutionContext): Promise<Response> {
    let built: EdgeApp;
    try {
      built = edgeAppFor(env);
    } catch (e) {
      if (e instanceof ConfigError || e instanceof EdgeDatabaseUrlError) return misconfigured(e);
      throw e;
    }
    return built.app.fetch(request, env, ctx);
  },
};
