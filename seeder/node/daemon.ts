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
  activeJobIds,
  advance,
  claimJobs,
  completeJob,
  contentNeeded,
  failJob,
  heartbeat,
  type JobLease,
  listSeedable,
  markCancelled,
  markWaitingForProxy,
  releaseJob,
  torrentBytes,
} from "../../src/jobs/queue";
import type { Logger } from "../../src/log";
import { nodeHeartbeat, nodeStopped } from "../../src/nodes/registry";
import { expireDue } from "../../src/requests/service";
import { liveGrantHashes } from "../../src/torrents/access";
import { announceUrl, magnetFor, nodePath, webSeedUrl } from "../../src/torrents/links";
import type { Metrics } from "../process/metrics";
import type { NodeAccess } from "./access";
import { type BlobReleaseDeps, releaseBlob, sweepBlobs } from "./blob-release";
import type { ContentStore } from "./cas";
import { FetchError, type Fetcher, type FetchResult } from "./fetcher";
import { GarbageCollector, StoreUsage } from "./gc";
import { LeasedWorkLoop, LeaseLost, type StopReason } from "./leased-work";
import type { PeerEntitlements } from "./peer-entitlements";
import { ScanError, type Scanner } from "./scan";
import { ownRegistrations, recordRegistration } from "./storage";
import { diskSpace } from "./store-space";
import type { Swarm } from "./swarm/swarm";
import { createTorrentFile, torrentFromPieces, torrentNameFromUrl } from "./swarm/torrent";
import type { Tracker } from "./swarm/tracker";
import { WEBSEED_CORS, webSeedPreflight, webSeedResponse } from "./swarm/webseed";

export interface NodeDeps {
  config: Config;
  db: Database;
  clock: Clock;
  log: Logger;
  store: ContentStore;
  fetcher: Fetcher;
  swarm: Swarm;
  tracker: Tracker;
  access: NodeAccess;
  /** Who may use the BitTorrent port (TORRENT__ACCESS=passkey); re-checked on every reconcile. */
  peers?: PeerEntitlements;
  metrics?: Metrics;
  /** Virus scanning through clamd (SCAN__CLAMD); none when it is off. */
  scanner?: Scanner;
}

interface Seeded {
  infohash: string;
  contentHash: string;
  size: number;
  name: string;
}

/** One running job: what every pipeline stage reads. */
interface JobRun {
  job: FetchJob;
  lease: JobLease;
  signal: AbortSignal;
  log: Logger;
  t0: number;
}

/** The torrent made from a job's content. */
interface Packaged {
  name: string;
  infohash: string;
  torrent: Uint8Array;
}

export class SeederNode {
  private running = false;
  private readonly jobs: LeasedWorkLoop<FetchJob>;
  private readonly seeded = new Map<string, Seeded>(); // infohash -> what is seeded
  // The web seed's lookup (one per range request): content hash -> a seeded torrent of it.
  private readonly seededContent = new Map<string, Seeded>();
  // Seeded by a running job but not yet `ready` in the database: reconcile must not drop these.
  private readonly finishing = new Set<string>();
  // Job id -> the content its fetch stored, until the job's run (and its stop or failure) is over.
  private readonly jobContent = new Map<string, string>();
  /** What the content store holds (metrics); the garbage collector keeps it exact. */
  readonly storeUsage = new StoreUsage();
  private readonly gc: GarbageCollector;
  private reconcileTimer: ReturnType<typeof setInterval> | null = null;
  private registryTimer: ReturnType<typeof setInterval> | null = null;
  private startedAt = 0;
  /** Last time this node (without a proxy) marked jobs that wait for a node with one. */
  private lastProxyMark = Number.NEGATIVE_INFINITY;
  private reconciling: Promise<void> | null = null;
  /** Free space is below STORAGE__MIN_FREE_BYTES: no new jobs are claimed (logged on each change). */
  private storageLow = false;
  readonly stats = { claimed: 0, completed: 0, failed: 0, leaseLost: 0 };

