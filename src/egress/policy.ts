/**
 * The egress guard: one decision for every outgoing request (a fetch, each redirect hop, and
 * later webhooks), in two steps.
 *
 * 1. `checkTarget` before any network activity: scheme, user info, operator allow/deny lists,
 *    internal and metadata names, and IP literals (however they are spelled).
 * 2. `checkAddresses` after the caller resolved the name itself: every address must pass, and
 *    the caller must then connect to one of exactly these addresses (no second lookup, so a DNS
 *    answer that changes between check and connect - DNS rebinding - cannot slip through).
 *
 * With a `socks5h` proxy the proxy resolves names, so step 2 cannot run: the guard can judge only
 * IP literals and the names in step 1, and the proxy's own network is only as safe as the proxy's
 * own rules. `socks5` (resolve here, send the address) keeps the full guard.
 *
 * Pure: runs on Workers and Bun.
 */
import {
  type AddressClass,
  type AddressInfo,
  addressRefusal,
  classifyAddress,
  describeAddressClass,
  PRIVATE_NETWORK_CLASSES,
} from "./address";
import {
  addressMatchesPattern,
  allowlistNeedsAddresses,
  checkHostLists,
  compileHostPatterns,
  type HostPattern,
  internalHostnameKind,
} from "./hosts";
import { parseTargetUrl, type TargetUrl, TargetUrlError } from "./url";

export interface EgressPolicy {
  allowPrivateNetworks: boolean;
  allow: HostPattern[];
  deny: HostPattern[];
}

export interface EgressPolicySettings {
  allowPrivateNetworks: boolean;
  urlAllowlist?: readonly string[];
  urlDenylist?: readonly string[];
}

export function createEgressPolicy(s: EgressPolicySettings): EgressPolicy {
  return {
    allowPrivateNetworks: s.allowPrivateNetworks,
    allow: compileHostPatterns(s.urlAllowlist ?? []),
    deny: compileHostPatterns(s.urlDenylist ?? []),
  };
}

export type RefusalReason =
  | "bad_url"
  | "denylisted"
  | "not_allowlisted"
  | "internal_name"
  | "metadata_name"
  | "address"
  | "no_address";

export interface EgressRefusal {
  reason: RefusalReason;
  /** For `address`: the class of the first refused address. */
  addressClass?: AddressClass;
  /** Safe to show a caller: names the host, never a resolved address or any internal detail. */
  message: string;
}

export class EgressRefusedError extends Error {
  constructor(readonly refusal: EgressRefusal) {
    super(refusal.message);
    this.name = "EgressRefusedError";
  }
}

function refuse(reason: RefusalReason, message: string, addressClass?: AddressClass): EgressRefusal {
  return addressClass ? { reason, message, addressClass } : { reason, message };
}

/*
 * Each refusal that a setting could lift names that setting, so the operator reading a log line
 * (or a caller passing on an error_message) knows what to change. Addresses that no setting
 * opens (metadata, multicast, reserved…) get no such hint.
 */
const PRIVATE_HINT =
  "; this service does not fetch private networks (its operator can allow them with EGRESS__ALLOW_PRIVATE_NETWORKS=true)";
const DENY_HINT = " (FETCHER__URL_DENYLIST)";
const ALLOW_HINT = " (FETCHER__URL_ALLOWLIST)";

function addressRefusalMessage(subject: string, cls: AddressClass): string {
  return `Refused: ${subject} ${describeAddressClass(cls)}${PRIVATE_NETWORK_CLASSES.has(cls) ? PRIVATE_HINT : ""}`;
}

