/**
 * A seeder node: claims jobs from the database, fetches, stores, packages and seeds, and keeps
 * seeding every ready torrent assigned to it (also after a restart). It talks to nothing but the
 * database; the API finds its results there.
 */
import type { Clock } from "../../src/clock";
import type { Config } from "../../src/config";
import type { Database } from "../../src/db";
import type { FetchJob } from "../../src/db/schema";
import {
  advance,
  claimJobs,
  completeJob,
  failJob,
  heartbeat,
  type Lease,
  listSeedable,
  markCancelled,
  markWaitingForProxy,
  releaseJob,
  torrentBytes,
} from "../../src/jobs/queue";
import type { Logger } from "../../src/log";
import { nodeHeartbeat, nodeStopped } from "../../src/nodes/registry";
import type { Metrics } from "../process/metrics";
import type { ContentStore } from "./cas";
import { FetchError, type Fetcher } from "./fetcher";
import { ownRegistrations, recordRegistration } from "./storage";
import type { Swarm } from "./swarm/swarm";
import { createTorrentFile, magnetFor, torrentFromPieces, torrentNameFromUrl } from "./swarm/torrent";
import type { Tracker } from "./swarm/tracker";
import { webSeedHash, webSeedResponse, webSeedUrl } from "./swarm/webseed";

export interface NodeDeps {
  config: Config;
  db: Database;
  clock: Clock;
  log: Logger;
  store: ContentStore;
  fetcher: Fetcher;
  swarm: Swarm;
  tracker: Tracker;
  metrics?: Metrics;
}

interface Seeded {
  infohash: string;
  contentHash: string;
  size: number;
  name: string;
}

/** Why a running job was stopped from outside its own pipeline. */
type StopReason = "cancelled" | "lease_lost" | "shutdown";

export class SeederNode {
  private running = false;
  private readonly active = new Map<string, { controller: AbortController; done: Promise<void> }>();
  private readonly seeded = new Map<string, Seeded>(); // infohash -> what is seeded
  // The web seed's lookup (one per range request): content hash -> a seeded torrent of it.
  private readonly seededContent = new Map<string, Seeded>();
  // Seeded by a running job but not yet `ready` in the database: reconcile must not drop these.
  private readonly finishing = new Set<string>();
  private wakeUp: (() => void) | null = null;
  private loop: Promise<void> | null = null;
  private reconcileTimer: ReturnType<typeof setInterval> | null = null;
  private registryTimer: ReturnType<typeof setInterval> | null = null;
  private startedAt = 0;
  /** Last time this node (without a proxy) marked jobs that wait for a node with one. */
  private lastProxyMark = Number.NEGATIVE_INFINITY;
  private reconciling: Promise<void> | null = null;
  readonly stats = { claimed: 0, completed: 0, failed: 0, leaseLost: 0 };

  constructor(private readonly deps: NodeDeps) {}

  get name(): string {
    return this.deps.config.node.name;
  }

  get announceUrl(): string {
    return `${this.deps.config.node.publicUrl}/announce`;
  }

  async start(): Promise<void> {
    const { log } = this.deps;
    await this.deps.store.init();
    // Take the node name before touching anything that belongs to it (its torrents, its jobs):
    // a live node of the same name elsewhere is an error, not a takeover. A row left "live" by
    // this storage folder's previous run (killed a moment ago) is ours to take back.
    this.startedAt = this.deps.clock.now();
    const previous = ownRegistrations(this.deps.store.basePath, this.name);
    recordRegistration(this.deps.store.basePath, this.name, this.startedAt);
    await this.announceSelf([this.startedAt, ...previous]);
    await this.deps.swarm.start();
    this.running = true;
    const t0 = performance.now();
    await this.reconcileSeeding();
    log.info("node started", {
      node: this.name,
      seeding: this.seeded.size,
      reseed_ms: Math.round(performance.now() - t0),
      public_url: this.deps.config.node.publicUrl,
      torrent_port: this.deps.config.torrent.listenPort,
    });
    await this.announceSelf();
    this.registryTimer = setInterval(() => {
      this.announceSelf().catch((e) => log.warn("node heartbeat failed", { err: String(e) }));
    }, 5000);
    this.loop = this.pollLoop();
    this.reconcileTimer = setInterval(() => {
      if (!this.reconciling)
        this.reconcileSeeding().catch((e) => log.error("reseed failed", { err: String(e) }));
    }, 2000);
  }

  /** Look for work now instead of at the next poll (embedded mode, after a POST). */
  wake(): void {
    this.wakeUp?.();
  }

