/**
 * API keys look like `pt_<16 hex id>_<64 hex secret>`. The id is public (it is the `keyid` of signed
 * requests and what `keys list`/`keys revoke` show); the whole string is the secret. The server
 * stores only SHA-256 of the whole string, finds the row by id and compares hashes in constant time.
 *
 * The key is 84 characters, longer than SHA-256's 64-byte block, so by the HMAC definition
 * (RFC 2104: longer keys are hashed first) HMAC keyed with the key string equals HMAC keyed with its
 * SHA-256. That is why a client can sign with `openssl dgst -hmac "$KEY"` while the server verifies
 * with the stored hash, never having stored the key.
 */
import { randomHex } from "./crypto";

export const API_KEY_PREFIX = "pt_";
const KEY_RE = /^pt_([0-9a-f]{16})_([0-9a-f]{64})$/;

export function generateApiKey(): { id: string; key: string } {
  const id = randomHex(8);
  return { id, key: `${API_KEY_PREFIX}${id}_${randomHex(32)}` };
}

/** The key id of a well-formed key, or null. */
export function apiKeyId(key: string): string | null {
  return KEY_RE.exec(key)?.[1] ?? null;
}
