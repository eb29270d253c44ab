/**
 * The webhook delivery loop a node runs next to its job loop: claim due outbox rows with a lease,
 * sign each attempt (Standard Webhooks), POST it through the egress-guarded connection, record
 * the outcome fenced by the lease token. At least once: a message is marked delivered only after
 * a 2xx; a node that dies mid-attempt leaves a lease that runs out, and the row is claimed again
 * with the same `webhook-id`.
 *
 * Outcomes: 2xx delivered; 410 Gone fails the message and disables its endpoint; a refused
 * destination fails at once (retrying cannot help); anything else is retried after the next
 * WEBHOOK__RETRY_DELAYS step, or later if the receiver's Retry-After asks for it.
 */
import { eq } from "drizzle-orm";
import type { Clock } from "../../../src/clock";
import type { Config } from "../../../src/config";
import type { Database } from "../../../src/db";
import { type WebhookDelivery, type WebhookEndpoint, webhookEndpoints } from "../../../src/db/schema";
import type { Logger } from "../../../src/log";
import { ownerPayload } from "../../../src/torrents/access";
import { signingSecrets } from "../../../src/webhooks/endpoints";
import {
  type AttemptOutcome,
  claimDeliveries,
  type DeliveryLease,
  nextAttemptAt,
  parseRetryAfter,
  recordAttempt,
  releaseDelivery,
} from "../../../src/webhooks/outbox";
import { webhookHeaders } from "../../../src/webhooks/signing";
import type { Metrics } from "../../process/metrics";
import { LeasedWorkLoop } from "../leased-work";
import { createSender, type Sender, type SendOptions } from "./send";

export interface DelivererDeps {
  config: Config;
  db: Database;
  clock: Clock;
  log: Logger;
  metrics?: Metrics;
  /** Deliveries in flight at once on this node. Default 16. */
  concurrency?: number;
  /** Replaces the real HTTP client (tests); default: createSender with `send` options. */
  sender?: Sender;
  send?: Omit<SendOptions, "config">;
}

/**
 * Lease on one attempt. The send is bounded by WEBHOOK__TIMEOUT; the margin covers signing and
 * the writes around it. Should a write stall past the lease, another node may send the message
 * again (at least once), and this node's late outcome is refused by the token.
 */
export function deliveryLeaseMs(config: Config): number {
  return config.webhook.timeoutMs + 5_000;
}

export class WebhookDeliverer {
  private readonly loop: LeasedWorkLoop<WebhookDelivery>;
  private readonly send: Sender;
  readonly stats = { delivered: 0, retried: 0, failed: 0, leaseLost: 0 };

  constructor(private readonly deps: DelivererDeps) {
    this.send = deps.sender ?? createSender({ config: deps.config, ...deps.send });
    const { config, db, clock } = deps;
    // No heartbeat: the claim's lease covers the whole attempt (deliveryLeaseMs).
    this.loop = new LeasedWorkLoop<WebhookDelivery>({
      concurrency: deps.concurrency ?? 16,
      pollIntervalMs: config.node.pollIntervalMs,
      log: deps.log,
      messages: {
        claimFailed: "webhook claim failed",
        crashed: "webhook attempt crashed",
        idField: "delivery_id",
      },
      claim: (limit) =>
        claimDeliveries(db, clock, { nodeName: this.nodeName, limit, leaseMs: deliveryLeaseMs(config) }),
      logFor: (d) =>
        deps.log.child({
          delivery_id: d.id,
          event: d.eventType,
          request_id: d.traceId ?? undefined,
          attempt: d.attempts,
        }),
      run: (d, signal, log) => this.attempt(d, signal, log),
      // Only a shutdown stops an attempt from outside: hand it back without counting it.
      stopped: async (d, _reason, log) => {
        await releaseDelivery(db, clock, { id: d.id, leaseToken: d.leaseToken! });
        log.info("webhook attempt handed back (shutdown)");
      },
    });
  }

  get nodeName(): string {
    return this.deps.config.node.name;
  }

  start(): void {
    this.loop.start();
  }

  wake(): void {
    this.loop.wake();
  }

  /** Stop claiming; attempts in flight are aborted and handed back without counting. */
  stop(): Promise<void> {
    return this.loop.stop();
  }

  /** Claim and send everything due now, waiting for the attempts to finish (tests, one-shot use). */
  runDue(): Promise<number> {
    return this.loop.runDue();
  }