  /** Graceful stop: leases of running jobs are handed back (not counted as attempts), seeding stops. */
  async stop(): Promise<void> {
    this.running = false;
    this.wake();
    if (this.reconcileTimer) clearInterval(this.reconcileTimer);
    if (this.registryTimer) clearInterval(this.registryTimer);
    for (const { controller } of this.active.values()) controller.abort("shutdown" satisfies StopReason);
    await Promise.allSettled([...this.active.values()].map((a) => a.done));
    await this.loop;
    await this.reconciling;
    this.deps.fetcher.closeIdleConnections?.();
    await this.deps.swarm.stop();
    await this.deps.tracker.close();
    await nodeStopped(this.deps.db, this.deps.clock, this.name, this.startedAt).catch(() => {});
  }

  /** Tell the registry this node is alive (start and every 5 s). */
  private async announceSelf(ownStartedAt = [this.startedAt]): Promise<void> {
    const { config, db, clock } = this.deps;
    await nodeHeartbeat(
      db,
      clock,
      {
        name: this.name,
        publicUrl: config.node.publicUrl,
        region: config.node.region,
        pool: config.node.pool,
        version: config.appVersion,
        startedAt: this.startedAt,
        activeJobs: this.active.size,
        torrentsSeeding: this.seeded.size,
      },
      ownStartedAt,
    );
  }

  isSeeding(infohash: string): boolean {
    return this.seeded.has(infohash);
  }

  seedingCount(): number {
    return this.seeded.size;
  }

  storageProbe() {
    return this.deps.store.probe();
  }

  activeJobs(): number {
    return this.active.size;
  }

  /** Tracker and web seed, mounted on the node's HTTP port (or the API port in embedded mode). */
  async handleHttp(req: Request, remoteAddress: string): Promise<Response | null> {
    const path = new URL(req.url).pathname;
    if (path === "/announce" || path === "/scrape") return this.deps.tracker.handle(req, remoteAddress);
    const hash = webSeedHash(path);
    if (hash) {
      const entry = this.seededContent.get(hash);
      if (!entry) return new Response("Not seeded here\n", { status: 404 });
      const res = webSeedResponse(req, this.deps.store.pathFor(hash), entry.size, entry.name);
      if (req.method === "GET")
        this.deps.metrics?.uploadBytes.inc({ via: "webseed" }, bodyLength(res, entry.size));
      return res;
    }
    return null;
  }

  // ---- work loop ----