/** Step 1: judge a parsed URL before any DNS lookup or connection. Null means "go on". */
export function checkTarget(target: TargetUrl, policy: EgressPolicy): EgressRefusal | null {
  const host = target.hostname;
  const lists = checkHostLists(host, policy);
  if (!lists.allowed)
    return lists.reason === "denylisted"
      ? refuse("denylisted", `Refused: ${host} is on this service's deny list${DENY_HINT}`)
      : refuse("not_allowlisted", `Refused: ${host} is not on this service's allow list${ALLOW_HINT}`);
  if (target.ip) {
    const info = classifyAddress(target.ip.address);
    const cls = addressRefusal(info, policy);
    if (cls) return refuse("address", addressRefusalMessage(`${host} is`, cls), cls);
    return null;
  }
  const kind = internalHostnameKind(host);
  if (kind === "metadata") return refuse("metadata_name", `Refused: ${host} is a cloud metadata service`);
  if (kind === "internal" && !policy.allowPrivateNetworks)
    return refuse("internal_name", `Refused: ${host} names a host inside a private network${PRIVATE_HINT}`);
  return null;
}

/**
 * Step 1 where step 2 will not run (a `socks5h` proxy resolves the name): a name that only its
 * addresses could admit to the allow list is refused, since they are never seen here.
 */
export function checkUnresolvedName(target: TargetUrl, policy: EgressPolicy): EgressRefusal | null {
  if (target.ip || !allowlistNeedsAddresses(target.hostname, policy)) return null;
  return refuse(
    "not_allowlisted",
    `Refused: ${target.hostname} is not on this service's allow list${ALLOW_HINT}`,
  );
}

/** Parse a raw URL and run step 1; throws EgressRefusedError on any refusal (bad URLs included). */
export function parseAndCheckTarget(raw: string, policy: EgressPolicy, base?: string | URL): TargetUrl {
  let target: TargetUrl;
  try {
    target = parseTargetUrl(raw, base);
  } catch (e) {
    if (e instanceof TargetUrlError) throw new EgressRefusedError(refuse("bad_url", e.message));
    throw e;
  }
  const refusal = checkTarget(target, policy);
  if (refusal) throw new EgressRefusedError(refusal);
  return target;
}

/**
 * Why `raw` is refused before any lookup (caller-readable), or null when it may go on. The API's
 * check of a new request's `url` and of a webhook URL: names that need resolving are judged later.
 */
export function targetUrlRefusal(raw: string, policy: EgressPolicy): string | null {
  try {
    parseAndCheckTarget(raw, policy);
    return null;
  } catch (e) {
    if (e instanceof EgressRefusedError) return e.message;
    throw e;
  }
}

/**
 * Step 2: judge every address a name resolved to. Refuses if ANY is not allowed (an attacker's
 * name may list a public and a private address, hoping the connect picks the private one).
 * Returns the classified addresses to connect to, in the resolver's order.
 */
export function checkAddresses(
  host: string,
  addresses: readonly string[],
  policy: EgressPolicy,
): { ok: true; addresses: AddressInfo[] } | { ok: false; refusal: EgressRefusal } {
  if (addresses.length === 0)
    return { ok: false, refusal: refuse("no_address", `Could not resolve ${host}`) };
  const infos = addresses.map(classifyAddress);
  // The operator's lists apply to what the name resolved to, as to a literal in the URL: any
  // denied address refuses the name; a name admitted only by IP/CIDR allow entries needs all of
  // its addresses inside them.
  if (addresses.some((a) => policy.deny.some((p) => addressMatchesPattern(a, p))))
    return {
      ok: false,
      refusal: refuse(
        "denylisted",
        `Refused: ${host} resolves to an address on this service's deny list${DENY_HINT}`,
      ),
    };
  if (
    allowlistNeedsAddresses(host, policy) &&
    !addresses.every((a) => policy.allow.some((p) => addressMatchesPattern(a, p)))
  )
    return {
      ok: false,
      refusal: refuse("not_allowlisted", `Refused: ${host} is not on this service's allow list${ALLOW_HINT}`),
    };
  for (const info of infos) {
    const cls = addressRefusal(info, policy);
    if (cls)
      return {
        ok: false,
        refusal: refuse("address", addressRefusalMessage(`${host} resolves to`, cls), cls),
      };
  }
  return { ok: true, addresses: infos };
}