  constructor(private readonly deps: NodeDeps) {
    const { config, db, clock } = deps;
    this.gc = new GarbageCollector({ ...deps, usage: this.storeUsage, blobs: () => this.blobDeps() });
    const leaseMs = config.node.leaseSeconds * 1000;
    this.jobs = new LeasedWorkLoop<FetchJob>({
      concurrency: config.node.concurrency,
      pollIntervalMs: config.node.pollIntervalMs,
      log: deps.log,
      messages: { claimFailed: "claim failed", crashed: "job crashed", idField: "job_id" },
      claim: async (limit) =>
        (await this.roomForJobs())
          ? claimJobs(db, clock, {
              nodeName: this.name,
              limit,
              leaseMs,
              region: config.node.region,
              pool: config.node.pool,
              proxied: config.proxy !== null,
            })
          : [],
      afterClaim: async () => {
        if (config.proxy === null) await this.markJobsWaitingForProxy();
      },
      logFor: (job) =>
        deps.log.child({ job_id: job.id, request_id: job.traceId ?? undefined, node: this.name }),
      heartbeat: {
        everyMs: Math.max(200, Math.floor(leaseMs / 3)),
        beat: async (job) => {
          const hb = await heartbeat(db, clock, leaseOf(job), leaseMs);
          return !hb ? "lease_lost" : hb.cancelRequested ? "cancelled" : null;
        },
      },
      run: (job, signal, log) => this.runJob(job, signal, log),
      stopped: (job, reason, log) => this.afterJob(job, () => this.jobStopped(job, reason, log)),
      failed: (job, e, log) => this.afterJob(job, () => this.jobFailed(job, e, log)),
    });
    deps.store.reclaim = () => this.reclaimSpace();
  }

  get name(): string {
    return this.deps.config.node.name;
  }

  get announceUrl(): string {
    return announceUrl(this.deps.config.node.publicUrl);
  }