  /** Which secrets sign this delivery, or why it cannot be sent. */
  private async secretsFor(
    d: WebhookDelivery,
  ): Promise<{ secrets: string[] } | { fail: string } | { retry: string }> {
    const now = this.deps.clock.now();
    if (d.endpointId === null) {
      const secrets = this.deps.config.webhook.secrets;
      // Distributed mode: this node's configuration lacks what the API's had. Another node may have it.
      if (secrets.length === 0) return { retry: `WEBHOOK__SECRET is not set on node ${this.nodeName}` };
      return { secrets };
    }
    const rows: WebhookEndpoint[] = await this.deps.db
      .select()
      .from(webhookEndpoints)
      .where(eq(webhookEndpoints.id, d.endpointId));
    const e = rows[0];
    if (!e) return { fail: "Endpoint deleted" };
    if (e.disabledAt !== null) return { fail: `Endpoint disabled: ${e.disabledReason ?? "disabled"}` };
    return { secrets: signingSecrets(e, now) };
  }

  private async attempt(d: WebhookDelivery, signal: AbortSignal, log: Logger): Promise<void> {
    const { clock, config } = this.deps;
    const lease: DeliveryLease = { id: d.id, leaseToken: d.leaseToken! };
    const delays = config.webhook.retryDelaysMs;
    // One grace attempt beyond the schedule for a final attempt a dying node left unanswered.
    if (d.attempts > delays.length + 2) {
      await this.finish(lease, log, {
        outcome: "failed",
        statusCode: null,
        error: "Given up: the nodes sending this message kept stopping mid-attempt",
      });
      return;
    }
    const keys = await this.secretsFor(d);
    if ("fail" in keys) {
      await this.finish(lease, log, { outcome: "failed", statusCode: null, error: keys.fail });
      return;
    }
    if ("retry" in keys) {
      await this.finish(lease, log, this.retryOrFail(d, null, keys.retry, null));
      return;
    }

    // The same bytes on every attempt: the passkey of a request never changes.
    const payload = await ownerPayload(this.deps.db, config.torrent.access, d.requestId, d.payload);
    const headers = await webhookHeaders(keys.secrets, d.id, clock.now(), payload);
    if (d.traceId) headers["x-request-id"] = d.traceId;
    // Aborted (shutdown), the send throws and the loop hands the delivery back (`stopped`).
    const res = await this.send(d.url, headers, payload, signal);
    const code = res.statusCode;
    let outcome: AttemptOutcome;
    if (code !== null && code >= 200 && code < 300) outcome = { outcome: "delivered", statusCode: code };
    else if (code === 410)
      outcome = {
        outcome: "failed",
        statusCode: code,
        error: "The receiver answered 410 Gone",
        ...(d.endpointId ? { disableEndpoint: "the receiver answered 410 Gone" } : {}),
      };
    else if (res.permanent) outcome = { outcome: "failed", statusCode: null, error: res.error ?? "Refused" };
    else
      outcome = this.retryOrFail(
        d,
        code,
        res.error ?? `The receiver answered ${code}`,
        parseRetryAfter(res.retryAfter, clock.now()),
      );
    await this.finish(lease, log, outcome);
  }

  private retryOrFail(
    d: WebhookDelivery,
    statusCode: number | null,
    error: string,
    retryAfterMs: number | null,
  ): AttemptOutcome {
    const now = this.deps.clock.now();
    const next = nextAttemptAt(d.attempts, this.deps.config.webhook.retryDelaysMs, now, retryAfterMs);
    if (next === null)
      return { outcome: "failed", statusCode, error: `${error} (gave up after ${d.attempts} attempts)` };
    return { outcome: "retry", statusCode, error, nextAttemptAt: next };
  }

  private async finish(lease: DeliveryLease, log: Logger, outcome: AttemptOutcome): Promise<void> {
    const kept = await recordAttempt(this.deps.db, this.deps.clock, lease, outcome);
    if (!kept) {
      this.stats.leaseLost++;
      this.deps.metrics?.webhookDeliveries.inc({ outcome: "lease_lost" });
      log.warn("webhook lease lost; another node owns this message now");
      return;
    }
    if (outcome.outcome === "delivered") this.stats.delivered++;
    else if (outcome.outcome === "retry") this.stats.retried++;
    else this.stats.failed++;
    this.deps.metrics?.webhookDeliveries.inc({ outcome: outcome.outcome });
    const fields = {
      status_code: outcome.statusCode ?? undefined,
      ...(outcome.outcome === "delivered" ? {} : { error: outcome.error }),
      ...(outcome.outcome === "retry"
        ? { next_attempt_in_ms: outcome.nextAttemptAt - this.deps.clock.now() }
        : {}),
    };
    if (outcome.outcome === "delivered") log.info("webhook delivered", fields);
    else
      log.warn(outcome.outcome === "retry" ? "webhook attempt failed; will retry" : "webhook failed", fields);
  }
}
