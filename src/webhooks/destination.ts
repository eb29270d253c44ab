/**
 * Which webhook URLs may be used: the egress guard, as for fetches, with the operator's deny list
 * but not the fetch allow list (that one names origins; receivers are the callers' own servers).
 * At create time only what the URL itself says can be judged (IP literals, internal names); names
 * are resolved and every address is judged again when a node delivers.
 */
import type { Config } from "../config";
import { createEgressPolicy, type EgressPolicy } from "../egress";

export function webhookEgressPolicy(config: Config): EgressPolicy {
  return createEgressPolicy({
    allowPrivateNetworks: config.egress.allowPrivateNetworks,
    urlDenylist: config.fetcher.urlDenylist,
  });
}
