/**
 * Passkeys: one secret per request, carried in the announce and web seed URLs of the .torrent and
 * magnet handed to that request's owner (TORRENT__ACCESS=passkey). 128 random bits, so it cannot be
 * guessed or derived from anything public (request id, infohash, content hash). The database keeps
 * the passkey (to hand the same .torrent out again) and its SHA-256, which is what lookups use: a
 * presented passkey is hashed first, so no query or comparison ever runs on the secret itself.
 */
import { randomHex, sha256Hex } from "../auth/crypto";

/** 32 lower-case hex characters: what a passkey looks like in a URL. */
export const PASSKEY_PATTERN = /^[0-9a-f]{32}$/;

export async function newPasskey(): Promise<{ passkey: string; hash: string }> {
  const passkey = randomHex(16);
  return { passkey, hash: await passkeyHash(passkey) };
}

export function passkeyHash(passkey: string): Promise<string> {
  return sha256Hex(passkey);
}
