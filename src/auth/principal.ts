/**
 * Who is calling. `id` names the tenant: it is stored as the owner of every request the principal
 * creates, and only that principal (or an admin) can see those requests again. It never contains a
 * secret: static tokens are named by a hash, API keys by their public id, JWTs by issuer and subject.
 */
import { SCOPES, type Scope } from "./scopes";

export type AuthScheme = "none" | "token" | "key" | "signature" | "jwt" | "legacy-hmac";

export interface Principal {
  /** Tenant id; null only when authentication is disabled. */
  id: string | null;
  /** Holds the `admin` scope: sees and cancels every tenant's requests. */
  admin: boolean;
  scopes: readonly Scope[];
  scheme: AuthScheme;
  /** API key id, for keys and signed requests. */
  keyId?: string;
}

export function makePrincipal(
  id: string | null,
  scopes: readonly Scope[],
  scheme: AuthScheme,
  keyId?: string,
): Principal {
  const admin = scopes.includes("admin");
  return { id, admin, scopes: admin ? SCOPES : scopes, scheme, ...(keyId ? { keyId } : {}) };
}

/** With SECURITY__AUTH_ENABLED=false every caller is this one, and sees everything. */
export const ANONYMOUS: Principal = makePrincipal(null, SCOPES, "none");

export const hasScope = (p: Principal, s: Scope) => p.admin || p.scopes.includes(s);
