/**
 * Verifying RFC 9421 signed requests (see message-signature.ts for the wire format). A signature is
 * accepted only if it covers method, path, query and Content-Digest, `created` is within the window
 * of now, the HMAC matches (constant-time), the digest matches the raw body and the nonce was never
 * seen for this key, checked in that order: cheap header checks and the key first, the body last. The nonce is recorded only after the MAC verifies, so nobody can burn
 * another caller's nonces.
 *
 * Storage is injected (key lookup, nonce memory) so this runs the same on Workers and Bun.
 */
import { type Bytes, hmacSha256, sha256, timingSafeEqual } from "./crypto";
import { REQUIRED_COMPONENTS, SIGNATURE_ALG, type SignableRequest, signatureBase } from "./message-signature";
import {
  type BareItem,
  type InnerList,
  isInnerList,
  type Member,
  parseDictionary,
  StructuredFieldError,
} from "./structured-fields";

export interface SignatureVerifier {
  /** Milliseconds since the epoch. */
  now: number;
  windowSeconds: number;
  /** The HMAC key (SHA-256 of the API key) of an active key, or null if unknown or revoked. */
  findKey(keyId: string): Promise<Bytes | null>;
  /** Record the nonce; false if this key already used it (a replay). */
  rememberNonce(keyId: string, nonce: string, expiresAt: number): Promise<boolean>;
}

export type SignatureResult = { ok: true; keyId: string } | { ok: false; reason: string };

const NONCE_RE = /^[A-Za-z0-9._~+/=-]{1,128}$/;

const fail = (reason: string): SignatureResult => ({ ok: false, reason });

function param(list: InnerList, name: string): BareItem | undefined {
  return list.params.find(([k]) => k === name)?.[1];
}

/** Does this request carry an RFC 9421 signature (and should be judged by it alone)? */
export const hasMessageSignature = (headers: Headers) =>
  headers.has("signature-input") || headers.has("signature");

/**
 * `body` may be a function: it is then called only once the signature itself has verified, so a
 * request signed with an unknown key or a garbage signature is refused without reading its body.
 */
export async function verifySignedRequest(
  req: SignableRequest,
  body: Uint8Array | (() => Promise<Uint8Array>),
  v: SignatureVerifier,
): Promise<SignatureResult> {
  const inputField = req.headers.get("signature-input");
  const sigField = req.headers.get("signature");
  if (!inputField || !sigField) return fail("Signature and Signature-Input must both be present");

  let inputs: Map<string, Member>;
  let sigs: Map<string, Member>;
  try {
    inputs = parseDictionary(inputField);
    sigs = parseDictionary(sigField);
  } catch (e) {
    if (e instanceof StructuredFieldError) return fail("malformed Signature or Signature-Input header");
    throw e;
  }
  // The first signature that has both an input and a value is the one we judge.
  const label = [...inputs.keys()].find((k) => sigs.has(k));
  if (!label) return fail("no Signature matches a Signature-Input label");
  const params = inputs.get(label)!;
  const sig = sigs.get(label)!;
  if (!isInnerList(params) || isInnerList(sig) || !(sig.value instanceof Uint8Array))
    return fail("malformed Signature or Signature-Input header");

  const covered = params.items.map((i) => i.value);
  if (covered.some((c) => typeof c !== "string") || new Set(covered).size !== covered.length)
    return fail("covered components must be distinct strings");
  const missing = REQUIRED_COMPONENTS.filter((c) => !covered.includes(c));
  if (missing.length) return fail(`the signature must cover ${missing.map((m) => `"${m}"`).join(", ")}`);

  const created = param(params, "created");
  const expires = param(params, "expires");
  const nonce = param(params, "nonce");
  const keyId = param(params, "keyid");
  const alg = param(params, "alg");
  if (typeof created !== "number" || !Number.isInteger(created)) return fail("created is required");
  if (typeof nonce !== "string" || !NONCE_RE.test(nonce))
    return fail("nonce is required (1-128 token characters)");
  if (typeof keyId !== "string" || !keyId) return fail("keyid is required");
  if (alg !== undefined && alg !== SIGNATURE_ALG) return fail(`alg must be "${SIGNATURE_ALG}"`);
  if (expires !== undefined && (typeof expires !== "number" || !Number.isInteger(expires)))
    return fail("expires must be an integer");

  const nowS = Math.floor(v.now / 1000);
  if (Math.abs(nowS - created) > v.windowSeconds)
    return fail(`created is more than ${v.windowSeconds} s away from the server's clock`);
  if (typeof expires === "number" && nowS > expires) return fail("the signature has expired");

  const digest = parseContentDigest(req.headers.get("content-digest"));
  if (typeof digest === "string") return fail(digest);

  const base = signatureBase(params, req);
  if (base === null) return fail("a covered component is missing from the request");

  const hmacKey = await v.findKey(keyId);
  // Unknown, revoked and wrong keys read the same.
  if (!hmacKey || !timingSafeEqual(await hmacSha256(hmacKey, base), sig.value))
    return fail("the signature does not verify");

  // Only now, for a caller holding the key, is the body read and hashed: a stranger's garbage
  // signature costs header parsing, one key lookup and one HMAC over a few hundred bytes.
  const bytes = typeof body === "function" ? await body() : body;
  if (!timingSafeEqual(await sha256(bytes), digest.sha256))
    return fail("Content-Digest does not match the body");

  const rememberUntil = (created + v.windowSeconds + 1) * 1000;
  if (!(await v.rememberNonce(keyId, nonce, rememberUntil)))
    return fail("nonce already used (replayed request)");
  return { ok: true, keyId };
}

function parseContentDigest(field: string | null): { sha256: Uint8Array } | string {
  if (!field) return "Content-Digest is required";
  let dict: Map<string, Member>;
  try {
    dict = parseDictionary(field);
  } catch {
    return "malformed Content-Digest";
  }
  const m = dict.get("sha-256");
  if (!m || isInnerList(m) || !(m.value instanceof Uint8Array)) return "Content-Digest must carry sha-256";
  return { sha256: m.value };
}
