/**
 * Standard Webhooks signatures (https://www.standardwebhooks.com/), with Web Crypto only so the
 * same code runs on Workers and Bun.
 *
 * A secret is `whsec_` + base64 of 24 to 64 random bytes; the HMAC key is the decoded bytes. The
 * signed content is `${webhook-id}.${webhook-timestamp}.${body}` and the header value is
 * `v1,<base64 HMAC-SHA256>`. Several secrets (a rotation in progress) give several signatures,
 * space-separated; a receiver accepts the message if any one matches.
 */

import { fromBase64, toBase64 } from "../auth/crypto";

export const SECRET_PREFIX = "whsec_";
const MIN_KEY_BYTES = 24;
const MAX_KEY_BYTES = 64;

/** The key bytes of a `whsec_…` secret, or a message saying what is wrong with it. */
export function decodeSecret(secret: string): { key: Uint8Array } | { problem: string } {
  if (!secret.startsWith(SECRET_PREFIX)) return { problem: `must start with ${SECRET_PREFIX}` };
  const text = secret.slice(SECRET_PREFIX.length);
  // Unpadded base64 is taken too, as the Standard Webhooks libraries do.
  const key = text ? fromBase64(text + "=".repeat((4 - (text.length % 4)) % 4)) : null;
  if (!key) return { problem: `must be ${SECRET_PREFIX} followed by base64` };
  if (key.length < MIN_KEY_BYTES || key.length > MAX_KEY_BYTES)
    return { problem: `must encode ${MIN_KEY_BYTES} to ${MAX_KEY_BYTES} bytes (got ${key.length})` };
  return { key };
}

/** A fresh secret: 32 random bytes. */
export function generateSecret(): string {
  return SECRET_PREFIX + toBase64(crypto.getRandomValues(new Uint8Array(32)));
}

async function signOne(secret: string, content: Uint8Array): Promise<string> {
  const decoded = decodeSecret(secret);
  if ("problem" in decoded) throw new Error(`invalid webhook secret: ${decoded.problem}`);
  const key = await crypto.subtle.importKey(
    "raw",
    decoded.key as BufferSource,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = await crypto.subtle.sign("HMAC", key, content as BufferSource);
  return `v1,${toBase64(new Uint8Array(mac))}`;
}

/**
 * The `webhook-signature` header for one attempt: one `v1,…` per secret, space-separated.
 * `timestampSeconds` is the attempt's own time (receivers reject timestamps older than ~5 min),
 * while `msgId` stays the same on every attempt of one message.
 */
export async function signatureHeader(
  secrets: readonly string[],
  msgId: string,
  timestampSeconds: number,
  body: string,
): Promise<string> {
  if (secrets.length === 0) throw new Error("no webhook secret to sign with");
  const content = new TextEncoder().encode(`${msgId}.${timestampSeconds}.${body}`);
  const parts = await Promise.all(secrets.map((s) => signOne(s, content)));
  return parts.join(" ");
}

/** The three Standard Webhooks headers for one attempt. */
export async function webhookHeaders(
  secrets: readonly string[],
  msgId: string,
  nowMs: number,
  body: string,
): Promise<Record<string, string>> {
  const ts = Math.floor(nowMs / 1000);
  return {
    "webhook-id": msgId,
    "webhook-timestamp": String(ts),
    "webhook-signature": await signatureHeader(secrets, msgId, ts, body),
  };
}
