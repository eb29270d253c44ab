/**
 * RFC 9421 HTTP Message Signatures as ProxyTorrent uses them, shared by the verifier
 * (`signature.ts`) and the client helper (`sign.ts`):
 *
 *   Content-Digest:  sha-256=:<base64 SHA-256 of the raw body>:          (RFC 9530; "" for GET)
 *   Signature-Input: pt=("@method" "@path" "@query" "content-digest");created=<unix s>;nonce="<n>";keyid="<id>";alg="hmac-sha256"
 *   Signature:       pt=:<base64 HMAC-SHA256(signature base, API key)>:
 *
 * The signature base is one line per covered component, `"<name>": <value>`, then
 * `"@signature-params": <the Signature-Input member>`, joined by "\n" with no trailing newline.
 */
import { sha256, toBase64 } from "./crypto";
import { type InnerList, serializeInnerList } from "./structured-fields";

/** Components every signature must cover: together they bind method, path, query and body. */
export const REQUIRED_COMPONENTS = ["@method", "@path", "@query", "content-digest"] as const;
export const SIGNATURE_ALG = "hmac-sha256";

export interface SignableRequest {
  method: string;
  url: string;
  headers: Headers;
}

export async function contentDigest(body: Uint8Array | string): Promise<string> {
  return `sha-256=:${toBase64(await sha256(body))}:`;
}

/**
 * The value of one covered component, or null if the request has no such component. Derived
 * components come from the URL as the server received it (`@path` stays percent-encoded).
 */
export function componentValue(name: string, req: SignableRequest): string | null {
  const u = new URL(req.url);
  switch (name) {
    case "@method":
      return req.method.toUpperCase();
    case "@path":
      return u.pathname || "/";
    case "@query":
      // RFC 9421 §2.2.7: an absent (or empty) query is the lone "?".
      return u.search || "?";
    case "@authority":
      return u.host.toLowerCase();
    case "@scheme":
      return u.protocol.replace(/:$/, "").toLowerCase();
    case "@target-uri":
      return u.href;
    case "@request-target":
      return `${u.pathname || "/"}${u.search}`;
    default: {
      if (name.startsWith("@") || name !== name.toLowerCase()) return null;
      const v = req.headers.get(name);
      // Header values: leading/trailing whitespace trimmed (RFC 9421 §2.1).
      return v === null ? null : v.trim();
    }
  }
}

/** The signature base (RFC 9421 §2.5), or null when a covered component is missing. */
export function signatureBase(params: InnerList, req: SignableRequest): string | null {
  const lines: string[] = [];
  for (const item of params.items) {
    if (typeof item.value !== "string" || item.params.length) return null;
    const value = componentValue(item.value, req);
    if (value === null || /[\r\n]/.test(value)) return null;
    lines.push(`"${item.value}": ${value}`);
  }
  lines.push(`"@signature-params": ${serializeInnerList(params)}`);
  return lines.join("\n");
}
