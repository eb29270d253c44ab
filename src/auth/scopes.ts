/**
 * What a principal may do. `admin` implies every other scope and sees every tenant's requests.
 * Static bearer tokens, legacy HMAC clients and (by default) JWTs get the request scopes, not admin.
 */
export const SCOPES = ["requests:create", "requests:read", "requests:cancel", "admin"] as const;
export type Scope = (typeof SCOPES)[number];

/** What `keys create` grants when `--scopes` is not given. */
export const DEFAULT_SCOPES: readonly Scope[] = ["requests:create", "requests:read", "requests:cancel"];

export const isScope = (s: string): s is Scope => (SCOPES as readonly string[]).includes(s);

/** Split "a,b" / "a b" / ["a","b"]; unknown names are returned separately so callers can refuse them. */
export function parseScopes(raw: string | readonly string[]): { scopes: Scope[]; unknown: string[] } {
  const parts = (typeof raw === "string" ? raw.split(/[\s,]+/) : raw).map((s) => s.trim()).filter(Boolean);
  const scopes: Scope[] = [];
  const unknown: string[] = [];
  for (const p of parts) {
    if (isScope(p)) {
      if (!scopes.includes(p)) scopes.push(p);
    } else unknown.push(p);
  }
  return { scopes, unknown };
}
