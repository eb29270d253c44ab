/**
 * Which webhook URLs may be used: the egress guard, as for fetches, with the operator's deny list
 * but not the fetch allow list (that one names origins; receivers are the callers' own servers).
 * At create time only what the URL itself says can be judged (IP literals, internal names); names
 * are resolved and every address is judged again when a node delivers.
 */
import type { Config } from "../config";
import { createEgressPolicy, type EgressPolicy, EgressRefusedError, parseAndCheckTarget } from "../egress";

export function webhookEgressPolicy(config: Config): EgressPolicy {
  return createEgressPolicy({
    allowPrivateNetworks: config.egress.allowPrivateNetworks,
    urlDenylist: config.fetcher.urlDenylist,
  });
}

/** Why `url` may not receive webhooks (caller-readable), or null when it may. */
export function webhookUrlRefusal(url: string, policy: EgressPolicy): string | null {
  try {
    parseAndCheckTarget(url, policy);
    return null;
  } catch (e) {
    if (e instanceof EgressRefusedError) return e.message;
    throw e;
  }
}
