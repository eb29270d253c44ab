/**
 * The BitTorrent port's memory of who announced with a live passkey (seeder/node/peer-entitlements.ts):
 * per (address, infohash), for a window after the last announce, one spelling per IPv4 address,
 * bounded, and forgotten once the passkey is no longer live. Time is injected.
 */
import { describe, expect, test } from "bun:test";
import { PeerEntitlements, peerAddress } from "../../seeder/node/peer-entitlements";

const A = "a".repeat(40);
const B = "b".repeat(40);

function make(maxEntries = 100) {
  const clock = { t: 1_000_000 };
  const e = new PeerEntitlements({ windowMs: 600_000, maxEntries, now: () => clock.t });
  return { e, clock };
}

describe("given a peer that announced with a live passkey", () => {
  test("then it may have that torrent from that address only, and not another torrent", () => {
    const { e } = make();
    e.grant("127.0.0.2", A, "h1");
    expect(e.allows("127.0.0.2", A)).toBe(true);
    expect(e.allows("127.0.0.2", B)).toBe(false);
    expect(e.allows("127.0.0.3", A)).toBe(false);
    expect(e.admitsAddress("127.0.0.2")).toBe(true);
    expect(e.admitsAddress("127.0.0.3")).toBe(false);
  });

  test("then an IPv4-mapped IPv6 spelling of the address is the same address, both ways", () => {
    const { e } = make();
    expect(peerAddress("::FFFF:10.1.2.3")).toBe("10.1.2.3");
    expect(peerAddress("::ffff:7f00:1")).toBe("::ffff:7f00:1"); // not dotted: left alone
    e.grant("::ffff:10.1.2.3", A, "h1");
    expect(e.allows("10.1.2.3", A)).toBe(true);
    e.grant("10.9.9.9", A, "h1");
    expect(e.allows("::ffff:10.9.9.9", A)).toBe(true);
    expect(e.admitsAddress("::ffff:10.9.9.9")).toBe(true);
  });

  test("then the window runs from its last announce", () => {
    const { e, clock } = make();
    e.grant("127.0.0.2", A, "h1");
    clock.t += 599_999;
    expect(e.allows("127.0.0.2", A)).toBe(true);
    e.grant("127.0.0.2", A, "h1"); // re-announce
    clock.t += 599_999;
    expect(e.allows("127.0.0.2", A)).toBe(true);
    clock.t += 1;
    expect(e.allows("127.0.0.2", A)).toBe(false);
  });
});

describe("given more pairs than the cap", () => {
  test("then the one announced longest ago is forgotten first", () => {
    const { e } = make(2);
    e.grant("127.0.0.1", A, "h1");
    e.grant("127.0.0.2", A, "h2");
    e.grant("127.0.0.1", A, "h1"); // refreshed: now the newest
    e.grant("127.0.0.3", A, "h3");
    expect(e.size).toBe(2);
    expect(e.allows("127.0.0.2", A)).toBe(false);
    expect(e.admitsAddress("127.0.0.2")).toBe(false);
    expect(e.allows("127.0.0.1", A)).toBe(true);
    expect(e.allows("127.0.0.3", A)).toBe(true);
  });
});

describe("given a re-check of the passkeys held", () => {
  test("then pairs whose window passed are dropped without asking, and a dead passkey's pairs after one query", async () => {
    const { e, clock } = make();
    e.grant("127.0.0.1", A, "live");
    e.grant("127.0.0.2", A, "dead");
    e.grant("127.0.0.2", B, "dead");
    clock.t += 300_000;
    e.grant("127.0.0.3", B, "live");
    e.grant("127.0.0.4", B, "dead");
    e.grant("127.0.0.5", B, "dead");
    clock.t += 300_000; // the first three are past their window: dropped without asking
    const asked: string[][] = [];
    const dropped = await e.revalidate(async (hashes) => {
      asked.push(hashes);
      return new Set(hashes.filter((h) => h === "live"));
    });
    expect(dropped).toBe(5);
    expect(asked).toEqual([["live", "dead"]]);
    expect(e.allows("127.0.0.3", B)).toBe(true);
    expect(e.admitsAddress("127.0.0.2")).toBe(false);
  });

  test("then a passkey revoked while its window is open closes it", async () => {
    const { e } = make();
    e.grant("127.0.0.2", A, "h1");
    e.grant("127.0.0.2", B, "h2");
    expect(await e.revalidate(async () => new Set(["h2"]))).toBe(1);
    expect(e.allows("127.0.0.2", A)).toBe(false);
    expect(e.allows("127.0.0.2", B)).toBe(true);
  });

  test("then nothing is asked when nothing is held", async () => {
    const { e } = make();
    let calls = 0;
    await e.revalidate(async () => {
      calls++;
      return new Set();
    });
    expect(calls).toBe(0);
  });
});
