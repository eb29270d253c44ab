/**
 * The node's tracker hook (seeder/node/access.ts) on a real libSQL file: which announces pass, and
 * which of them entitle the announcer's address to the BitTorrent port.
 */
import { expect, test } from "bun:test";
import { eq } from "drizzle-orm";
import { NodeAccess, TRACKER_DENIED } from "../../seeder/node/access";
import { fetchJobs } from "../../src/db/schema";
import { createRequest } from "../../src/requests/service";
import { requestPasskey } from "../../src/torrents/access";
import { manualClock, requestInput, tempDatabase } from "../support/db";

const INFOHASH = "ab".repeat(20);

test("a live passkey's announce passes and entitles its address, except a `stopped` one; others are denied", async () => {
  const { db } = await tempDatabase();
  const clock = manualClock();
  const r = await createRequest(
    db,
    clock,
    requestInput({
      url: "http://o.test/a",
      userId: "t",
    }),
  );
  await db
    .update(fetchJobs)
    .set({ status: "ready", seeding: true, infohash: INFOHASH, contentHash: "cd".repeat(32), seedNode: "n1" })
    .where(eq(fetchJobs.id, r.jobId));
  const passkey = await requestPasskey(db, r.id);
  const granted: string[] = [];
  const access = new NodeAccess({
    db,
    clock,
    nodeName: "n1",
    config: { torrent: { access: "passkey", passkeyTtlSeconds: 0 } },
    onGrant: (address) => granted.push(address),
  });
  const announce = (event: string | null, key: string | null = passkey) =>
    access.tracker({
      action: "announce",
      passkey: key,
      event,
      infohashes: [INFOHASH],
      remoteAddress: "127.0.0.9",
    });

  expect(await announce("started")).toBeNull();
  expect(granted).toEqual(["127.0.0.9"]);
  expect(await announce("stopped")).toBeNull();
  expect(granted).toEqual(["127.0.0.9"]); // answered, not renewed
  expect(await announce(null, null)).toBe(TRACKER_DENIED);
  expect(await announce(null, "0".repeat(32))).toBe(TRACKER_DENIED);
  expect(granted).toEqual(["127.0.0.9"]);
});
