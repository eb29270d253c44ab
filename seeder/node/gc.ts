/**
 * The node's garbage collector: a tick at start and every STORAGE__GC_INTERVAL_SECONDS after the
 * previous one ended (ticks never overlap). Each tick
 * 1. purges rows past their retention (src/jobs/purge.ts: bounded batches, a time budget), first,
 *    so that content whose last job just went is freed by the same tick;
 * 2. sweeps the content store (blob-release.ts): blobs no live job of this node needs go, under
 *    the per-hash lock and pins that keep a concurrent fetch's blob safe.
 * No leader: each node sweeps only its own store, and the row purges are safe on N nodes at once.
 * A tick logs one line only when it removed something.
 */
import type { Clock } from "../../src/clock";
import type { Config } from "../../src/config";
import type { Database } from "../../src/db";
import { type PURGED_TABLES, purgeRows } from "../../src/jobs/purge";
import type { Logger } from "../../src/log";
import type { Metrics } from "../process/metrics";
import { type BlobReleaseDeps, sweepBlobs } from "./blob-release";

/**
 * What this node's content store holds, for the `proxytorrent_store_*` gauges: exact after each
 * sweep (which lists every blob it keeps and stats those it does not know yet), and kept current
 * in between by the node telling it of each blob a job stores and each removal. Hash -> size, so
 * a body stored twice counts once. Measured for 10,000 blobs (2 cores shared with other work,
 * so ranges): a sweep takes 170-490 ms (one readdir per fan-out folder, one query), stat'ing every
 * blob on the first tick 130-600 ms more; later ticks stat only blobs they have not seen, and
 * cost what the sweep costs. Summing the sizes at a scrape: under 0.1 ms.
 */
export class StoreUsage {
  private sizes = new Map<string, number>();
  // Changes made while a sweep walks the store: applied on top of what it found.
  private during: Map<string, number | null> | null = null;

  stored(hash: string, size: number): void {
    this.sizes.set(hash, size);
    this.during?.set(hash, size);
  }

  removed(hash: string): void {
    this.sizes.delete(hash);
    this.during?.set(hash, null);
  }

  /** The size of a blob known to be in the store. */
  sizeOf(hash: string): number | undefined {
    return this.sizes.get(hash);
  }

  /** A sweep starts walking the store. */
  scanning(): void {
    this.during = new Map();
  }

  /** The sweep's result: every blob it kept, with its size. */
  scanned(kept: Map<string, number>): void {
    for (const [hash, size] of this.during ?? []) {
      if (size === null) kept.delete(hash);
      else kept.set(hash, size);
    }
    this.sizes = kept;
    this.during = null;
  }

  get blobs(): number {
    return this.sizes.size;
  }

  get bytes(): number {
    let total = 0;
    for (const size of this.sizes.values()) total += size;
    return total;
  }
}

export interface GcDeps {
  config: Config;
  db: Database;
  clock: Clock;
  log: Logger;
  metrics?: Metrics;
  usage: StoreUsage;
  /** The blob-release dependencies as of now (what the node seeds changes). */
  blobs: () => BlobReleaseDeps;
}

export interface GcTick {
  rows: Partial<Record<(typeof PURGED_TABLES)[number], number>>;
  blobsRemoved: number;
  bytesFreed: number;
  ms: number;
}

export class GarbageCollector {
  private timer: ReturnType<typeof setTimeout> | null = null;
  private running: Promise<unknown> | null = null;
  private stopped = true;

  constructor(private readonly deps: GcDeps) {}

  /** The first tick now (it is the start-up sweep), then one every interval. */
  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.running;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.running = this.tick()
        .catch((e) => this.deps.log.warn("garbage collection failed", { err: String(e) }))
        .finally(() => {
          this.running = null;
          this.schedule(this.deps.config.storage.gcIntervalMs);
        });
    }, ms);
  }

  /** One tick (also called by tests). */
  async tick(): Promise<GcTick> {
    const { config, db, clock, log, metrics, usage } = this.deps;
    const t0 = performance.now();
    const { counts } = await purgeRows(
      db,
      clock,
      {
        historyMs: config.storage.historyRetentionMs,
        webhookMs: config.storage.webhookRetentionMs,
        nodeMs: config.storage.nodeRetentionMs,
      },
      { stopped: () => this.stopped },
    );
    usage.scanning();
    const swept = await sweepBlobs(this.deps.blobs(), () => this.stopped, usage);
    const ms = performance.now() - t0;
    metrics?.gcRuns.inc();
    metrics?.gcDuration.observe(ms / 1000);
    for (const [table, n] of Object.entries(counts)) metrics?.gcPurgedRows.inc({ table }, n);
    if (swept.removed > 0 || Object.keys(counts).length > 0)
      log.info("garbage collected", {
        rows: counts,
        blobs_removed: swept.removed,
        bytes_freed: swept.bytes,
        ms: Math.round(ms),
      });
    return { rows: counts, blobsRemoved: swept.removed, bytesFreed: swept.bytes, ms };
  }
}
