/**
 * The loop a node runs for work it holds under a lease in the database: jobs (daemon.ts) and
 * webhook deliveries (webhooks/deliverer.ts). Claim as many items as there are free slots, run
 * each under its own AbortController, extend the lease while it runs (heartbeats), and when a run
 * is stopped from outside, let the work say what that means (cancel, note the lost lease, hand
 * it back). Between claims the loop waits for the poll interval or a wake().
 *
 * The lease itself lives in the claim and in every later write: each is fenced by the lease token
 * (src/jobs/queue.ts, src/webhooks/outbox.ts), so a node whose lease ran out cannot overwrite the
 * work of the node that claimed the item after it. A run learns it lost its lease from a fenced
 * write that matched no row (it throws LeaseLost) or from a heartbeat that found the lease gone.
 */
import type { Logger } from "../../src/log";

/** Why a running item was stopped from outside its own work. */
export type StopReason = "cancelled" | "lease_lost" | "shutdown";

/** Thrown by a run when a write fenced by its lease token matched no row: another node owns the item. */
export class LeaseLost extends Error {
  constructor() {
    super("lease lost");
    this.name = "LeaseLost";
  }
}

export interface LeasedWork<T extends { id: string }> {
  /** Items run at once. */
  concurrency: number;
  pollIntervalMs: number;
  log: Logger;
  /** Log lines of the loop itself, and the field that names an item in them. */
  messages: { claimFailed: string; crashed: string; idField: string };
  /** Claim up to `limit` items (each with a fresh lease token). */
  claim(limit: number): Promise<T[]>;
  /** After every claim round, whether or not it claimed anything. */
  afterClaim?(): Promise<void>;
  /** The logger of one run (its heartbeat warnings go there too). */
  logFor(item: T): Logger;
  /**
   * Extend the lease every `everyMs` while the item runs; a returned reason aborts the run.
   * Without it the claim's lease must cover the whole run.
   */
  heartbeat?: { everyMs: number; beat(item: T): Promise<Exclude<StopReason, "shutdown"> | null> };
  run(item: T, signal: AbortSignal, log: Logger): Promise<void>;
  /** The run threw after it was stopped, or on a lost lease: cancel, give up, or hand the item back. */
  stopped(item: T, reason: StopReason, log: Logger): Promise<void>;
  /** The run threw on its own. Without it the error is logged as a crash and the lease runs out. */
  failed?(item: T, error: unknown, log: Logger): Promise<void>;
}

export class LeasedWorkLoop<T extends { id: string }> {
  private running = false;
  private readonly active = new Map<string, { controller: AbortController; done: Promise<void> }>();
  private loop: Promise<void> | null = null;
  private wakeUp: (() => void) | null = null;

  constructor(private readonly work: LeasedWork<T>) {}

  /** Items running now. */
  get activeCount(): number {
    return this.active.size;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.pollLoop();
  }

  /** Look for work now instead of at the next poll. */
  wake(): void {
    this.wakeUp?.();
  }

  /** Stop claiming; running items are aborted as "shutdown" (handed back by `stopped`), then awaited. */
  async stop(): Promise<void> {
    this.running = false;
    this.wake();
    for (const { controller } of this.active.values()) controller.abort("shutdown" satisfies StopReason);
    await Promise.allSettled([...this.active.values()].map((a) => a.done));
    await this.loop;
  }

  /** Claim and run everything due now, waiting for each run (tests, one-shot use). Errors propagate. */
  async runDue(): Promise<number> {
    let total = 0;
    for (;;) {
      const claimed = await this.work.claim(this.work.concurrency);
      if (claimed.length === 0) return total;
      total += claimed.length;
      await Promise.all(claimed.map((item) => this.execute(item, new AbortController())));
    }
  }

  private async pollLoop(): Promise<void> {
    const { log, messages } = this.work;
    while (this.running) {
      const free = this.work.concurrency - this.active.size;
      let claimed: T[] = [];
      if (free > 0) {
        try {
          claimed = await this.work.claim(free);
        } catch (e) {
          log.error(messages.claimFailed, { err: String(e) });
        }
      }
      await this.work.afterClaim?.();
      for (const item of claimed) this.launch(item);
      if (claimed.length === free && free > 0) continue; // there may be more
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.work.pollIntervalMs);
        this.wakeUp = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wakeUp = null;
    }
  }

  private launch(item: T): void {
    const { log, messages } = this.work;
    const controller = new AbortController();
    const done = this.execute(item, controller)
      .catch((e) => log.error(messages.crashed, { [messages.idField]: item.id, err: String(e) }))
      .finally(() => {
        this.active.delete(item.id);
        this.wake();
      });
    this.active.set(item.id, { controller, done });
  }

  /** Run one item with heartbeats; a stop (or lost lease) goes to `stopped`, an error to `failed`. */
  private async execute(item: T, controller: AbortController): Promise<void> {
    const log = this.work.logFor(item);
    const hb = this.work.heartbeat;
    const beat =
      hb &&
      setInterval(async () => {
        try {
          const reason = await hb.beat(item);
          if (reason) controller.abort(reason);
        } catch (e) {
          log.warn("heartbeat failed", { err: String(e) });
        }
      }, hb.everyMs);
    try {
      await this.work.run(item, controller.signal, log);
    } catch (e) {
      // A lost lease wins over an abort: nothing this node writes for the item counts any more.
      const reason: StopReason | null =
        e instanceof LeaseLost
          ? "lease_lost"
          : controller.signal.aborted
            ? (controller.signal.reason as StopReason)
            : null;
      if (reason) await this.work.stopped(item, reason, log);
      else if (this.work.failed) await this.work.failed(item, e, log);
      else throw e;
    } finally {
      if (beat) clearInterval(beat);
    }
  }
}