  async start(): Promise<void> {
    const { log } = this.deps;
    await this.deps.store.init();
    // Partial bodies kept for resuming jobs that ended meanwhile (on another node, or cancelled).
    await this.sweepPartials(false);
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
      virus_scan: !this.deps.scanner ? "off" : this.deps.config.scan.failOpen ? "fail-open" : "fail-closed",
    });
    await this.announceSelf();
    this.registryTimer = setInterval(() => {
      this.announceSelf().catch((e) => log.warn("node heartbeat failed", { err: String(e) }));
    }, this.deps.config.node.heartbeatIntervalMs);
    this.jobs.start();
    // Its first tick removes what a previous run left that no live job needs (deleted content,
    // a crash mid-way) and measures the store; then it runs every STORAGE__GC_INTERVAL_SECONDS.
    this.gc.start();
    this.reconcileTimer = setInterval(() => {
      if (!this.reconciling)
        this.reconcileSeeding().catch((e) => log.error("reseed failed", { err: String(e) }));
    }, this.deps.config.node.reseedIntervalMs);
  }

  /** Look for work now instead of at the next poll (embedded mode, after a POST). */
  wake(): void {
    this.jobs.wake();
  }

  /** Graceful stop: leases of running jobs are handed back (not counted as attempts), seeding stops. */
  async stop(): Promise<void> {
    this.running = false;
    if (this.reconcileTimer) clearInterval(this.reconcileTimer);
    if (this.registryTimer) clearInterval(this.registryTimer);
    await this.jobs.stop();
    await this.reconciling;
    await this.gc.stop();
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
        activeJobs: this.jobs.activeCount,
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

  /** The storage check of /v1/health: writable, and not below its free-space margin; with figures. */
  async storageProbe() {
    const { store } = this.deps;
    const probe = await store.probe();
    const disk = await diskSpace(store.casRoot).catch(() => null);
    const low = await store.belowMargin().catch(() => null);
    const figures = {
      used_bytes: store.usedBytes(),
      max_bytes: store.limits.maxBytes,
      free_bytes: disk?.free ?? null,
      min_free_bytes: store.limits.minFreeBytes,
      taking_jobs: low === null,
    };
    if (!probe.ok) return { ok: false, error: probe.error, ...figures };
    if (low)
      return {
        ok: false,
        error: `free space on the storage disk (${low.free} bytes) is below STORAGE__MIN_FREE_BYTES=${low.minFree} bytes: this node takes no new jobs until space returns`,
        ...figures,
      };
    return { ok: true, ...figures };
  }

  activeJobs(): number {
    return this.jobs.activeCount;
  }

  /** Tracker and web seed, mounted on the node's HTTP port (or the API port in embedded mode). */
  async handleHttp(req: Request, remoteAddress: string): Promise<Response | null> {
    const path = nodePath(new URL(req.url));
    if (!path) return null;
    if (path.kind === "tracker") return this.deps.tracker.handle(req, remoteAddress);
    if (req.method === "OPTIONS") return webSeedPreflight();
    const hash = await this.deps.access.webSeed(path);
    const entry = hash ? this.seededContent.get(hash) : undefined;
    // One answer for a wrong passkey, a revoked one and content not here: a stranger learns nothing.
    if (!hash || !entry) return new Response("Not found\n", { status: 404, headers: WEBSEED_CORS });
    const res = webSeedResponse(req, this.deps.store.pathFor(hash), entry.size, entry.name);
    if (req.method === "GET")
      this.deps.metrics?.uploadBytes.inc({ via: "webseed" }, bodyLength(res, entry.size));
    return res;
  }

  // ---- work loop (claiming, heartbeats and stopping: leased-work.ts) ----

  /**
   * Whether this node may claim jobs: not while free space is below STORAGE__MIN_FREE_BYTES (the
   * jobs stay queued for another node, or for this one once space returns). Asked before every
   * claim (one statfs); the change either way is logged once.
   */
  private async roomForJobs(): Promise<boolean> {
    let low: Awaited<ReturnType<ContentStore["belowMargin"]>>;
    try {
      low = await this.deps.store.belowMargin();
    } catch {
      return true; // the disk cannot be asked: a write will tell
    }
    if (!!low !== this.storageLow) {
      const fields = { min_free_bytes: this.deps.store.limits.minFreeBytes, path: this.deps.store.basePath };
      if (low)
        this.deps.log.warn(
          "free disk space is below STORAGE__MIN_FREE_BYTES: this node takes no new jobs until space returns",
          { ...fields, free_bytes: low.free, storage_low: true },
        );
      else
        this.deps.log.info("free disk space is back above STORAGE__MIN_FREE_BYTES: taking jobs again", {
          ...fields,
          storage_low: false,
        });
    }
    this.storageLow = !!low;
    return !low;
  }

  /**
   * A body does not fit in the store: stop seeding what is no longer wanted (cancelled, expired;
   * that releases its blob) and remove every blob no live job of this node needs. Called by the
   * store (ContentStore.reclaim), which then checks again.
   */
  private async reclaimSpace(): Promise<void> {
    const { store, log } = this.deps;
    const before = store.usedBytes();
    try {
      while (this.reconciling) await this.reconciling;
      if (this.running) await this.reconcileSeeding();
      await sweepBlobs(this.blobDeps(), () => !this.running, this.storeUsage);
      // Partial bodies kept for retries are worth less than room for the body at hand.
      await this.sweepPartials(true);
    } catch (e) {
      log.warn("freeing space in the store failed", { err: String(e) });
    }
    log.info("store short of space: removed content no live job needs", {
      freed_bytes: Math.max(0, before - store.usedBytes()),
      used_bytes: store.usedBytes(),
    });
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

  /** One job, as the README's lifecycle tells it: fetch → store → (scan) → package → seed → complete. */
  private async runJob(job: FetchJob, signal: AbortSignal, log: Logger): Promise<void> {
    this.stats.claimed++;
    if (job.errorCode === "lease_expired") this.deps.metrics?.leaseExpired.inc();
    const run: JobRun = { job, lease: leaseOf(job), signal, log, t0: performance.now() };
    if (await this.endedBeforeStart(run)) {
      // An earlier attempt on this node may have stored its content, or part of its body.
      if (job.contentHash) await this.releaseContent(job.contentHash);
      await this.removePartial(job.id);
      return;
    }
    const got = (await this.fromStore(run)) ?? (await this.fetchStage(run));
    this.jobContent.set(job.id, got.contentHash);
    try {
      await this.storeStage(run, got);
    } finally {
      // The job's row records the hash now (or the job is ending): the database speaks for it.
      got.pin.release();
    }
    await this.scanStage(run, got);
    const made = await this.packageStage(run, got);
    // Seeded but not `ready` in the database yet: reconcile must not drop it meanwhile.
    this.finishing.add(made.infohash);
    try {
      await this.seedStage(run, got, made);
      await this.completeStage(run, made);
    } finally {
      this.finishing.delete(made.infohash);
    }
    this.jobContent.delete(job.id);
  }

  /**
   * A job's run ended without becoming ready (`end` records how): the content its fetch stored,
   * or an earlier attempt's, goes unless another live job needs it.
   */
  private async afterJob(job: FetchJob, end: () => Promise<void>): Promise<void> {
    const hash = this.jobContent.get(job.id) ?? job.contentHash;
    this.jobContent.delete(job.id);
    await end();
    if (hash) await this.releaseContent(hash);
  }

  /** A job cancelled before it started, or claimed again once too often, ends here. */
  private async endedBeforeStart({ job, lease, log }: JobRun): Promise<boolean> {
    const { db, clock } = this.deps;
    if (job.cancelRequested) {
      await markCancelled(db, clock, lease);
      log.info("job cancelled before start");
      return true;
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
      return true;
    }
    return false;
  }

  /**
   * A job that names the content it expects (`expected_sha256`) and whose content this node's
   * store already holds is made from that blob without asking the origin: the hash is the address.
   * Nothing describes it but its bytes: the name comes from the URL as usual, the content type is
   * unknown (null; the MIME whitelist, a check of the origin's answer, does not apply).
   */
  private async fromStore({ job, log }: JobRun): Promise<(FetchResult & { fromStore: true }) | null> {
    const hash = job.expectedSha256;
    if (!hash) return null;
    const { store } = this.deps;
    // Pinned under the hash's lock: a removal either finished before (size null) or sees the pin.
    const held = await store.withLock(hash, async () => {
      const pin = store.pin(hash);
      const size = await store.size(hash);
      if (size !== null && (job.expectedSize == null || size === job.expectedSize)) return { pin, size };
      pin.release();
      return null;
    });
    if (!held) return null;
    log.info("content already in the store; not fetched", { content_hash: hash, bytes: held.size });
    return {
      contentHash: hash,
      size: held.size,
      contentType: "",
      finalUrl: job.url,
      status: 0,
      path: store.pathFor(hash),
      pin: held.pin,
      verifiedDigests: [],
      fromStore: true,
    };
  }

  /** Fetch: the body streams from the origin (through the proxy, if any) into the content store. */
  private async fetchStage({ job, signal, log, t0 }: JobRun): Promise<FetchResult> {
    log.info("fetch started", { url: redactUrl(job.url), method: job.method, attempt: job.attempts });
    const got = await this.deps.fetcher.fetch(
      { url: job.url, method: job.method, headers: job.headers ?? {}, body: job.body },
      { signal, partialKey: job.id, expect: { sha256: job.expectedSha256, size: job.expectedSize } },
    );
    this.deps.metrics?.fetchBytes.inc(got.size);
    this.deps.metrics?.fetchDuration.observe({ outcome: "ok" }, (performance.now() - t0) / 1000);
    log.info("fetch finished", {
      bytes: got.size,
      content_hash: got.contentHash,
      status: got.status,
      ms: Math.round(performance.now() - t0),
    });
    return got;
  }

  /** Store: the job records the content the store now holds under its hash; an empty body ends here. */
  private async storeStage(run: JobRun, got: FetchResult & { fromStore?: true }): Promise<void> {
    this.storeUsage.stored(got.contentHash, got.size);
    await this.advance(run, {
      progress: 40,
      contentHash: got.contentHash,
      contentSize: got.size,
      contentType: got.fromStore ? null : got.contentType,
      finalUrl: got.finalUrl,
      verifiedDigests: got.verifiedDigests.length > 0 ? got.verifiedDigests : null,
    });
    if (got.size === 0)
      throw new FetchError("bad_response", "The origin sent an empty body: there is nothing to share", {
        transient: false,
      });
  }

  /**
   * Scan (SCAN__CLAMD): the stored blob goes to clamd before anything is made of it. The verdict is
   * recorded on the job; infected content ends it, and afterJob then removes the blob (unless a
   * torrent of the same bytes, scanned before, is still seeded here).
   */
  private async scanStage(run: JobRun, got: FetchResult): Promise<void> {
    const { scanner, store } = this.deps;
    if (!scanner) return;
    const blob = { contentHash: got.contentHash, size: got.size, path: store.pathFor(got.contentHash) };
    const { record, signature } = await scanner.scan(blob, run.signal, run.log);
    await this.advance(run, record);
    if (signature !== undefined)
      throw new ScanError(
        "content_rejected",
        `The content matches the virus signature ${signature}: it is refused, not stored or seeded`,
        false,
      );
  }

  /** Package: make the (private) torrent and its magnet link, and record them on the job. */
  private async packageStage(run: JobRun, got: FetchResult): Promise<Packaged> {
    const { config, store } = this.deps;
    await this.advance(run, { status: "packaging", progress: 50 });
    const name = torrentNameFromUrl(got.finalUrl, got.contentType);
    const trackers = [this.announceUrl, ...(config.torrent.announceUrl ? [config.torrent.announceUrl] : [])];
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
    run.signal.throwIfAborted();
    const magnetLink = magnetFor({
      infohash: made.infohash,
      name,
      size: got.size,
      trackers,
      webSeeds: torrentOpts.urlList,
    });
    await this.advance(run, {
      progress: 70,
      infohash: made.infohash,
      torrentName: name,
      pieceLength: made.pieceLength,
      torrent: made.torrent,
      magnetLink,
      seedNode: this.name,
    });
    return { name, infohash: made.infohash, torrent: made.torrent };
  }

  /** Seed: the swarm serves the torrent from the store, and the web seed serves the content. */
  private async seedStage(run: JobRun, got: FetchResult, made: Packaged): Promise<void> {
    await this.advance(run, { status: "seeding", progress: 80 });
    await this.deps.swarm.seed({
      infohash: made.infohash,
      torrent: this.deps.access.forOwnSeeder(made.torrent),
      path: this.deps.store.pathFor(got.contentHash),
    });
    this.markSeeded({
      infohash: made.infohash,
      contentHash: got.contentHash,
      size: got.size,
      name: made.name,
    });
  }

  /** Complete: the job becomes ready (or cancelled, if every request was cancelled meanwhile). */
  private async completeStage({ job, lease, log, t0 }: JobRun, made: Packaged): Promise<void> {
    const final = await completeJob(this.deps.db, this.deps.clock, lease, this.name);
    if (final === null) throw new LeaseLost();
    if (final === "cancelled") await this.unseed(made.infohash);
    this.stats.completed++;
    this.deps.metrics?.requestsTotal.inc({ status: final });
    // From the POST that created the job (queue wait, retries, fetch, scan, packaging included).
    if (final === "ready")
      this.deps.metrics?.readyDuration.observe(Math.max(0, (this.deps.clock.now() - job.createdAt) / 1000));
    log.info(final === "ready" ? "job ready" : "job cancelled while packaging", {
      job_status: final,
      infohash: made.infohash,
      ms: Math.round(performance.now() - t0),
    });
  }

  /** Record progress under the lease; a write that matches no row means another node owns the job. */
  private async advance({ lease }: JobRun, patch: Parameters<typeof advance>[3]): Promise<void> {
    if (!(await advance(this.deps.db, this.deps.clock, lease, patch))) throw new LeaseLost();
  }

  /** The pipeline threw after it was stopped from outside, or on a lost lease. */
  private async jobStopped(job: FetchJob, reason: StopReason, log: Logger): Promise<void> {
    const { db, clock } = this.deps;
    // The job ended here (cancelled) or is another node's now: its partial body goes. A shutdown
    // hands it back with its partial body kept, for this node's next start to continue.
    if (reason !== "shutdown") await this.removePartial(job.id);
    if (reason === "cancelled") {
      await markCancelled(db, clock, leaseOf(job));
      this.deps.metrics?.requestsTotal.inc({ status: "cancelled" });
      log.info("job cancelled while running", { job_status: "cancelled" });
    } else if (reason === "lease_lost") {
      this.stats.leaseLost++;
      this.deps.metrics?.leaseExpired.inc();
      log.warn("lease lost; another node owns this job now");
    } else {
      await releaseJob(db, clock, leaseOf(job));
      log.info("job released for another node (shutdown)");
    }
  }

  /** The pipeline failed: retry later (transient, attempts left) or end the job in `error`. */
  private async jobFailed(job: FetchJob, e: unknown, log: Logger): Promise<void> {
    const err =
      e instanceof FetchError || e instanceof ScanError
        ? { code: e.code, message: e.message, transient: e.transient }
        : { code: "internal", message: `Packaging error: ${(e as Error).message}`, transient: true };
    this.stats.failed++;
    const outcome = await failJob(
      this.deps.db,
      this.deps.clock,
      { ...leaseOf(job), attempts: job.attempts, maxAttempts: job.maxAttempts },
      err,
    );
    if (outcome === "error") this.deps.metrics?.requestsTotal.inc({ status: "error" });
    if (outcome !== null)
      this.deps.metrics?.fetchErrors.inc({
        code: err.code,
        outcome: outcome === "error" ? "final" : "retry",
      });
    // Kept only for a retry (which may come back here); an ended job's partial body goes.
    if (outcome !== "queued") await this.removePartial(job.id);
    log.warn("job attempt failed", { code: err.code, error: err.message, outcome });
  }

  // ---- seeding ----

  /** Make the swarm match the database: seed every ready torrent of this node, drop the rest. */
  private async reconcileSeeding(): Promise<void> {
    const run = async () => {
      const { db, store, swarm, log } = this.deps;
      // Requests whose retention ended: recorded once across all nodes (whoever runs it first),
      // their jobs marked `expired` when no live request is left, which the list below then drops.
      // A failure here must not stop seeding; the next reconcile tries again.
      const expired = await expireDue(db, this.deps.clock).catch((e) => {
        log.warn("expiry sweep failed", { err: String(e) });
        return [];
      });
      if (expired.length > 0) log.info("requests expired", { requests: expired.length });
      const wanted = await listSeedable(db, this.name);
      const wantedSet = new Set(wanted.map((w) => w.infohash!));
      for (const infohash of [...this.seeded.keys()]) {
        if (!wantedSet.has(infohash) && !this.finishing.has(infohash)) await this.unseed(infohash);
      }
      for (const w of wanted) {
        if (!this.running) break;
        const { infohash, contentHash } = w;
        if (!infohash || !contentHash || this.seeded.has(infohash)) continue;
        // Under the hash's lock: a removal cannot unlink the blob between this check and the
        // torrent being seeded (after which the removal sees it seeded); see blob-release.ts.
        await store.withLock(contentHash, async () => {
          const size = await store.size(contentHash);
          if (size === null || size !== w.contentSize) {
            // Removed because the job was cancelled after `wanted` was read: nothing is wrong.
            if (size === null && !(await contentNeeded(db, this.name, contentHash))) return;
            log.error("content missing from the store; cannot seed", {
              job_id: w.id,
              content_hash: contentHash,
            });
            return;
          }
          const torrent = await torrentBytes(db, w.id);
          if (!torrent) return;
          await swarm.seed({
            infohash,
            torrent: this.deps.access.forOwnSeeder(torrent),
            path: store.pathFor(contentHash),
          });
          this.markSeeded({ infohash, contentHash, size, name: w.torrentName ?? contentHash });
        });
      }
      await this.revokePeers();
      await this.sweepPartials(false);
    };
    this.reconciling = run().finally(() => {
      this.reconciling = null;
    });
    return this.reconciling;
  }

  /**
   * Revocation reaches the BitTorrent port: forget entitlements whose passkey died (DELETE, key
   * revoked, TTL) or whose window passed, and close the connections they covered.
   */
  private async revokePeers(): Promise<void> {
    const { peers, db, clock, config, swarm, log } = this.deps;
    if (!peers) return;
    const forgotten = await peers.revalidate((hashes) =>
      liveGrantHashes(db, hashes, clock.now(), config.torrent.passkeyTtlSeconds),
    );
    const closed = swarm.dropUnentitled();
    // Counts only: which passkey or peer is nobody's business in a log.
    if (forgotten > 0 || closed > 0)
      log.info("peer entitlements ended", { entitlements: forgotten, connections_closed: closed });
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
    this.deps.log.info("stopped seeding", { infohash, unseeded: true });
    if (gone) await this.releaseContent(gone.contentHash);
  }

  private blobDeps(): BlobReleaseDeps {
    const { store, db, log, metrics } = this.deps;
    return {
      store,
      db,
      nodeName: this.name,
      log,
      metrics,
      inUse: (hash) => this.seededContent.has(hash),
      usage: this.storeUsage,
    };
  }

  /**
   * Remove kept partial bodies (ContentStore.partials; none is open by a running fetch) of jobs
   * that ended, or with `all`, every one.
   */
  private async sweepPartials(all: boolean): Promise<void> {
    const { store, db, log } = this.deps;
    const keys = store.partials();
    if (keys.length === 0) return;
    let active: Set<string>;
    try {
      active = all ? new Set<string>() : await activeJobIds(db, keys);
    } catch (e) {
      log.warn("could not tell which partial bodies are still needed", { err: String(e) });
      return;
    }
    for (const key of keys) if (!active.has(key)) await this.removePartial(key);
  }

  private async removePartial(jobId: string): Promise<void> {
    try {
      if (await this.deps.store.removePartial(jobId))
        this.deps.log.debug("partial body removed", { job_id: jobId });
    } catch (e) {
      this.deps.log.warn("partial body removal failed", { job_id: jobId, err: String(e) });
    }
  }

  /** Delete the content's blob if nothing needs it any more (see blob-release.ts). */
  private async releaseContent(contentHash: string): Promise<void> {
    try {
      await releaseBlob(this.blobDeps(), contentHash);
    } catch (e) {
      // Kept: the next garbage-collection tick tries again.
      this.deps.log.warn("blob removal failed", { content_hash: contentHash, err: String(e) });
    }
  }
}

const leaseOf = (job: FetchJob): JobLease => ({ id: job.id, leaseToken: job.leaseToken! });

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
