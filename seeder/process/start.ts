/**
 * Wiring for the Bun processes: the embedded service (API + node in one process, the default),
 * the API alone, and a node alone. Each is a function that returns a handle with `stop()`.
 */
import { readFileSync } from "node:fs";
import type { Server } from "bun";
import { createApp } from "../../src/api/app";
import { hasActiveApiKeys, sealStoredHashes } from "../../src/auth/keys";
import { type Clock, systemClock } from "../../src/clock";
import type { Config } from "../../src/config";
import type { Database } from "../../src/db";
import { oldestQueuedAt, queueDepth } from "../../src/jobs/queue";
import { createLogger, type Logger } from "../../src/log";
import { liveNodes, liveNodesCheck } from "../../src/nodes/registry";
import { webhookBacklog } from "../../src/webhooks/outbox";
import { NodeAccess } from "../node/access";
import { ContentStore } from "../node/cas";
import { SeederNode } from "../node/daemon";
import { createFetcher } from "../node/fetcher";
import { PEER_ENTITLEMENTS_MAX, PeerEntitlements } from "../node/peer-entitlements";
import { Scanner } from "../node/scan";
import {
  lockStorageFolder,
  type StorageLock,
  secureDatabaseFile,
  secureStorageFolder,
} from "../node/storage";
import { diskSpace } from "../node/store-space";
import { Swarm } from "../node/swarm/swarm";
import { choosePieceLength } from "../node/swarm/torrent";
import { ANNOUNCE_INTERVAL_SECONDS, createTracker } from "../node/swarm/tracker";
import { startWebhookDelivery } from "../node/webhooks";
import { patchesFor, verifyLibraryPatches } from "../patches";
import { loopbackPublicUrlWarning } from "./bind-warnings";
import { openDatabase, runMigrations } from "./database";
import { docsAssets } from "./docs-assets";
import { guarded, serveOptions } from "./http-server";
import { Metrics } from "./metrics";

export interface Running {
  config: Config;
  db: Database;
  node?: SeederNode;
  servers: Server<unknown>[];
  stop(): Promise<void>;
}

export function makeLogger(config: Config): Logger {
  return createLogger({ level: config.monitoring.logLevel, json: config.monitoring.jsonLogs });
}

async function warnAboutDefaults(
  config: Config,
  db: Database,
  log: Logger,
  role: "embedded" | "api" | "seeder",
) {
  const sec = config.security;
  if (role !== "seeder" && !sec.authEnabled)
    log.warn(
      "AUTHENTICATION IS DISABLED (SECURITY__AUTH_ENABLED=false): anyone who can reach this port can use it",
    );
  if (
    role !== "seeder" &&
    sec.authEnabled &&
    sec.bearerTokens.length === 0 &&
    !sec.jwt &&
    !(await hasActiveApiKeys(db))
  )
    log.warn(
      "auth is on and no API key exists yet: run `npx proxytorrent keys create --name me` to make one (it prints the key once; send it as `Authorization: Bearer <key>`). See README, 'Authentication'.",
    );
  if (role !== "seeder" && sec.jwt)
    log.info("accepting JWTs", {
      issuer: sec.jwt.issuer,
      audience: sec.jwt.audience,
      algorithms: sec.jwt.algorithms,
      keys: sec.jwt.jwksUrl ?? "SECURITY__JWT_SECRET",
    });
  if (role !== "seeder") {
    const keys = await sealStoredHashes(db, sec.keyEncryptionSecret);
    if (keys.sealed)
      log.info("sealed stored API key hashes with SECURITY__KEY_ENCRYPTION_SECRET", { keys: keys.sealed });
    if (keys.unreadable)
      log.warn(
        `${keys.unreadable} API key(s) are sealed with a SECURITY__KEY_ENCRYPTION_SECRET other than this process's (or it is not set): they will be refused`,
      );
  }
  if (config.security.legacyBodyHmac)
    log.warn("SECURITY__LEGACY_BODY_HMAC=true: accepting the original's replayable body-only signatures");
  if (role !== "api") {
    if (config.proxy)
      log.info("fetching through proxy", {
        type: config.proxy.type,
        host: config.proxy.host,
        port: config.proxy.port,
      });
    else log.warn("no proxy configured: fetches leave directly from this machine (set PROXY__PROXY_URL)");
    if (config.egress.allowPrivateNetworks)
      log.warn("EGRESS__ALLOW_PRIVATE_NETWORKS=true: fetches may reach loopback and private networks");
    const loopbackUrl = loopbackPublicUrlWarning(config);
    if (loopbackUrl) log.warn(loopbackUrl);
  }
}

