/**
 * The BitTorrent port answers a peer only if its address announced with a live passkey for the
 * torrent it asks for (TORRENT__ACCESS=passkey; seeder/patches/webtorrent-peer-gate.ts). The real
 * service, real clients bound to other loopback addresses (127.0.0.2, 127.0.0.3), and raw
 * handshakes that count every byte the node sends back.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { type BDict, bdecode, bencode } from "../../seeder/node/swarm/bencode";
import { aria2Download, libtorrentDownload, removeTmpDirs, sha256File, tmpDir } from "../support/clients";
import { bytesRoute, type Origin, startOrigin } from "../support/origin";
import { until } from "../support/poll";
import { raw } from "../support/raw-http";
import { Service } from "../support/service";

const TEST_LIMIT = 120_000;
const content = bytesRoute({ size: 1024 * 1024 + 77, seed: 41, contentType: "application/json" });
const other = bytesRoute({ size: 64 * 1024 + 5, seed: 42, contentType: "application/json" });

let origin: Origin;
beforeAll(async () => {
  origin = await startOrigin({ "/data.bin": content, "/other.bin": other });
});
afterAll(async () => {
  await origin?.close();
  await removeTmpDirs();
});

/** A BitTorrent handshake (BEP 3) for `infohash`, with a random peer id. */
function handshake(infohash: string): Buffer {
  return Buffer.concat([
    Buffer.from([19]),
    Buffer.from("BitTorrent protocol"),
    Buffer.alloc(8),
    Buffer.from(infohash, "hex"),
    Buffer.from("-PT0000-"),
    randomBytes(12),
  ]);
}

interface Probe {
  socket: Socket;
  /** Bytes the node sent so far. */
  received: () => number;
  closed: () => boolean;
}

/** Dial the BitTorrent port from `from` and send a plain handshake for `infohash`. */
function dial(from: string, port: number, infohash: string): Probe {
  let received = 0;
  let closed = false;
  const socket = connect({ port, host: "127.0.0.1", localAddress: from });
  socket.on("data", (d: Buffer) => {
    received += d.length;
  });
  socket.on("error", () => {});
  socket.on("close", () => {
    closed = true;
  });
  socket.write(handshake(infohash));
  return { socket, received: () => received, closed: () => closed };
}

/**
 * Send a handshake from `from` and read until the node closes the socket, answers, or 5 s pass.
 * A refused peer is closed at once, so the deadline only bounds a node that neither answers nor
 * closes (which would be a bug of its own). Returns the bytes the node sent.
 */
async function bytesBack(from: string, port: number, infohash: string): Promise<number> {
  const p = dial(from, port, infohash);
  try {
    await until(() => p.closed() || p.received() >= 68, "the node to answer or close", 5_000).catch(() => {});
    return p.received();
  } finally {
    p.socket.destroy();
  }
}

/** Announce `announceUrl` (the owner's, passkey included) for `infohash` from address `from`. */
async function announceFrom(from: string, announceUrl: string, infohash: string, size: number) {
  const u = new URL(announceUrl);
  const binary = [...Buffer.from(infohash, "hex")].map((b) => `%${b.toString(16).padStart(2, "0")}`).join("");
  const peerId = `-PT0000-${randomBytes(6).toString("hex")}`;
  const q = `info_hash=${binary}&peer_id=${peerId}&port=6881&uploaded=0&downloaded=0&left=${size}&compact=1&event=started`;
  const res = await raw(
    Number(u.port),
    `GET ${u.pathname}${u.search}&${q} HTTP/1.1\r\nHost: ${u.host}\r\nConnection: close\r\n\r\n`,
    undefined,
    from,
  );
  expect(res.status).toBe(200);
  expect(res.body).not.toContain("failure reason");
}

async function saveTrackerOnly(svc: Service, id: string, dir: string): Promise<string> {
  // Without the url-list, the bytes can only come over the BitTorrent port.
  const t = bdecode(await svc.torrent(id)) as BDict;
  delete t["url-list"];
  const path = join(dir, "tracker-only.torrent");
  await writeFile(path, bencode(t));
  return path;
}

