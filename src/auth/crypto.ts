/**
 * The few primitives auth needs, on Web Crypto (Workers, Bun, browsers): SHA-256, HMAC-SHA256,
 * hex/base64 codecs and a constant-time comparison. SHA-256 takes Bun's own hasher when present.
 */
const enc = new TextEncoder();

export type Bytes = Uint8Array;

export const utf8 = (s: string): Bytes => enc.encode(s);

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** Lower-case hex (a table lookup per byte: this runs on every API-key request). */
export function toHex(b: Bytes): string {
  let out = "";
  for (let i = 0; i < b.length; i++) out += HEX[b[i]!];
  return out;
}

export function fromHex(s: string): Bytes | null {
  if (s.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(s)) return null;
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(s.slice(i * 2, i * 2 + 2), 16);
  return out;
}

export function toBase64(b: Bytes): string {
  let bin = "";
  for (const x of b) bin += String.fromCharCode(x);
  return btoa(bin);
}

/** Standard base64 (RFC 4648 §4, as used by RFC 8941 byte sequences); null if malformed. */
export function fromBase64(s: string): Bytes | null {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) return null;
  try {
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  } catch {
    return null;
  }
}

/**
 * Bun's synchronous SHA-256, when this runs under Bun. Web Crypto's digest() costs ~4 µs a call
 * there (0.3 µs this way), and every bearer-authenticated request hashes the presented
 * credential. Same digest either way; Workers and browsers use Web Crypto.
 */
const bunHasher = (globalThis as { Bun?: { CryptoHasher: { hash(alg: "sha256", data: Bytes): Uint8Array } } })
  .Bun?.CryptoHasher;

export async function sha256(data: Bytes | string): Promise<Bytes> {
  const bytes = typeof data === "string" ? utf8(data) : data;
  if (bunHasher) return new Uint8Array(bunHasher.hash("sha256", bytes));
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as BufferSource));
}

export async function sha256Hex(data: Bytes | string): Promise<string> {
  return toHex(await sha256(data));
}

export async function hmacSha256(key: Bytes | string, message: Bytes | string): Promise<Bytes> {
  const k = await crypto.subtle.importKey(
    "raw",
    (typeof key === "string" ? utf8(key) : key) as BufferSource,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const m = typeof message === "string" ? utf8(message) : message;
  return new Uint8Array(await crypto.subtle.sign("HMAC", k, m as BufferSource));
}

/** Constant-time equality of two byte strings (length is not secret here: MACs and digests). */
export function timingSafeEqual(a: Bytes, b: Bytes): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/**
 * Constant-time equality of two strings of any length: both sides are hashed first, so neither
 * the content nor the length of a secret leaks through timing.
 */
export async function safeEqual(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([sha256(a), sha256(b)]);
  return timingSafeEqual(x, y);
}

export function randomHex(bytes: number): string {
  return toHex(crypto.getRandomValues(new Uint8Array(bytes)));
}