function buildMetrics(config: Config, db: Database): Metrics | null {
  if (!config.monitoring.metricsEnabled) return null;
  const m = new Metrics();
  m.sources.queueDepth = async () => (await queueDepth(db)).queued;
  m.sources.queueOldestAge = async () => {
    const at = await oldestQueuedAt(db);
    return at === null ? 0 : Math.max(0, (systemClock.now() - at) / 1000);
  };
  // Two gauges read it, collected concurrently in one scrape: they share one query.
  let backlog: Promise<{ pending: number; oldestAge: number }> | null = null;
  m.sources.webhookBacklog = () => {
    backlog ??= webhookBacklog(db)
      .then((b) => ({
        pending: b.pending,
        oldestAge: b.oldestAt === null ? 0 : Math.max(0, (systemClock.now() - b.oldestAt) / 1000),
      }))
      .finally(() => {
        backlog = null;
      });
    return backlog;
  };
  m.sources.nodesAlive = async () => (await liveNodes(db, systemClock)).length;
  return m;
}

function httpObserver(metrics: Metrics | null) {
  return metrics
    ? (i: { route: string; method: string; status: number; seconds: number }) =>
        metrics.httpDuration.observe(
          { route: i.route, method: i.method, status: String(i.status) },
          i.seconds,
        )
    : undefined;
}

function buildNode(
  config: Config,
  db: Database,
  clock: Clock,
  log: Logger,
  metrics: Metrics | null,
): SeederNode {
  const store = new ContentStore(
    config.storage.basePath,
    (size) => choosePieceLength(size, config.torrent.pieceSize),
    { maxBytes: config.storage.maxBytes, minFreeBytes: config.storage.minFreeBytes },
  );
  let node: SeederNode | null = null;
  // TORRENT__ACCESS=passkey: the BitTorrent port answers an address for a torrent only within
  // two re-announce intervals of its last announce with a live passkey (one missed re-announce
  // is forgiven), at most PEER_ENTITLEMENTS_MAX (address, torrent) pairs remembered.
  const peers =
    config.torrent.access === "passkey"
      ? new PeerEntitlements({
          windowMs: 2 * ANNOUNCE_INTERVAL_SECONDS * 1000,
          maxEntries: PEER_ENTITLEMENTS_MAX,
          now: () => clock.now(),
        })
      : undefined;
  const swarm = new Swarm(config, { peerGate: peers });
  const access = new NodeAccess({
    db,
    clock,
    nodeName: config.node.name,
    config,
    onGrant: peers && ((address, grant) => peers.grant(address, grant.infohash, grant.passkeyHash)),
  });
  const tracker = createTracker({
    isAllowed: (infohash) => node?.isSeeding(infohash) ?? false,
    authorize: (q) => access.tracker(q),
    self: () => ({ peerIdHex: swarm.peerId, ip: config.node.announceIp, port: swarm.port }),
  });
  const fetcher = createFetcher({
    config,
    store,
    limits: {
      maxResumes: config.fetcher.maxResumes,
      maxDecompressionRatio: config.fetcher.maxDecompressionRatio,
    },
    tlsCa: config.fetcher.caFile ? readFileSync(config.fetcher.caFile, "utf8") : undefined,
    onIntegrityCheck: metrics ? (kind, outcome) => metrics.integrityChecks.inc({ kind, outcome }) : undefined,
  });
  node = new SeederNode({
    config,
    db,
    clock,
    log,
    store,
    fetcher,
    swarm,
    tracker,
    access,
    peers,
    metrics: metrics ?? undefined,
    scanner: config.scan.clamd
      ? new Scanner({ config, db, clock, metrics: metrics ?? undefined }, config.scan.clamd)
      : undefined,
  });
  if (metrics) {
    metrics.sources.torrentsSeeding = () => node.seedingCount();
    metrics.sources.peerUploadBytes = () => swarm.stats().uploaded;
    metrics.sources.peers = () => swarm.stats().peers;
    metrics.sources.store = () => node.storeUsage;
    metrics.watchStoreFree(async () => (await diskSpace(store.casRoot)).free);
  }
  return node;
}