describe("given TORRENT__ACCESS=passkey (the default) and an owner who downloaded from 127.0.0.1", () => {
  let svc: Service;
  let id: string;
  let infohash: string;
  let torrentPath: string;

  beforeAll(async () => {
    svc = await Service.start();
    id = await svc.create({ url: origin.url("/data.bin") });
    const st = await svc.waitFor(id);
    expect(st.error_message ?? st.status).toBe("ready");
    infohash = st.infohash;
    torrentPath = await saveTrackerOnly(svc, id, await tmpDir("pt-gate-"));
    const file = await aria2Download({ torrentPath, dir: await tmpDir("pt-gate-owner-"), timeoutMs: 60_000 });
    expect(await sha256File(file)).toBe(content.body.sha256());
  }, TEST_LIMIT);
  afterAll(async () => {
    await svc?.stop();
  });

  /**
   * libtorrent bound to `bind`, given a magnet with only the infohash, dials the port and must
   * still be waiting for metadata when it is killed. Proving absence needs a bounded wait: it
   * re-dials every 2 s while it has no peer, so 8 s is several attempts, each answered with nothing.
   */
  async function noMetadata(ih: string, bind: string, opts: { encryption?: "rc4" } = {}): Promise<Error> {
    const err = await libtorrentDownload({
      magnet: `magnet:?xt=urn:btih:${ih}`,
      bind,
      dir: await tmpDir("pt-gate-attacker-"),
      connect: { host: "127.0.0.1", port: svc.torrentPort },
      timeoutMs: 8_000,
      ...opts,
    }).then(
      () => null,
      (e: Error) => e,
    );
    expect(err).not.toBeNull(); // null: libtorrent got the file
    expect(err!.message).toContain("no complete download within");
    expect(err!.message).toContain("downloading_metadata");
    expect(err!.message).not.toContain("metadata_received");
    return err!;
  }

  test("when 127.0.0.2 sends a handshake with only the infohash, then the node sends back not one byte", async () => {
    expect(await bytesBack("127.0.0.2", svc.torrentPort, infohash)).toBe(0);
    // The same probe from the owner's address is answered (68-byte handshake and more), so the
    // zero above is the gate, not a probe that cannot work.
    expect(await bytesBack("127.0.0.1", svc.torrentPort, infohash)).toBeGreaterThanOrEqual(68);
  });

  test(
    "when the owner's address asks for another torrent it has no passkey for, then it gets nothing either",
    async () => {
      const otherId = await svc.create({ url: origin.url("/other.bin") });
      const st = await svc.waitFor(otherId);
      expect(st.status).toBe("ready");
      expect(await bytesBack("127.0.0.1", svc.torrentPort, st.infohash)).toBe(0);
    },
    TEST_LIMIT,
  );

  test(
    "when libtorrent at the owner's address asks over MSE for a torrent it has no passkey for, then it gets no metadata",
    async () => {
      const otherId = await svc.create({ url: origin.url("/other.bin") });
      const st = await svc.waitFor(otherId);
      expect(st.status).toBe("ready");
      // Encrypted: the address passes the connection check (it holds the owner's entitlement), so
      // the refusal comes once the MSE handshake names the torrent. Absence needs a bounded wait,
      // as below.
      const err = await noMetadata(st.infohash, "127.0.0.1", { encryption: "rc4" });
      expect(err.message).toContain("enc settings: out=0 in=0");
    },
    TEST_LIMIT,
  );

  test(
    "when libtorrent at 127.0.0.2 dials the port with a magnet of only the infohash, then it gets no metadata",
    async () => {
      await noMetadata(infohash, "127.0.0.2");
    },
    TEST_LIMIT,
  );

  test(
    "when the same libtorrent at 127.0.0.2 first announces with the owner's passkey, then it downloads the exact bytes",
    async () => {
      const file = await libtorrentDownload({
        torrentPath,
        bind: "127.0.0.2",
        dir: await tmpDir("pt-gate-entitled-"),
        connect: { host: "127.0.0.1", port: svc.torrentPort },
        timeoutMs: 60_000,
      });
      expect(await sha256File(file)).toBe(content.body.sha256());
    },
    TEST_LIMIT,
  );

  test(
    "when a request is deleted, then the open connection its passkey allowed is closed and a new one gets nothing",
    async () => {
      // A second request for the same URL shares the job, so the torrent stays seeded for the
      // first one: what closes the connection is the passkey's revocation, not the end of seeding.
      const second = await svc.create({ url: origin.url("/data.bin"), ttl: 3600 });
      expect((await svc.waitFor(second)).infohash).toBe(infohash);
      const tr = new URLSearchParams((await svc.magnet(second)).slice("magnet:?".length)).get("tr")!;
      await announceFrom("127.0.0.3", tr, infohash, content.body.size);
      const open = dial("127.0.0.3", svc.torrentPort, infohash);
      try {
        await until(() => open.received() >= 68, "the node's handshake to the entitled peer", 10_000);
        expect(open.closed()).toBe(false);

        const res = await svc.api(`/v1/requests/${second}`, { method: "DELETE" });
        expect(res.status).toBeLessThan(300);
        await until(() => open.closed(), "the revoked peer's connection to be closed", 15_000);
      } finally {
        open.socket.destroy();
      }
      expect(await bytesBack("127.0.0.3", svc.torrentPort, infohash)).toBe(0);
      // Still seeded for the first request's owner.
      expect(await bytesBack("127.0.0.1", svc.torrentPort, infohash)).toBeGreaterThanOrEqual(68);
    },
    TEST_LIMIT,
  );
});

