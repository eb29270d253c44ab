/**
 * A fast Diffie-Hellman for the BitTorrent MSE/PE handshake.
 *
 * bittorrent-protocol (mse.js, `MessageStreamEncryptor`) builds a key pair for every encrypted
 * connection with `crypto.createDiffieHellman(DH_PRIME, 'hex', 2)`. Under Bun 1.4.5 that call alone
 * takes ~50-70 ms (it validates the 768-bit prime each time; ~21 ms under Node), on the event loop,
 * for every incoming encrypted peer. libtorrent opens with MSE by default, so every libtorrent
 * leecher pays it (docs/performance.md, "Seeding over BitTorrent").
 *
 * `installFastMseDh()` replaces the encryptor's lazy `dh` getter, once, on the shared prototype
 * (there is no hook), with `MseDiffieHellman`: the same group (the MSE prime, generator 2) in
 * BigInt arithmetic, a 160-bit private key as the MSE spec asks ("minimum 128 bit, anything beyond
 * 180 bit is not believed to add any additional security"), ~0.1 ms per modular exponentiation.
 * mse.js only calls `generateKeys()` and `computeSecret()`; the rest of Node's DiffieHellman
 * interface is here so that a library update calling more of it keeps working. Byte formats are
 * Node's: public and private keys big-endian without leading zero bytes (mse.js pads the public
 * key to 96 bytes itself), the shared secret left-padded to 96 bytes; a peer key <= 1 or >= p - 1
 * is refused as Node refuses it. Cross-checked against Node's DH in test/swarm/mse-fast-dh.test.ts.
 *
 * Not constant-time (BigInt arithmetic): a timing side channel on an ephemeral per-connection key of
 * an obfuscation protocol (RC4, no authentication); MSE gives no confidentiality against an active
 * attacker anyway.
 *
 * Written against bittorrent-protocol 5.0.9 (as webtorrent 3.0.21 resolves it); `installFastMseDh`
 * throws LibraryPatchError when the getter it replaces is gone (docs/patches.md).
 */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { type LibraryPatch, packageVersion, requirePatch } from "./patch";

/**
 * The MSE/PE specification's own 768-bit prime (bittorrent-protocol mse.js `DH_PRIME`). Not RFC 2409's
 * Oakley group 1: the first 87 bytes match it, the last 9 differ (Oakley's ends `…3620ffffffffffffffff`,
 * this one `…362100000000000090563`, i.e. Oakley's prime + 591204).
 */
export const MSE_PRIME_HEX =
  "ffffffffffffffffc90fdaa22168c234c4c6628b80dc1cd129024e088a67cc74020bbea63b139b22514a08798e3404ddef9519b3cd3a431b302b0a6df25f14374fe1356d6d51c245e485b576625e7ec6f44c42e9a63a36210000000000090563";
export const MSE_GENERATOR = 2;

const P = BigInt(`0x${MSE_PRIME_HEX}`);
const P_MINUS_1 = P - 1n;
const G = BigInt(MSE_GENERATOR);
const PRIME_BYTES = MSE_PRIME_HEX.length / 2; // 96
const PRIVATE_KEY_BYTES = 20; // 160 bits

type BinaryLike = string | ArrayBufferView;