function clientAddress(server: Server<unknown>, req: Request): string {
  return server.requestIP(req)?.address ?? "unknown";
}

export async function startEmbedded(
  config: Config,
  opts: { log?: Logger; clock?: Clock } = {},
): Promise<Running> {
  const log = opts.log ?? makeLogger(config);
  const clock = opts.clock ?? systemClock;
  const { lock, client, db, metrics } = await openForRole(config, log, "embedded");
  const node = buildNode(config, db, clock, log, metrics);
  await node.start();
  const webhooks = startWebhookDelivery(config, db, clock, log, metrics);
  let server: Server<unknown> | null = null;
  const app = createApp({
    db,
    config,
    clock,
    log,
    runtime: "bun",
    docsAssets,
    startedAt: clock.now(),
    clientIp: (req) => (server ? clientAddress(server, req) : null),
    healthChecks: [...nodeHealthChecks(node), liveNodesCheck(db, clock)],
    onRequestCreated: (source) => {
      metrics?.requestsCreated.inc({ source });
      if (source === "fetch") node.wake();
    },
    onQuotaRefused: (quota) => metrics?.quotaRefusals.inc({ quota }),
    onResponse: httpObserver(metrics),
  });
  const shared = !config.node.httpPort || config.node.httpPort === config.port;
  server = Bun.serve({
    ...serveOptions(config, log),
    hostname: config.host,
    port: config.port,
    idleTimeout: 120,
    fetch: guarded(config, async (req, srv) => {
      if (metrics && new URL(req.url).pathname === "/metrics") return metrics.response();
      if (shared) {
        const res = await node.handleHttp(req, clientAddress(srv, req));
        if (res) return res;
      }
      return app.fetch(req);
    }),
  });
  const servers: Server<unknown>[] = [server];
  if (!shared) servers.push(serveNodeHttp(config, node, metrics, log));
  log.info("ProxyTorrent is listening", {
    api: `http://${config.host}:${server.port}`,
    docs: `http://${config.host}:${server.port}/docs`,
    database: redactDbUrl(config.database.url),
    storage: config.storage.basePath,
  });
  return {
    config,
    db,
    node,
    servers,
    async stop() {
      for (const s of servers) s.stop(true);
      await webhooks.stop();
      await node.stop();
      client.close();
      lock.release();
    },
  };
}

export async function startApi(config: Config, opts: { log?: Logger } = {}): Promise<Running> {
  const log = opts.log ?? makeLogger(config);
  const { client, db, metrics } = await openForRole(config, log, "api");
  let server: Server<unknown> | null = null;
  const app = createApp({
    db,
    config,
    clock: systemClock,
    log,
    runtime: "bun",
    docsAssets,
    startedAt: Date.now(),
    clientIp: (req) => (server ? clientAddress(server, req) : null),
    healthChecks: [liveNodesCheck(db, systemClock)],
    onRequestCreated: (source) => metrics?.requestsCreated.inc({ source }),
    onQuotaRefused: (quota) => metrics?.quotaRefusals.inc({ quota }),
    onResponse: httpObserver(metrics),
  });
  server = Bun.serve({
    ...serveOptions(config, log),
    hostname: config.host,
    port: config.port,
    fetch: guarded(config, (req) =>
      metrics && new URL(req.url).pathname === "/metrics" ? metrics.response() : app.fetch(req),
    ),
  });
  log.info("ProxyTorrent API is listening", { api: `http://${config.host}:${server.port}` });
  return {
    config,
    db,
    servers: [server],
    async stop() {
      server?.stop(true);
      client.close();
    },
  };
}

