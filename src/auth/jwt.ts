/**
 * JWT / OIDC bearer tokens, verified with jose: the algorithms are pinned (never taken from the
 * token), issuer and audience must match, `exp` and `sub` are required, and `alg: none` is never
 * accepted. Keys are a shared HS256 secret or an issuer's JWKS (fetched on demand, refetched when a
 * token names a kid it has not seen, so the issuer can rotate keys without a restart).
 *
 * The tenant is `jwt:<iss>:<sub>`. A `scope` (space-separated) or `scp` claim picks scopes; when it
 * names none of ours, SECURITY__JWT_DEFAULT_SCOPES apply.
 */
import { createRemoteJWKSet, errors, type JWTPayload, type JWTVerifyGetKey, jwtVerify } from "jose";
import type { JwtConfig } from "../config";
import { makePrincipal, type Principal } from "./principal";
import { parseScopes, type Scope } from "./scopes";

export type JwtResult = { ok: true; principal: Principal } | { ok: false; reason: string };
export type JwtVerifier = (token: string, now: number) => Promise<JwtResult>;

/** Tolerated clock difference with the issuer for exp/nbf/iat. */
const CLOCK_TOLERANCE_S = 30;

/** Looks like a compact JWS (three base64url parts)? Only such bearer values are tried as JWTs. */
export const looksLikeJwt = (s: string) => /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(s);

export function scopesFromClaims(payload: JWTPayload, defaults: readonly string[]): Scope[] {
  const raw = payload.scope ?? payload.scp;
  const named =
    typeof raw === "string"
      ? parseScopes(raw).scopes
      : Array.isArray(raw)
        ? parseScopes(raw.filter((x): x is string => typeof x === "string")).scopes
        : [];
  return named.length ? named : parseScopes(defaults).scopes;
}

function reasonOf(e: unknown): string {
  if (e instanceof errors.JWTExpired) return "token expired";
  if (e instanceof errors.JWTClaimValidationFailed) return `claim ${e.claim} invalid (${e.reason})`;
  if (e instanceof errors.JOSEAlgNotAllowed) return "algorithm not allowed";
  if (e instanceof errors.JWSSignatureVerificationFailed) return "signature does not verify";
  if (e instanceof errors.JWKSNoMatchingKey) return "no key with this kid";
  if (e instanceof errors.JWKSTimeout) return "JWKS fetch timed out";
  if (e instanceof errors.JOSEError) return e.code;
  return "invalid token";
}

export function createJwtVerifier(cfg: JwtConfig): JwtVerifier {
  const key: Uint8Array | JWTVerifyGetKey = cfg.secret
    ? new TextEncoder().encode(cfg.secret)
    : createRemoteJWKSet(new URL(cfg.jwksUrl!), { cooldownDuration: cfg.jwksCooldownSeconds * 1000 });
  return async (token, now) => {
    try {
      const { payload } = await jwtVerify(token, key as JWTVerifyGetKey, {
        issuer: cfg.issuer,
        audience: cfg.audience,
        algorithms: cfg.algorithms,
        requiredClaims: ["exp", "sub"],
        currentDate: new Date(now),
        clockTolerance: CLOCK_TOLERANCE_S,
      });
      if (!payload.sub) return { ok: false, reason: "claim sub is empty" };
      const id = `jwt:${payload.iss}:${payload.sub}`;
      return { ok: true, principal: makePrincipal(id, scopesFromClaims(payload, cfg.defaultScopes), "jwt") };
    } catch (e) {
      return { ok: false, reason: reasonOf(e) };
    }
  };
}