describe("given TORRENT__ACCESS=open", () => {
  test(
    "when 127.0.0.2 sends a handshake with only the infohash, then the node answers it",
    async () => {
      const svc = await Service.start({ env: { TORRENT__ACCESS: "open" } });
      try {
        const id = await svc.create({ url: origin.url("/other.bin") });
        const st = await svc.waitFor(id);
        expect(st.status).toBe("ready");
        expect(await bytesBack("127.0.0.2", svc.torrentPort, st.infohash)).toBeGreaterThanOrEqual(68);
      } finally {
        await svc.stop();
      }
    },
    TEST_LIMIT,
  );
});

describe("given an extra tracker (TORRENT__ANNOUNCE_URL) that lists a peer with no passkey", () => {
  test(
    "the seeder never dials that peer, though the tracker told it where to find it",
    async () => {
      // The "stranger": a plain TCP listener on 127.0.0.2 that counts the connections it gets.
      const { createServer } = await import("node:net");
      let dialled = 0;
      const stranger = createServer((s) => {
        dialled++;
        s.destroy();
      });
      await new Promise<void>((r) => stranger.listen(0, "127.0.0.2", r));
      const strangerPort = (stranger.address() as { port: number }).port;
      // The extra tracker answers every announce with the stranger's address (compact, BEP 23).
      let announces = 0;
      const peer = Buffer.from([127, 0, 0, 2, strangerPort >> 8, strangerPort & 0xff]);
      const tracker = Bun.serve({
        hostname: "127.0.0.1",
        port: 0,
        fetch() {
          announces++;
          return new Response(bencode({ interval: 60, complete: 1, incomplete: 1, peers: peer }));
        },
      });
      const svc = await Service.start({
        env: { TORRENT__ANNOUNCE_URL: `http://127.0.0.1:${tracker.port}/announce` },
      });
      try {
        const id = await svc.create({ url: origin.url("/data.bin") });
        expect((await svc.waitFor(id)).status).toBe("ready");
        await until(() => announces > 0, "the seeder to announce to the extra tracker", 10_000);
        // Proving an absence needs a bounded wait: with the gate off the seeder dials the listed peer
        // within this wait (checked: with the gate reverted this test sees 2 connections).
        await Bun.sleep(3_000);
        expect(dialled).toBe(0);
      } finally {
        await svc.stop();
        tracker.stop(true);
        stranger.close();
      }
    },
    TEST_LIMIT,
  );
});
