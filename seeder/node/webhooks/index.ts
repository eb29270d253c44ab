/** Webhook delivery on a node: started next to the job loop by seeder/process/start.ts. */
import type { Clock } from "../../../src/clock";
import type { Config } from "../../../src/config";
import type { Database } from "../../../src/db";
import type { Logger } from "../../../src/log";
import type { Metrics } from "../../process/metrics";
import { WebhookDeliverer } from "./deliverer";

export { WebhookDeliverer } from "./deliverer";

export function startWebhookDelivery(
  config: Config,
  db: Database,
  clock: Clock,
  log: Logger,
  metrics: Metrics | null,
): WebhookDeliverer {
  const d = new WebhookDeliverer({
    config,
    db,
    clock,
    log: log.child({ component: "webhooks" }),
    metrics: metrics ?? undefined,
  });
  d.start();
  return d;
}