function toBuffer(data: BinaryLike, encoding?: BufferEncoding): Buffer {
  if (typeof data === "string") return Buffer.from(data, encoding ?? "utf8");
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

function encode(buf: Buffer, encoding?: BufferEncoding): Buffer | string {
  return encoding ? buf.toString(encoding) : buf;
}

function toBigInt(bytes: Buffer): bigint {
  return bytes.length === 0 ? 0n : BigInt(`0x${bytes.toString("hex")}`);
}

/** Big-endian bytes of n: without leading zeros (Node's BN_bn2bin), or left-padded to `length`. */
export function bigIntToBytes(n: bigint, length = 0): Buffer {
  let hex = n === 0n ? "" : n.toString(16);
  if (hex.length % 2 === 1) hex = `0${hex}`;
  if (hex.length < length * 2) hex = hex.padStart(length * 2, "0");
  return Buffer.from(hex, "hex");
}

/** base^exp mod m, left-to-right square-and-multiply. */
export function modPow(base: bigint, exp: bigint, m: bigint): bigint {
  const bits = exp.toString(2);
  const b = base % m;
  let r = 1n;
  for (let i = 0; i < bits.length; i++) {
    r = (r * r) % m;
    if (bits.charCodeAt(i) === 49) r = (r * b) % m;
  }
  return r;
}

function randomPrivateKey(): bigint {
  for (;;) {
    const x = toBigInt(Buffer.from(crypto.getRandomValues(new Uint8Array(PRIVATE_KEY_BYTES))));
    if (x > 1n) return x;
  }
}

function invalidKey(message: string): Error {
  return Object.assign(new RangeError(message), { code: "ERR_CRYPTO_INVALID_KEYLEN" });
}

/** The subset of Node's DiffieHellman that an MSE handshake needs, for the MSE group only. */
export class MseDiffieHellman {
  readonly verifyError = 0;
  private privateKey: bigint | null = null;
  private publicKey: bigint | null = null;

  generateKeys(): Buffer;
  generateKeys(encoding: BufferEncoding): string;
  generateKeys(encoding?: BufferEncoding): Buffer | string {
    this.privateKey ??= randomPrivateKey();
    this.publicKey = modPow(G, this.privateKey, P);
    return this.getPublicKey(encoding as BufferEncoding);
  }

  computeSecret(otherPublicKey: BinaryLike): Buffer;
  computeSecret(otherPublicKey: BinaryLike, inputEncoding: BufferEncoding | undefined): Buffer;
  computeSecret(
    otherPublicKey: BinaryLike,
    inputEncoding: BufferEncoding | undefined,
    outputEncoding: BufferEncoding,
  ): string;
  computeSecret(
    otherPublicKey: BinaryLike,
    inputEncoding?: BufferEncoding,
    outputEncoding?: BufferEncoding,
  ): Buffer | string {
    if (this.privateKey === null) throw new Error("No private key - did you forget to generate one?");
    const y = toBigInt(toBuffer(otherPublicKey, inputEncoding));
    if (y <= 1n) throw invalidKey("Supplied key is too small");
    if (y >= P_MINUS_1) throw invalidKey("Supplied key is too large");
    return encode(bigIntToBytes(modPow(y, this.privateKey, P), PRIME_BYTES), outputEncoding);
  }

  getPrime(encoding?: BufferEncoding): Buffer | string {
    return encode(bigIntToBytes(P), encoding);
  }

  getGenerator(encoding?: BufferEncoding): Buffer | string {
    return encode(bigIntToBytes(G), encoding);
  }

  getPublicKey(): Buffer;
  getPublicKey(encoding: BufferEncoding): string;
  getPublicKey(encoding?: BufferEncoding): Buffer | string {
    if (this.publicKey === null) throw new Error("No public key - did you forget to generate one?");
    return encode(bigIntToBytes(this.publicKey), encoding);
  }

  getPrivateKey(): Buffer;
  getPrivateKey(encoding: BufferEncoding): string;
  getPrivateKey(encoding?: BufferEncoding): Buffer | string {
    if (this.privateKey === null) throw new Error("No private key - did you forget to generate one?");
    return encode(bigIntToBytes(this.privateKey), encoding);
  }

  setPublicKey(key: BinaryLike, encoding?: BufferEncoding): void {
    this.publicKey = toBigInt(toBuffer(key, encoding));
  }

  setPrivateKey(key: BinaryLike, encoding?: BufferEncoding): void {
    this.privateKey = toBigInt(toBuffer(key, encoding));
  }
}

interface EncryptorPrototype {
  _dh?: unknown;
}

let installed = false;

/**
 * The prototype of the MessageStreamEncryptor that webtorrent's wires use. mse.js is not in
 * bittorrent-protocol's package exports, so it is loaded by path, resolved from webtorrent's own
 * Peer module: the copy webtorrent imports, not whichever one this package would resolve.
 */
export function encryptorPrototype(): object | null {
  const protocol = Bun.resolveSync("bittorrent-protocol", protocolDir());
  const mse = createRequire(import.meta.url)(join(dirname(protocol), "mse.js")) as {
    MessageStreamEncryptor?: { prototype: object };
  };
  return mse.MessageStreamEncryptor?.prototype ?? null;
}

/** Where webtorrent's bittorrent-protocol lives (mse.js sits next to its entry point). */
function protocolDir(): string {
  const peer = Bun.resolveSync("webtorrent/lib/peer.js", import.meta.dir);
  return dirname(peer);
}

export const mseFastDhPatch: LibraryPatch = {
  name: "bittorrent-protocol-mse-dh",
  why: "BigInt Diffie-Hellman for MSE handshakes: ~0.2 ms instead of ~50-70 ms of createDiffieHellman under Bun",
  writtenFor: { "bittorrent-protocol": "5.0.9" },
  installedVersion: (pkg) => packageVersion(pkg, protocolDir()),
  check() {
    let proto: object | null;
    try {
      proto = encryptorPrototype();
    } catch (e) {
      return `cannot load bittorrent-protocol's mse.js (${(e as Error).message})`;
    }
    if (!proto) return "mse.js exports no MessageStreamEncryptor";
    const current = Object.getOwnPropertyDescriptor(proto, "dh");
    if (!current?.get || current.set) return "MessageStreamEncryptor has no lazy `dh` getter";
    return null;
  },
};

/**
 * Make every MSE handshake in this process use `MseDiffieHellman`. Idempotent. Throws
 * LibraryPatchError (and changes nothing) when bittorrent-protocol no longer has the lazy `dh`
 * getter this replaces.
 */
export function installFastMseDh(): boolean {
  if (installed) return true;
  requirePatch(mseFastDhPatch);
  const proto = encryptorPrototype();
  const current = proto ? Object.getOwnPropertyDescriptor(proto, "dh") : undefined;
  if (!proto || !current?.get || current.set) return false;
  Object.defineProperty(proto, "dh", {
    configurable: true,
    enumerable: current.enumerable ?? false,
    get(this: EncryptorPrototype) {
      this._dh ??= new MseDiffieHellman();
      return this._dh;
    },
  });
  installed = true;
  return true;
}
