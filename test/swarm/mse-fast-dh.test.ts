/**
 * The BigInt Diffie-Hellman that replaces crypto.createDiffieHellman in MSE handshakes
 * (seeder/node/swarm/mse-fast-dh.ts): byte-for-byte Node's DiffieHellman for the same keys, and a real
 * libtorrent that refuses anything but encrypted connections downloads from our Swarm through it.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createDiffieHellman, type DiffieHellman, randomBytes } from "node:crypto";
// @ts-expect-error bittorrent-protocol ships no types (seeder/node/swarm/vendor.d.ts does not need it)
import Wire from "bittorrent-protocol";
import {
  bigIntToBytes,
  installFastMseDh,
  MSE_GENERATOR,
  MSE_PRIME_HEX,
  MseDiffieHellman,
  modPow,
} from "../../seeder/node/swarm/mse-fast-dh";
import { Swarm } from "../../seeder/node/swarm/swarm";
import { freePort, libtorrentDownloadDetailed, removeTmpDirs, sha256File, tmpDir } from "../support/clients";
import { type Content, randomContent, saveTorrent } from "../support/seeder-fixture";

const P = BigInt(`0x${MSE_PRIME_HEX}`);
const TEST_LIMIT = 180_000;

/** Node's DH for the MSE group. Creating one costs 50-70 ms under Bun, so tests reuse two. */
let nodeA: DiffieHellman;
let nodeB: DiffieHellman;

/** Node's DH with the given private key (generateKeys recomputes the public key from it). */
function nodeWithKey(dh: DiffieHellman, privateKey: Buffer): DiffieHellman {
  dh.setPrivateKey(privateKey);
  dh.generateKeys();
  return dh;
}

function ours(privateKey: Buffer): MseDiffieHellman {
  const dh = new MseDiffieHellman();
  dh.setPrivateKey(privateKey);
  dh.generateKeys();
  return dh;
}

/** A 160-bit private key for which `pred` holds (1 in 256 for a leading zero byte: ~25 ms). */
function findKey(pred: (x: bigint) => boolean): Buffer {
  const start = 1n << 159n;
  for (let x = start; x < start + 100_000n; x++) if (pred(x)) return bigIntToBytes(x);
  throw new Error("no such key");
}

beforeAll(() => {
  nodeA = createDiffieHellman(MSE_PRIME_HEX, "hex", MSE_GENERATOR);
  nodeB = createDiffieHellman(MSE_PRIME_HEX, "hex", MSE_GENERATOR);
});

describe("MseDiffieHellman against Node's crypto DiffieHellman", () => {
  test("when both sides use random keys, then public keys and shared secrets are Node's, byte for byte", () => {
    for (let i = 0; i < 20; i++) {
      const a = new MseDiffieHellman();
      const pubA = a.generateKeys();
      expect(a.getPrivateKey().length).toBeLessThanOrEqual(20); // 160-bit private key
      const nodeSameKey = nodeWithKey(nodeA, a.getPrivateKey());
      expect(pubA.equals(nodeSameKey.getPublicKey())).toBe(true);
      expect(a.getPublicKey().equals(pubA)).toBe(true);

      // A peer with a full-length 768-bit key, as Node's own generateKeys() makes.
      const peer = nodeWithKey(nodeB, randomBytes(96));
      const secret = a.computeSecret(peer.getPublicKey());
      expect(secret.length).toBe(96);
      expect(secret.equals(peer.computeSecret(pubA))).toBe(true);
      expect(secret.equals(nodeSameKey.computeSecret(peer.getPublicKey()))).toBe(true);

      // Two of ours agree with each other, as two peers' handshakes must.
      const b = new MseDiffieHellman();
      b.generateKeys();
      expect(a.computeSecret(b.getPublicKey()).equals(b.computeSecret(pubA))).toBe(true);
    }
  });

  test("when the public key is short, then it has no leading zeros, like Node's (mse.js pads it)", () => {
    for (const x of [1n, 5n, 700n]) {
      const key = bigIntToBytes(x);
      const pub = ours(key).getPublicKey();
      expect(pub.toString("hex")).toBe(nodeWithKey(nodeA, key).getPublicKey().toString("hex"));
      expect(pub.length).toBeLessThan(96);
    }
    // A full-size key whose public value happens to start with a zero byte: 95 bytes, as Node.
    const key = findKey((x) => modPow(2n, x, P) < 1n << 760n);
    const pub = ours(key).getPublicKey();
    expect(pub.length).toBe(95);
    expect(pub.equals(nodeWithKey(nodeA, key).getPublicKey())).toBe(true);
  });

  test("when the shared secret is short, then it is left-padded with zeros to 96 bytes, like Node's", () => {
    // y = 2, x = 3: the secret is 8.
    const tiny = ours(bigIntToBytes(3n)).computeSecret(Buffer.from([2]));
    expect(tiny.length).toBe(96);
    expect(tiny.subarray(0, 95).every((b) => b === 0)).toBe(true);
    expect(tiny[95]).toBe(8);
    expect(tiny.equals(nodeWithKey(nodeA, bigIntToBytes(3n)).computeSecret(Buffer.from([2])))).toBe(true);

    // A realistic peer key and a private key whose secret starts with a zero byte.
    const peer = nodeWithKey(nodeB, Buffer.from("0123456789abcdef0123456789abcdef01234567", "hex"));
    const y = BigInt(`0x${peer.getPublicKey("hex")}`);
    const key = findKey((x) => modPow(y, x, P) < 1n << 760n);
    const secret = ours(key).computeSecret(peer.getPublicKey());
    expect(secret.length).toBe(96);
    expect(secret[0]).toBe(0);
    expect(secret.equals(nodeWithKey(nodeA, key).computeSecret(peer.getPublicKey()))).toBe(true);
    // The peer key as mse.js hands it over: 96 bytes, left-padded.
    const padded = Buffer.alloc(96);
    peer.getPublicKey().copy(padded, 96 - peer.getPublicKey().length);
    expect(ours(key).computeSecret(padded).equals(secret)).toBe(true);
  });

  test("when the peer's key is degenerate (0, 1, p - 1, p or more), then it is refused, as Node refuses it", () => {
    const dh = new MseDiffieHellman();
    dh.generateKeys();
    nodeA.generateKeys();
    for (const y of [0n, 1n, P - 1n, P, P + 5n]) {
      const bytes = bigIntToBytes(y, y === 0n ? 1 : 0);
      expect(() => dh.computeSecret(bytes)).toThrow(/Supplied key is too (small|large)/);
      expect(() => nodeA.computeSecret(bytes)).toThrow();
    }
  });

  test("then the encodings, prime and generator match Node's interface", () => {
    const dh = new MseDiffieHellman();
    const hex = dh.generateKeys("hex");
    expect(dh.getPublicKey("hex")).toBe(hex);
    expect(dh.getPrime("hex")).toBe(nodeA.getPrime("hex"));
    expect((dh.getGenerator() as Buffer).equals(nodeA.getGenerator())).toBe(true);
    expect(dh.verifyError).toBe(0);
    const other = new MseDiffieHellman();
    other.generateKeys();
    expect(dh.computeSecret(other.getPublicKey("base64"), "base64", "hex")).toBe(
      other.computeSecret(hex, "hex", "hex"),
    );
    expect(() => new MseDiffieHellman().getPublicKey()).toThrow(/No public key/);
    expect(() => new MseDiffieHellman().computeSecret(Buffer.from([2]))).toThrow(/No private key/);
  });
});

