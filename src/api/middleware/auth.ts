/**
 * Authentication and scopes for the v1 routes. A request authenticates with exactly one of:
 *
 * 1. an RFC 9421 signature (`Signature-Input` + `Signature` + `Content-Digest`, keyed by an API key):
 *    binds method, path, query and body, fresh `created`, one-time nonce (src/auth/signature.ts);
 * 2. `Authorization: Bearer <value>`, where the value is a static SECURITY__BEARER_TOKENS entry, an
 *    API key (`pt_<id>_<secret>`), or a JWT when SECURITY__JWT_SECRET / SECURITY__JWKS_URL is set;
 * 3. only with SECURITY__LEGACY_BODY_HMAC=true: the original's `X-Signature` = hex HMAC-SHA256(raw
 *    body, SECURITY__HMAC_SECRET). Replayable; for old clients only.
 *
 * Failed attempts are counted per client IP in the database; past RATE_LIMIT__AUTH_FAILURES_PER_IP_MINUTE
 * the IP gets 429 for the rest of the minute before any credential is looked at, which is what
 * makes guessing a weak static token or legacy secret slow. Credentials are never logged.
 */
import type { Context, MiddlewareHandler } from "hono";
import { ipBucket } from "../../auth/client-ip";
import { hmacSha256, safeEqual, sha256, sha256Hex, timingSafeEqual, toHex } from "../../auth/crypto";
import { createJwtVerifier, looksLikeJwt } from "../../auth/jwt";
import { VerifiedKeyCache } from "../../auth/key-cache";
import { markKeyUsed, signingKey } from "../../auth/keys";
import { rememberNonce } from "../../auth/nonces";
import { ANONYMOUS, type AuthScheme, hasScope, makePrincipal, type Principal } from "../../auth/principal";
import { type Bucket, peek, record } from "../../auth/rate-limits";
import { DEFAULT_SCOPES, type Scope } from "../../auth/scopes";
import { hasMessageSignature, verifySignedRequest } from "../../auth/signature";
import type { AppDeps, AppEnv } from "../app";
import { ApiError } from "../errors";

export type { Principal } from "../../auth/principal";

const GENERIC_401 = "Invalid or missing authentication";
const CLEAN_VERDICT_MS = 1000;

const unauthorized = (detail = GENERIC_401) => new ApiError(401, detail, { "WWW-Authenticate": "Bearer" });

type Outcome = { principal: Principal } | { scheme: AuthScheme | "missing"; reason: string; detail?: string };

