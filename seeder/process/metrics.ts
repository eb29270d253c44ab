/**
 * Prometheus metrics for a Bun process (embedded service, API alone, or node), with prom-client:
 * the de-facto Node client, well kept, text exposition format, default process metrics included.
 * Each process has its own registry (no global state shared between tests).
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

/** Live values read at scrape time. */
export interface MetricSources {
  queueDepth?: () => Promise<number>;
  /** Age in seconds of the oldest job waiting to be claimed (0 when none waits). */
  queueOldestAge?: () => Promise<number>;
  /** Webhook deliveries not yet delivered or given up, and the age in seconds of the oldest. */
  webhookBacklog?: () => Promise<{ pending: number; oldestAge: number }>;
  /** Seeder nodes with a heartbeat in the last 30 s (all nodes, from the database). */
  nodesAlive?: () => Promise<number>;
  torrentsSeeding?: () => number;
  /** BitTorrent peers connected to this node's seeded torrents. */
  peers?: () => number;
  /** Bytes uploaded to BitTorrent peers since the process started (monotonic). */
  peerUploadBytes?: () => number;
  /** This node's content store (blobs and their bytes). */
  store?: () => { blobs: number; bytes: number };
}

export class Metrics {
  readonly registry = new Registry();
  sources: MetricSources = {};
  private peerUploadSeen = 0;

