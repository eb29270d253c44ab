/**
 * Integrity checks on a fetched body: the digests an origin sends with it (RFC 9530 Content-Digest
 * and Repr-Digest, RFC 1864 Content-MD5), hashed while the body streams, never by reading the blob
 * again.
 *
 * What each field covers, and so what we can check:
 * - Content-Digest and Content-MD5 are over the message content: the bytes as sent, before we
 *   decode a Content-Encoding. We hash exactly those (pumpBody's onEncoded), so they are checked
 *   whatever the coding, for a 200 and for a 206 (its content is the range it carries).
 * - Repr-Digest is over the whole selected representation, which includes its content coding
 *   (RFC 9530 §3 over RFC 9110 §8.1): for a 200 that is again the bytes as sent, so it is checked
 *   there. A 206 carries only part of it (a resumed body, a caller's Range): skipped.
 * - A HEAD (no content) is not checked. Unknown algorithms (and the deprecated md5/sha in
 *   Content-Digest) are ignored; so is a field that is not a valid structured dictionary or
 *   base64 value (nothing in it can be checked).
 */
import type { IncomingHttpHeaders } from "node:http";
import { fromBase64, toBase64 } from "../../../src/auth/crypto";
import { parseDictionary } from "../../../src/auth/structured-fields";
import { FetchError } from "./errors";

export type IntegrityKind = "expected_sha256" | "content_digest" | "repr_digest" | "content_md5";
export type IntegrityOutcome = "ok" | "mismatch";
/** Told of every check made (metrics). */
export type OnIntegrityCheck = (kind: IntegrityKind, outcome: IntegrityOutcome) => void;

type Algorithm = "sha256" | "sha512" | "md5";
const SF_ALGORITHMS: Record<string, Algorithm> = { "sha-256": "sha256", "sha-512": "sha512" };
const LENGTHS: Record<Algorithm, number> = { sha256: 32, sha512: 64, md5: 16 };

/** One digest the origin claims for the bytes it sent. */
export interface ClaimedDigest {
  kind: Exclude<IntegrityKind, "expected_sha256">;
  /** Header name as shown to callers. */
  field: "content-digest" | "repr-digest" | "content-md5";
  /** RFC 9530 algorithm key (`sha-256`, `sha-512`), or `md5` for Content-MD5. */
  label: string;
  algorithm: Algorithm;
  value: Uint8Array;
}

function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v.join(", ") : v;
}

function sfDigests(
  raw: string | undefined,
  kind: "content_digest" | "repr_digest",
  field: "content-digest" | "repr-digest",
): ClaimedDigest[] {
  if (raw === undefined) return [];
  let dict: ReturnType<typeof parseDictionary>;
  try {
    dict = parseDictionary(raw);
  } catch {
    return [];
  }
  const out: ClaimedDigest[] = [];
  for (const [label, member] of dict) {
    const algorithm = SF_ALGORITHMS[label];
    if (!algorithm || "items" in member || !(member.value instanceof Uint8Array)) continue;
    out.push({ kind, field, label, algorithm, value: member.value });
  }
  return out;
}

/** The digests in a response's headers that its content can be checked against (see the top). */
export function claimedDigests(
  headers: IncomingHttpHeaders,
  status: number,
  method: string,
): ClaimedDigest[] {
  if (method === "HEAD" || status === 204 || status === 304) return [];
  const out = sfDigests(headerValue(headers, "content-digest"), "content_digest", "content-digest");
  if (status === 200)
    out.push(...sfDigests(headerValue(headers, "repr-digest"), "repr_digest", "repr-digest"));
  const md5 = headerValue(headers, "content-md5")?.trim();
  const md5Bytes = md5 ? fromBase64(md5) : null;
  if (md5Bytes)
    out.push({ kind: "content_md5", field: "content-md5", label: "md5", algorithm: "md5", value: md5Bytes });
  return out;
}

/** `sha-256=:…:` as a caller reads it in `verified_digests`. */
export function describe(d: Pick<ClaimedDigest, "field" | "label">, value: Uint8Array): string {
  return d.field === "content-md5"
    ? `content-md5: ${toBase64(value)}`
    : `${d.field}: ${d.label}=:${toBase64(value)}:`;
}

/** Hashes one response's content as it streams and checks it against the claimed digests. */
export class DigestCheck {
  private readonly hashers = new Map<Algorithm, Bun.CryptoHasher>();

  constructor(
    private readonly claims: ClaimedDigest[],
    private readonly host: string,
    private readonly onCheck?: OnIntegrityCheck,
  ) {
    for (const c of claims)
      if (!this.hashers.has(c.algorithm)) this.hashers.set(c.algorithm, new Bun.CryptoHasher(c.algorithm));
  }

  get active(): boolean {
    return this.claims.length > 0;
  }

  update = (chunk: Uint8Array): void => {
    for (const h of this.hashers.values()) h.update(chunk);
  };

  /**
   * The verified digests (for the job's record); a FetchError `digest_mismatch` when one does not
   * match. Transient: a transfer corrupted on the way (a proxy, a broken cache) may be right the
   * next time, and FETCHER__MAX_ATTEMPTS bounds the retries.
   */
  finish(): string[] {
    const sums = new Map<Algorithm, Uint8Array>();
    for (const [alg, h] of this.hashers) sums.set(alg, new Uint8Array(h.digest()));
    const verified: string[] = [];
    let wrong: string | null = null;
    for (const c of this.claims) {
      const got = sums.get(c.algorithm)!;
      const ok = c.value.length === LENGTHS[c.algorithm] && equal(c.value, got);
      this.onCheck?.(c.kind, ok ? "ok" : "mismatch");
      if (ok) verified.push(describe(c, got));
      else
        wrong ??= `${this.host} sent a body that does not match its ${c.field} (${c.label}): the header says ${toBase64(c.value)}, the bytes hash to ${toBase64(got)}; nothing was stored`;
    }
    if (wrong) throw new FetchError("digest_mismatch", wrong, { transient: true });
    return verified;
  }
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