  private async pollLoop(): Promise<void> {
    const { config, db, clock, log } = this.deps;
    while (this.running) {
      const free = config.node.concurrency - this.active.size;
      let claimed: FetchJob[] = [];
      if (free > 0) {
        try {
          claimed = await claimJobs(db, clock, {
            nodeName: this.name,
            limit: free,
            leaseMs: config.node.leaseSeconds * 1000,
            region: config.node.region,
            pool: config.node.pool,
            proxied: config.proxy !== null,
          });
        } catch (e) {
          log.error("claim failed", { err: String(e) });
        }
      }
      if (config.proxy === null) await this.markJobsWaitingForProxy();
      for (const job of claimed) this.startJob(job);
      if (claimed.length === free && free > 0) continue; // there may be more
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, config.node.pollIntervalMs);
        this.wakeUp = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wakeUp = null;
    }
  }

  /**
   * Jobs created while a proxy was required are never ours without a proxy: say in their status
   * why they wait, and tell the operator. At most every 5 s, since it is a write.
   */
  private async markJobsWaitingForProxy(): Promise<void> {
    const { config, db, clock, log } = this.deps;
    const now = clock.now();
    if (now - this.lastProxyMark < 5000) return;
    this.lastProxyMark = now;
    try {
      const n = await markWaitingForProxy(db, clock, { region: config.node.region, pool: config.node.pool });
      if (n > 0)
        log.warn(
          "jobs need a proxy and this node has none; they wait for a node with one (set PROXY__PROXY_URL)",
          {
            jobs: n,
          },
        );
    } catch (e) {
      log.error("marking jobs that wait for a proxy failed", { err: String(e) });
    }
  }

  private startJob(job: FetchJob): void {
    this.stats.claimed++;
    if (job.errorCode === "lease_expired") this.deps.metrics?.leaseExpired.inc();
    const controller = new AbortController();
    const done = this.runJob(job, controller)
      .catch((e) => this.deps.log.error("job crashed", { job_id: job.id, err: String(e) }))
      .finally(() => {
        this.active.delete(job.id);
        this.wake();
      });
    this.active.set(job.id, { controller, done });
  }

  private async runJob(job: FetchJob, controller: AbortController): Promise<void> {
    const { config, db, clock, store, fetcher, swarm } = this.deps;
    const log = this.deps.log.child({
      job_id: job.id,
      request_id: job.traceId ?? undefined,
      node: this.name,
    });
    const lease: Lease = { id: job.id, leaseToken: job.leaseToken! };
    const leaseMs = config.node.leaseSeconds * 1000;

    if (job.cancelRequested) {
      await markCancelled(db, clock, lease);
      log.info("job cancelled before start");
      return;
    }
    if (job.attempts > job.maxAttempts) {
      // Claimed again after its lease expired once too often (its nodes kept dying).
      await failJob(
        db,
        clock,
        { ...lease, attempts: job.attempts, maxAttempts: job.maxAttempts },
        {
          code: "lease_expired",
          message: "The node working on this request stopped responding too many times",
          transient: false,
        },
      );
      log.warn("job gave up after repeated lease loss", { attempts: job.attempts });
      return;
    }

    const beat = setInterval(
      async () => {
        try {
          const hb = await heartbeat(db, clock, lease, leaseMs);
          if (!hb) controller.abort("lease_lost" satisfies StopReason);
          else if (hb.cancelRequested) controller.abort("cancelled" satisfies StopReason);
        } catch (e) {
          log.warn("heartbeat failed", { err: String(e) });
        }
      },
      Math.max(200, Math.floor(leaseMs / 3)),
    );

    const t0 = performance.now();
    try {
      log.info("fetch started", { url: redactUrl(job.url), method: job.method, attempt: job.attempts });
      const got = await fetcher.fetch(
        { url: job.url, method: job.method, headers: job.headers ?? {}, body: job.body },
        { signal: controller.signal },
      );
      this.deps.metrics?.fetchBytes.inc(got.size);
      this.deps.metrics?.fetchDuration.observe({ outcome: "ok" }, (performance.now() - t0) / 1000);
      log.info("fetch finished", {
        bytes: got.size,
        content_hash: got.contentHash,
        status: got.status,
        ms: Math.round(performance.now() - t0),
      });
      if (
        !(await advance(db, clock, lease, {
          progress: 40,
          contentHash: got.contentHash,
          contentSize: got.size,
          contentType: got.contentType,
          finalUrl: got.finalUrl,
        }))
      )
        return this.lostLease(log);
      if (got.size === 0)
        throw new FetchError("bad_response", "The origin sent an empty body: there is nothing to share", {
          transient: false,
        });
      if (!(await advance(db, clock, lease, { status: "packaging", progress: 50 })))
        return this.lostLease(log);

      const name = torrentNameFromUrl(got.finalUrl, got.contentType);
      const trackers = [
        this.announceUrl,
        ...(config.torrent.announceUrl ? [config.torrent.announceUrl] : []),
      ];
      const torrentOpts = {
        name,
        size: got.size,
        private: config.torrent.private,
        announce: trackers,
        urlList: [webSeedUrl(config.node.publicUrl, got.contentHash)],
        createdBy: `ProxyTorrent/${config.appVersion}`,
      };
      // Piece hashes computed while the body streamed in (size known up front) spare a re-read.
      const made = got.pieces
        ? torrentFromPieces({ ...torrentOpts, pieces: got.pieces })
        : await createTorrentFile({
            ...torrentOpts,
            path: store.pathFor(got.contentHash),
            pieceSize: config.torrent.pieceSize,
          });
      controller.signal.throwIfAborted();
      const magnetLink = magnetFor({
        infohash: made.infohash,
        name,
        size: got.size,
        trackers,
        webSeeds: torrentOpts.urlList,
      });
      if (
        !(await advance(db, clock, lease, {
          progress: 70,
          infohash: made.infohash,
          torrentName: name,
          pieceLength: made.pieceLength,
          torrent: made.torrent,
          magnetLink,
          seedNode: this.name,
        }))
      )
        return this.lostLease(log);
      if (!(await advance(db, clock, lease, { status: "seeding", progress: 80 }))) return this.lostLease(log);

      this.finishing.add(made.infohash);
      let final: Awaited<ReturnType<typeof completeJob>>;
      try {
        await swarm.seed({
          infohash: made.infohash,
          torrent: made.torrent,
          path: store.pathFor(got.contentHash),
        });
        this.markSeeded({
          infohash: made.infohash,
          contentHash: got.contentHash,
          size: got.size,
          name,
        });
        final = await completeJob(db, clock, lease, this.name);
      } finally {
        this.finishing.delete(made.infohash);
      }
      if (final === null) return this.lostLease(log);
      if (final === "cancelled") await this.unseed(made.infohash);
      this.stats.completed++;
      this.deps.metrics?.requestsTotal.inc({ status: final });
      log.info(final === "ready" ? "job ready" : "job cancelled while packaging", {
        infohash: made.infohash,
        ms: Math.round(performance.now() - t0),
      });
    } catch (e) {
      const reason = controller.signal.aborted ? (controller.signal.reason as StopReason) : null;
      if (reason === "cancelled") {
        await markCancelled(db, clock, lease);
        this.deps.metrics?.requestsTotal.inc({ status: "cancelled" });
        log.info("job cancelled while running");
      } else if (reason === "lease_lost") {
        this.lostLease(log);
      } else if (reason === "shutdown") {
        await releaseJob(db, clock, lease);
        log.info("job released for another node (shutdown)");
      } else {
        const err =
          e instanceof FetchError
            ? { code: e.code, message: e.message, transient: e.transient }
            : { code: "internal", message: `Packaging error: ${(e as Error).message}`, transient: true };
        this.stats.failed++;
        const outcome = await failJob(
          db,
          clock,
          { ...lease, attempts: job.attempts, maxAttempts: job.maxAttempts },
          err,
        );
        if (outcome === "error") this.deps.metrics?.requestsTotal.inc({ status: "error" });
        log.warn("job attempt failed", { code: err.code, error: err.message, outcome });
      }
    } finally {
      clearInterval(beat);
    }
  }

  private lostLease(log: Logger): void {
    this.stats.leaseLost++;
    this.deps.metrics?.leaseExpired.inc();
    log.warn("lease lost; another node owns this job now");
  }

  // ---- seeding ----

  /** Make the swarm match the database: seed every ready torrent of this node, drop the rest. */
  private async reconcileSeeding(): Promise<void> {
    const run = async () => {
      const { db, store, swarm, log } = this.deps;
      const wanted = await listSeedable(db, this.name);
      const wantedSet = new Set(wanted.map((w) => w.infohash!));
      for (const infohash of [...this.seeded.keys()]) {
        if (!wantedSet.has(infohash) && !this.finishing.has(infohash)) await this.unseed(infohash);
      }
      for (const w of wanted) {
        if (!this.running) break;
        if (!w.infohash || !w.contentHash || this.seeded.has(w.infohash)) continue;
        const size = await store.size(w.contentHash);
        if (size === null || size !== w.contentSize) {
          log.error("content missing from the store; cannot seed", {
            job_id: w.id,
            content_hash: w.contentHash,
          });
          continue;
        }
        const torrent = await torrentBytes(db, w.id);
        if (!torrent) continue;
        await swarm.seed({ infohash: w.infohash, torrent, path: store.pathFor(w.contentHash) });
        this.markSeeded({
          infohash: w.infohash,
          contentHash: w.contentHash,
          size,
          name: w.torrentName ?? w.contentHash,
        });
      }
    };
    this.reconciling = run().finally(() => {
      this.reconciling = null;
    });
    return this.reconciling;
  }

  private markSeeded(entry: Seeded): void {
    this.seeded.set(entry.infohash, entry);
    this.seededContent.set(entry.contentHash, entry);
  }

  private async unseed(infohash: string): Promise<void> {
    const gone = this.seeded.get(infohash);
    this.seeded.delete(infohash);
    if (gone && this.seededContent.get(gone.contentHash)?.infohash === infohash) {
      // Another torrent of the same bytes (another name) may still be seeded: keep its web seed.
      const other = [...this.seeded.values()].find((s) => s.contentHash === gone.contentHash);
      if (other) this.seededContent.set(gone.contentHash, other);
      else this.seededContent.delete(gone.contentHash);
    }
    await this.deps.swarm.unseed(infohash);
    this.deps.log.info("stopped seeding", { infohash });
  }
}

/** Bytes a web-seed response carries (Bun sets Content-Length itself for file slices). */
function bodyLength(res: Response, size: number): number {
  if (res.status === 200) return size;
  const m = res.status === 206 ? /bytes (\d+)-(\d+)\//.exec(res.headers.get("content-range") ?? "") : null;
  return m ? Number(m[2]) - Number(m[1]) + 1 : 0;
}

/** Log URLs without query strings or credentials (they often carry tokens). */
export function redactUrl(raw: string): string {
  try {
    const u = new URL(raw);
    return `${u.protocol}//${u.host}${u.pathname}${u.search ? "?…" : ""}`;
  } catch {
    return "(invalid url)";
  }
}
