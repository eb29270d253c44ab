/**
 * Egress guard: which destinations an outgoing request may reach. Pure (no `node:*`), shared by
 * the seeder's fetcher and anything on Workers that sends requests (webhooks).
 */
export {
  type AddressClass,
  type AddressInfo,
  type AddressPolicyOptions,
  addressForms,
  addressRefusal,
  classifyAddress,
  describeAddressClass,
  type EmbeddingForm,
  isForbiddenAddress,
  METADATA_ADDRESSES,
  PRIVATE_NETWORK_CLASSES,
} from "./address";
export {
  addressMatchesPattern,
  allowlistNeedsAddresses,
  checkHostLists,
  compileHostPatterns,
  type HostListVerdict,
  type HostPattern,
  hostMatches,
  internalHostnameKind,
  METADATA_HOSTNAMES,
  normaliseHost,
} from "./hosts";
export {
  checkAddresses,
  checkTarget,
  checkUnresolvedName,
  createEgressPolicy,
  type EgressPolicy,
  type EgressPolicySettings,
  type EgressRefusal,
  EgressRefusedError,
  parseAndCheckTarget,
  type RefusalReason,
  targetUrlRefusal,
} from "./policy";
export { parseTargetUrl, type TargetUrl, TargetUrlError, type UrlProblem } from "./url";