  readonly requestsTotal = new Counter({
    name: "proxytorrent_requests_total",
    help: "Jobs reaching a final state on this node, by status (ready, error, cancelled)",
    labelNames: ["status"] as const,
    registers: [this.registry],
  });
  readonly requestsCreated = new Counter({
    name: "proxytorrent_requests_created_total",
    help: "Requests accepted by this API, by how they were satisfied (fetch, inflight, cache)",
    labelNames: ["source"] as const,
    registers: [this.registry],
  });
  readonly quotaRefusals = new Counter({
    name: "proxytorrent_quota_refusals_total",
    help: "Requests this API refused because the tenant was at a quota (bytes = stored bytes, active = active requests)",
    labelNames: ["quota"] as const,
    registers: [this.registry],
  });
  readonly leaseExpired = new Counter({
    name: "proxytorrent_lease_expired_total",
    help: "Jobs this node claimed after another node's lease expired, plus leases this node lost",
    registers: [this.registry],
  });
  readonly fetchBytes = new Counter({
    name: "proxytorrent_fetch_bytes_total",
    help: "Body bytes fetched from origins and stored",
    registers: [this.registry],
  });
  readonly fetchDuration = new Histogram({
    name: "proxytorrent_fetch_duration_seconds",
    help: "Time to fetch and store one body",
    labelNames: ["outcome"] as const,
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });
  readonly readyDuration = new Histogram({
    name: "proxytorrent_job_ready_seconds",
    help: "From the POST that created a job to the job being ready: queue wait, retries, fetch, scan and packaging (requests answered from the cache or an in-flight job are not counted)",
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600],
    registers: [this.registry],
  });
  readonly fetchErrors = new Counter({
    name: "proxytorrent_fetch_errors_total",
    help: "Failed job attempts by error code and outcome (retry = queued again, final = the job ended in error)",
    labelNames: ["code", "outcome"] as const,
    registers: [this.registry],
  });
  readonly integrityChecks = new Counter({
    name: "proxytorrent_integrity_checks_total",
    help: "Bodies checked against a digest: the caller's expected_sha256 or the origin's Content-Digest, Repr-Digest, Content-MD5 (kind), by outcome (ok, mismatch)",
    labelNames: ["kind", "outcome"] as const,
    registers: [this.registry],
  });
  readonly scansTotal = new Counter({
    name: "proxytorrent_scans_total",
    help: "Virus scans of fetched bodies by verdict (clean, infected, unscanned when clamd failed and SCAN__FAIL_OPEN let it through, failed when it refused the body, cached when an earlier verdict of the same signature version was reused)",
    labelNames: ["verdict"] as const,
    registers: [this.registry],
  });
  readonly scanDuration = new Histogram({
    name: "proxytorrent_scan_duration_seconds",
    help: "Time clamd took to scan one body",
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });
  readonly blobsRemoved = new Counter({
    name: "proxytorrent_blobs_removed_total",
    help: "Blobs this node deleted from its content store because no live request needed them any more",
    registers: [this.registry],
  });
  readonly gcRuns = new Counter({
    name: "proxytorrent_gc_runs_total",
    help: "Garbage-collection ticks this node ran (STORAGE__GC_INTERVAL_SECONDS)",
    registers: [this.registry],
  });
  readonly gcPurgedRows = new Counter({
    name: "proxytorrent_gc_purged_rows_total",
    help: "Database rows this node's garbage collection deleted, by table",
    labelNames: ["table"] as const,
    registers: [this.registry],
  });
  readonly gcDuration = new Histogram({
    name: "proxytorrent_gc_duration_seconds",
    help: "Time of one garbage-collection tick (row purge and store sweep)",
    buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly uploadBytes: Counter<"via">;
  readonly webhookDeliveries = new Counter({
    name: "proxytorrent_webhook_deliveries_total",
    help: "Webhook delivery attempts by outcome",
    labelNames: ["outcome"] as const,
    registers: [this.registry],
  });
  readonly httpDuration = new Histogram({
    name: "proxytorrent_http_request_duration_seconds",
    help: "HTTP requests served, by route pattern and status",
    labelNames: ["route", "method", "status"] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });

  constructor() {
    const self = this;
    this.uploadBytes = new Counter({
      name: "proxytorrent_upload_bytes_total",
      help: "Bytes uploaded to BitTorrent peers (via=peer) and web-seed clients (via=webseed)",
      labelNames: ["via"] as const,
      registers: [this.registry],
      collect() {
        const total = self.sources.peerUploadBytes?.();
        if (total !== undefined && total > self.peerUploadSeen) {
          this.inc({ via: "peer" }, total - self.peerUploadSeen);
          self.peerUploadSeen = total;
        }
      },
    });
    new Gauge({
      name: "proxytorrent_queue_depth",
      help: "Jobs waiting to be claimed (all nodes)",
      registers: [this.registry],
      async collect() {
        if (self.sources.queueDepth) this.set(await self.sources.queueDepth());
      },
    });
    new Gauge({
      name: "proxytorrent_queue_oldest_age_seconds",
      help: "Age of the oldest job waiting to be claimed (all nodes; 0 when none waits)",
      registers: [this.registry],
      async collect() {
        if (self.sources.queueOldestAge) this.set(await self.sources.queueOldestAge());
      },
    });
    new Gauge({
      name: "proxytorrent_webhook_backlog",
      help: "Webhook deliveries not yet delivered or given up (all nodes)",
      registers: [this.registry],
      async collect() {
        if (self.sources.webhookBacklog) this.set((await self.sources.webhookBacklog()).pending);
      },
    });
    new Gauge({
      name: "proxytorrent_webhook_oldest_pending_age_seconds",
      help: "Age of the oldest webhook delivery not yet delivered or given up (all nodes; 0 when none): the delivery lag",
      registers: [this.registry],
      async collect() {
        if (self.sources.webhookBacklog) this.set((await self.sources.webhookBacklog()).oldestAge);
      },
    });
    new Gauge({
      name: "proxytorrent_nodes_alive",
      help: "Seeder nodes that sent a heartbeat in the last 30 s (all nodes, from the database)",
      registers: [this.registry],
      async collect() {
        if (self.sources.nodesAlive) this.set(await self.sources.nodesAlive());
      },
    });
    new Gauge({
      name: "proxytorrent_torrents_seeding",
      help: "Torrents this node seeds",
      registers: [this.registry],
      collect() {
        if (self.sources.torrentsSeeding) this.set(self.sources.torrentsSeeding());
      },
    });
    new Gauge({
      name: "proxytorrent_peers",
      help: "BitTorrent peers connected to the torrents this node seeds",
      registers: [this.registry],
      collect() {
        if (self.sources.peers) this.set(self.sources.peers());
      },
    });
    new Gauge({
      name: "proxytorrent_store_bytes",
      help: "Bytes of content in this node's store",
      registers: [this.registry],
      collect() {
        if (self.sources.store) this.set(self.sources.store().bytes);
      },
    });
    new Gauge({
      name: "proxytorrent_store_blobs",
      help: "Blobs (distinct contents) in this node's store",
      registers: [this.registry],
      collect() {
        if (self.sources.store) this.set(self.sources.store().blobs);
      },
    });
    collectDefaultMetrics({ register: this.registry, prefix: "proxytorrent_process_" });
    // Under Bun, perf_hooks' event-loop delay histogram never fills, and prom-client then prints
    // "Nan", which is not valid exposition format (scrapers reject the whole page). The heap-space
    // gauges walk the whole heap under Bun: ~8 ms of blocked event loop per scrape.
    // prom-client names the sums of its active handle/request/resource gauges `*_total`, which
    // `promtool check metrics` rejects (only counters may end in _total); they are dropped, as the
    // per-type gauges of the same name without `_total` remain and sum() over them gives the same.
    for (const name of this.registry.getMetricsAsArray().map((m) => m.name))
      if (
        name.includes("eventloop_lag") ||
        name.includes("heap_space_size") ||
        /^proxytorrent_process_nodejs_active_\w+_total$/.test(name)
      )
        this.registry.removeSingleMetric(name);
  }

  /**
   * Free disk space of this node's store, registered only by a process that has a node: an API
   * alone would report an unset gauge as 0 free bytes, which the disk-margin alert reads as full.
   */
  watchStoreFree(read: () => Promise<number>): void {
    new Gauge({
      name: "proxytorrent_store_free_bytes",
      help: "Bytes free for this node on the disk of its content store (what STORAGE__MIN_FREE_BYTES is kept from)",
      registers: [this.registry],
      async collect() {
        this.set(await read());
      },
    });
  }

  async response(): Promise<Response> {
    return new Response(await this.registry.metrics(), {
      headers: { "content-type": this.registry.contentType },
    });
  }
}