export async function startSeeder(config: Config, opts: { log?: Logger } = {}): Promise<Running> {
  const log = opts.log ?? makeLogger(config);
  const { lock, client, db, metrics } = await openForRole(config, log, "seeder");
  const node = buildNode(config, db, systemClock, log, metrics);
  await node.start();
  const webhooks = startWebhookDelivery(config, db, systemClock, log, metrics);
  const server = serveNodeHttp(config, node, metrics, log);
  log.info("ProxyTorrent node is listening", {
    node: config.node.name,
    http: `http://${config.host}:${server.port}`,
  });
  return {
    config,
    db,
    node,
    servers: [server],
    async stop() {
      server.stop(true);
      await webhooks.stop();
      await node.stop();
      client.close();
      lock.release();
    },
  };
}

function serveNodeHttp(
  config: Config,
  node: SeederNode,
  metrics: Metrics | null,
  log: Logger,
): Server<unknown> {
  return Bun.serve({
    ...serveOptions(config, log),
    hostname: config.host,
    port: config.node.httpPort ?? config.port,
    idleTimeout: 120,
    fetch: guarded(config, async (req, srv) => {
      if (metrics && new URL(req.url).pathname === "/metrics") return metrics.response();
      return (
        (await node.handleHttp(req, clientAddress(srv, req))) ?? new Response("Not Found\n", { status: 404 })
      );
    }),
  });
}

function nodeHealthChecks(node: SeederNode) {
  return [
    {
      name: "storage",
      async check() {
        const { ok, ...probe } = await node.storageProbe();
        return { status: ok ? "healthy" : "unhealthy", ...probe };
      },
    },
    {
      name: "seeding",
      async check() {
        return { status: "healthy", torrents: node.seedingCount(), active_jobs: node.activeJobs() };
      },
    },
  ];
}

/**
 * The storage folder made private (0700; see seeder/node/storage.ts) and, for a process that runs a
 * node, locked for it alone: a second `serve`/`seeder` on the same folder fails here.
 */
/**
 * What every process does before it serves, in this order: check the library patches its role
 * relies on, make the storage folder private (and lock it for a process that runs a node), open
 * and migrate the database, say what is unsafe about the settings, and build the metrics.
 */
async function openForRole(config: Config, log: Logger, role: "embedded" | "api" | "seeder") {
  verifyLibraryPatches(log, patchesFor(config, role));
  const lock = prepareStorage(config, log, role !== "api");
  const { client, db } = await openDatabase(config);
  secureDatabaseFile(config.database.url, log);
  await runMigrations(db);
  await warnAboutDefaults(config, db, log, role);
  return { lock, client, db, metrics: buildMetrics(config, db) };
}

function prepareStorage(config: Config, log: Logger, node: boolean): StorageLock {
  secureStorageFolder(config.storage.basePath, log, node);
  return node ? lockStorageFolder(config.storage.basePath, config.node.name) : { release() {} };
}

export function redactDbUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/, "//***@").replace(/([?&]authToken=)[^&]*/i, "$1***");
}

/** SIGINT/SIGTERM: stop accepting, hand leases back, stop seeding, close the database. */
export function stopOnSignals(running: Running, log: Logger): void {
  let stopping = false;
  const handler = (sig: string) => {
    if (stopping) return;
    stopping = true;
    log.info("shutting down", { signal: sig });
    running
      .stop()
      .then(() => process.exit(0))
      .catch((e) => {
        log.error("shutdown failed", { err: String(e) });
        process.exit(1);
      });
  };
  process.on("SIGINT", () => handler("SIGINT"));
  process.on("SIGTERM", () => handler("SIGTERM"));
}
