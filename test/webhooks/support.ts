/**
 * Shared set-up for webhook tests: a real libSQL file, a clock the test moves, requests brought to
 * ready / error through the real queue functions, and a delivery loop run on demand.
 */
import { eq } from "drizzle-orm";
import type { Dial, Resolve } from "../../seeder/node/fetcher/connect";
import { WebhookDeliverer } from "../../seeder/node/webhooks";
import type { Env } from "../../src/config";
import { webhookDeliveries } from "../../src/db/schema";
import { advance, claimJobs, completeJob, failJob } from "../../src/jobs/queue";
import { silentLogger } from "../../src/log";
import { createRequest, type NewRequest } from "../../src/requests/service";
import { generateSecret } from "../../src/webhooks/signing";
import { manualClock, tempDatabase } from "../support/db";

export const SECRET = generateSecret();
export const CONTENT_HASH = "ab".repeat(32);
export const INFOHASH = "cd".repeat(20);
export const MAGNET = `magnet:?xt=urn:btih:${INFOHASH}&dn=file.txt&xl=1234`;

const base: NewRequest = {
  url: "http://origin.test/file.txt",
  method: "GET",
  headers: null,
  body: null,
  ttl: 3600,
  userId: "tenant-a",
  clientIp: null,
  requestId: null,
  maxAttempts: 3,
};

export async function setup(env: Env = {}, send: { resolve?: Resolve; dial?: Dial } = {}) {
  const t = await tempDatabase({
    WEBHOOK__SECRET: SECRET,
    WEBHOOK__RETRY_DELAYS: "1,1,1",
    EGRESS__ALLOW_PRIVATE_NETWORKS: "true",
    ...env,
  });
  // Real time as the start: receivers check webhook-timestamp against their own clock.
  const clock = manualClock(Date.now());
  const deliverer = new WebhookDeliverer({ config: t.config, db: t.db, clock, log: silentLogger, send });

  const request = (over: Partial<NewRequest> = {}) => createRequest(t.db, clock, { ...base, ...over });

  /** Claim the next job and run it to ready (a made-up torrent). */
  async function finishNextJob(nodeName = "node-a") {
    const [job] = await claimJobs(t.db, clock, { nodeName, limit: 1, leaseMs: 30_000 });
    if (!job) throw new Error("no job to claim");
    const lease = { id: job.id, leaseToken: job.leaseToken! };
    await advance(t.db, clock, lease, {
      contentHash: CONTENT_HASH,
      contentSize: 1234,
      infohash: INFOHASH,
      magnetLink: MAGNET,
      status: "seeding",
      progress: 80,
    });
    return { job, lease, outcome: await completeJob(t.db, clock, lease, nodeName) };
  }

  /** Run every queued job to ready. */
  async function finishAll() {
    for (;;) {
      const [job] = await claimJobs(t.db, clock, { nodeName: "node-a", limit: 1, leaseMs: 30_000 });
      if (!job) return;
      const lease = { id: job.id, leaseToken: job.leaseToken! };
      await advance(t.db, clock, lease, {
        contentHash: CONTENT_HASH,
        contentSize: 1234,
        infohash: INFOHASH,
        magnetLink: MAGNET,
      });
      await completeJob(t.db, clock, lease, "node-a");
    }
  }

  async function failNextJob() {
    const [job] = await claimJobs(t.db, clock, { nodeName: "node-a", limit: 1, leaseMs: 30_000 });
    if (!job) throw new Error("no job to claim");
    return failJob(
      t.db,
      clock,
      { id: job.id, leaseToken: job.leaseToken!, attempts: job.attempts, maxAttempts: job.maxAttempts },
      { code: "http_status", message: "Origin answered 404 Not Found", transient: false },
    );
  }

  const deliveries = (requestId?: string) =>
    requestId
      ? t.db.select().from(webhookDeliveries).where(eq(webhookDeliveries.requestId, requestId))
      : t.db.select().from(webhookDeliveries);

  return { ...t, clock, deliverer, request, finishNextJob, finishAll, failNextJob, deliveries };
}