describe("installFastMseDh", () => {
  test("then bittorrent-protocol wires (as webtorrent creates them) use it, and installing again is a no-op", () => {
    expect(installFastMseDh()).toBe(true);
    expect(installFastMseDh()).toBe(true);
    const wire = new (Wire as unknown as new (type: string, pe: number) => any)("tcpIncoming", 1);
    const started = performance.now();
    const dh = wire._encryptor.dh;
    dh.generateKeys();
    expect(dh).toBeInstanceOf(MseDiffieHellman);
    expect(wire._encryptor.dh).toBe(dh); // one per connection
    expect(performance.now() - started).toBeLessThan(20); // Bun's createDiffieHellman: ~50-70 ms
    wire.destroy();
  });
});

describe("given our Swarm and a libtorrent that requires encryption", () => {
  let swarm: Swarm | null = null;
  let content: Content;
  let port: number;
  let torrentPath: string;
  const dhs: unknown[] = [];

  beforeAll(async () => {
    content = await randomContent(3 * 1024 * 1024 + 777, "encrypted payload.bin");
    const saved = await saveTorrent(content, { file: "bare.torrent", pieceSize: 256 * 1024 });
    torrentPath = saved.path;
    port = await freePort();
    swarm = new Swarm({ torrent: { listenPort: port, maxConnections: 10, uploadRateLimit: 0 } });
    await swarm.start();
    await swarm.seed({ infohash: saved.infohash, torrent: saved.torrent, path: content.blob.path });
    const client = (
      swarm as unknown as { client: { torrents: { on(ev: string, fn: (w: any) => void): void }[] } }
    ).client;
    client.torrents[0]!.on("wire", (w) => dhs.push(w._encryptor?._dh));
  }, TEST_LIMIT);

  afterAll(async () => {
    await swarm?.stop();
    await removeTmpDirs();
  }, TEST_LIMIT);

  for (const level of ["rc4", "both"] as const) {
    test(
      `when it downloads with allowed_enc_level ${level}, then it gets the exact bytes over an encrypted connection`,
      async () => {
        const before = dhs.length;
        const got = await libtorrentDownloadDetailed({
          torrentPath,
          dir: await tmpDir("pt-lt-enc-"),
          connect: { host: "127.0.0.1", port },
          encryption: level,
          timeoutMs: 60_000,
        });
        expect(await sha256File(got.path)).toBe(content.blob.sha256);
        expect(got.output).toContain("enc settings: out=0 in=0");
        expect(got.encryption).not.toContain("none");
        if (level === "rc4") expect(got.encryption).toEqual(["rc4"]);
        // The seeder's side of the handshake ran on our DH.
        const used = dhs.slice(before);
        expect(used.length).toBeGreaterThan(0);
        for (const dh of used) expect(dh).toBeInstanceOf(MseDiffieHellman);
      },
      TEST_LIMIT,
    );
  }
});
