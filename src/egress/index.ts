/**
 * Egress guard: which destinations an outgoing request may reach. Pure (no `node:*`), shared by
 * the seeder's fetcher and anything on Workers that sends requests (webhooks).
 */
export {
  type AddressClass,
  classifyAddress,
  isForbiddenAddress,
} from "./address";
export {
  checkHostLists,
  compileHostPatterns,
  hostMatches,
  internalHostnameKind,
} from "./hosts";
export {
  checkAddresses,
  checkTarget,
  checkUnresolvedName,
  createEgressPolicy,
  type EgressPolicy,
  type EgressPolicySettings,
  EgressRefusedError,
  parseAndCheckTarget,
  targetUrlRefusal,
} from "./policy";
export { parseTargetUrl, type TargetUrl } from "./url";