/** Build once per app (src/api/app.ts): the JWT verifier's JWKS cache and the lock-out memo live here. */
export function auth(deps: Pick<AppDeps, "db" | "clock" | "config" | "log">): MiddlewareHandler<AppEnv> {
  const { db, clock, config, log } = deps;
  const sec = config.security;
  const jwt = sec.jwt ? createJwtVerifier(sec.jwt) : null;
  // Static tokens by their SHA-256, computed once: a request hashes only the token it presents
  // and compares digests in constant time (as safeEqual would, without re-hashing every known
  // token each time). The principal id is a hash too, never a prefix of the token.
  const tokens = sec.bearerTokens.map((t) => ({
    digest: sha256(t),
    id: sha256Hex(t).then((h) => `token:${h.slice(0, 16)}`),
  }));
  const keys = new VerifiedKeyCache(db, sec.apiKeyCacheMs, sec.keyEncryptionSecret);

  // "This IP is not locked out", remembered for a moment so a busy client does not cost a database
  // read per request. A failure here forgets it at once; failures counted by other processes show
  // up here at most CLEAN_VERDICT_MS late.
  const cleanUntil = new Map<string, number>();
  // The bucket of each client address, built once per address (parsing it is not free).
  const buckets = new Map<string | null, Bucket>();
  const failureBucket = (ip: string | null): Bucket => {
    let b = buckets.get(ip);
    if (!b) {
      if (buckets.size > 10_000) buckets.clear();
      b = {
        name: `authfail:ip:${ipBucket(ip)}`,
        limit: config.rateLimit.authFailuresPerIpMinute,
        windowMs: 60_000,
        message: "Rate limit exceeded: too many failed authentication attempts from IP",
      };
      buckets.set(ip, b);
    }
    return b;
  };

  async function bySignature(c: Context<AppEnv>): Promise<Outcome> {
    const now = clock.now();
    // Set by findKey during verification; read once the signature verified.
    const seen: { key: Awaited<ReturnType<typeof signingKey>> } = { key: null };
    const res = await verifySignedRequest(
      { method: c.req.method, url: c.req.url, headers: c.req.raw.headers },
      // Read only once the signature verified (the body limit already bounds it).
      async () => new Uint8Array(await c.req.arrayBuffer()),
      {
        now,
        windowSeconds: sec.signatureWindowSeconds,
        findKey: async (id) => {
          seen.key = await signingKey(db, id, sec.keyEncryptionSecret);
          return seen.key?.hmacKey ?? null;
        },
        rememberNonce: (id, nonce, until) => rememberNonce(db, id, nonce, until, now),
      },
    );
    if (!res.ok || !seen.key) {
      const reason = res.ok ? "key vanished" : res.reason;
      return { scheme: "signature", reason, detail: `Invalid signature: ${reason}` };
    }
    const { key } = seen.key;
    await markKeyUsed(db, key.id, now);
    return { principal: makePrincipal(key.tenant, key.scopes, "signature", key.id) };
  }

  async function byBearer(token: string): Promise<Outcome | null> {
    if (tokens.length) {
      const presented = await sha256(token);
      for (const t of tokens) {
        if (timingSafeEqual(presented, await t.digest))
          return { principal: makePrincipal(await t.id, DEFAULT_SCOPES, "token") };
      }
    }
    if (token.startsWith("pt_")) {
      const key = await keys.verify(token, clock.now());
      if (key) return { principal: makePrincipal(key.tenant, key.scopes, "key", key.id) };
      return { scheme: "key", reason: "unknown, revoked or wrong API key" };
    }
    if (jwt && looksLikeJwt(token)) {
      const res = await jwt(token, clock.now());
      return res.ok ? { principal: res.principal } : { scheme: "jwt", reason: res.reason };
    }
    return null;
  }

  async function byLegacyHmac(c: Context<AppEnv>, signature: string): Promise<Outcome> {
    const body = new Uint8Array(await c.req.arrayBuffer());
    const expected = toHex(await hmacSha256(sec.hmacSecret!, body));
    if (await safeEqual(signature, expected))
      return { principal: makePrincipal("hmac:legacy", DEFAULT_SCOPES, "legacy-hmac") };
    return { scheme: "legacy-hmac", reason: "X-Signature does not match the body" };
  }

  async function authenticate(c: Context<AppEnv>): Promise<Outcome> {
    if (hasMessageSignature(c.req.raw.headers)) return bySignature(c);
    let failure: Outcome | null = null;
    const header = c.req.header("authorization");
    const bearer = header && /^bearer /i.test(header) ? header.slice(7).trim() : null;
    if (bearer) {
      const res = await byBearer(bearer);
      if (res && "principal" in res) return res;
      failure = res ?? { scheme: "token", reason: "unknown bearer token" };
    }
    // As in the original, a bearer value that did not match falls through to X-Signature.
    const signature = c.req.header("x-signature");
    if (signature && sec.legacyBodyHmac && sec.hmacSecret) return byLegacyHmac(c, signature);
    if (signature && !failure)
      failure = { scheme: "legacy-hmac", reason: "X-Signature given but SECURITY__LEGACY_BODY_HMAC is off" };
    return failure ?? { scheme: "missing", reason: "no credentials" };
  }

  return async (c, next) => {
    if (!sec.authEnabled) {
      c.set("principal", ANONYMOUS);
      return next();
    }
    const ip = c.get("clientIp") ?? null;
    const limited = config.rateLimit.enabled;
    const bucket = failureBucket(ip);
    if (limited && !((cleanUntil.get(bucket.name) ?? 0) > clock.now())) {
      const s = await peek(db, bucket, clock.now());
      if (!s.allowed) {
        const retry = String(Math.max(1, Math.ceil((s.resetAt - clock.now()) / 1000)));
        throw new ApiError(429, s.bucket.message, { "Retry-After": retry });
      }
      if (cleanUntil.size > 10_000) cleanUntil.clear();
      cleanUntil.set(bucket.name, clock.now() + CLEAN_VERDICT_MS);
    }
    const outcome = await authenticate(c);
    if ("principal" in outcome) {
      c.set("principal", outcome.principal);
      return next();
    }
    if (limited) {
      cleanUntil.delete(bucket.name);
      await record(db, bucket, clock.now());
    }
    log.info("authentication failed", {
      request_id: c.get("requestId"),
      scheme: outcome.scheme,
      reason: outcome.reason,
      client_ip: ip,
    });
    throw unauthorized(outcome.detail);
  };
}

/** 403 unless the principal holds the scope (admin holds every scope). */
export function requireScope(scope: Scope): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    if (!hasScope(c.get("principal"), scope)) throw new ApiError(403, `Missing scope: ${scope}`);
    return next();
  };
}
