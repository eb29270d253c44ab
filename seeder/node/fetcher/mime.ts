/**
 * The Content-Type whitelist, as in the original with its wildcard bug fixed: parameters after
 * `;` are dropped and the type lower-cased; `type/*` matches the prefix `type/` (the original
 * compared against `type`, so `image/*` also let `imagexyz/foo` through); `*\/*` matches
 * everything, a missing Content-Type included. Without `*\/*` a missing or empty Content-Type is
 * refused, and only the declared header counts (no sniffing).
 */

/** `Text/HTML; charset=utf-8` -> `text/html`; empty string when absent. */
export function mimeEssence(contentType: string | undefined): string {
  return (contentType ?? "").split(";")[0]!.trim().toLowerCase();
}

export function isMimeAllowed(contentType: string | undefined, whitelist: readonly string[]): boolean {
  const essence = mimeEssence(contentType);
  for (const raw of whitelist) {
    const entry = raw.trim().toLowerCase();
    if (entry === "*/*") return true;
    if (!essence) continue;
    if (entry.endsWith("/*")) {
      if (essence.startsWith(entry.slice(0, -1))) return true;
    } else if (essence === entry) return true;
  }
  return false;
}
