/**
 * The content store's side of partial bodies and space: a kept partial body is continued by a
 * later store on the same folder (a restart) to the same SHA-256 and piece hashes as one written
 * in one go; what the store counts as used follows commits, removals and kept partial bodies; a
 * claim over the cap asks for space to be freed once, then fails naming the setting.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ContentStore } from "../../seeder/node/cas";
import { InsufficientStorage } from "../../seeder/node/store-space";
import { removeTmpDirs, tmpDir } from "../support/clients";

afterAll(() => removeTmpDirs());

const PIECE = 256 * 1024;
const sha256 = (data: Uint8Array) => createHash("sha256").update(data).digest("hex");

async function write(w: Awaited<ReturnType<ContentStore["createWriter"]>>, data: Uint8Array, chunk = 50_001) {
  for (let off = 0; off < data.length; off += chunk) await w.write(data.subarray(off, off + chunk));
}

describe("a kept partial body", () => {
  test("continued by the next store on the folder: same sha256 and piece hashes as one written whole", async () => {
    const base = await tmpDir("pt-partial-");
    const data = randomBytes(3 * 1024 * 1024 + 12_345);
    const first = new ContentStore(base, () => PIECE);
    await first.init();
    const w = await first.createWriter({ expectedSize: data.length, key: "job-1", resume: { url: "u" } });
    await write(w, data.subarray(0, 1_300_000));
    const kept = await w.keep();
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThanOrEqual(1_300_000);
    expect((await first.tempFiles()).sort()).toEqual(["job-1.json", "job-1.part"]);

    // A restart: the partial body is kept, other temp files go.
    await writeFile(join(first.tmpRoot, "stray.part"), "x");
    const second = new ContentStore(base, () => PIECE);
    await second.init();
    expect(second.partials()).toEqual(["job-1"]);
    expect(second.usedBytes()).toBe(kept);
    const partial = await second.openPartial("job-1");
    expect(partial).toEqual({ key: "job-1", size: kept, meta: { url: "u" } });
    const resumed = await second.resumeWriter(partial!, { expectedSize: data.length });
    expect(resumed.size).toBe(kept);
    await write(resumed, data.subarray(kept));
    const blob = await resumed.commit();
    expect(blob.sha256).toBe(sha256(data));
    expect(await second.verify(blob.sha256)).toBe(true);
    expect(await second.tempFiles()).toEqual([]);

    const whole = new ContentStore(await tmpDir("pt-partial-whole-"), () => PIECE);
    await whole.init();
    const ww = await whole.createWriter({ expectedSize: data.length });
    await write(ww, data);
    const ref = await ww.commit();
    expect(blob.pieces).toBeDefined();
    expect(Buffer.from(blob.pieces!.hashes).equals(Buffer.from(ref.pieces!.hashes))).toBe(true);
  });

  test("one without resume data, or of a writer that is not resumable, does not survive", async () => {
    const base = await tmpDir("pt-partial-");
    const first = new ContentStore(base);
    await first.init();
    const w = await first.createWriter({ key: "job-2" });
    await write(w, randomBytes(100_000));
    expect(await w.keep()).toBe(0); // not resumable: removed
    expect(await first.tempFiles()).toEqual([]);
    await writeFile(join(first.tmpRoot, "job-3.part"), "partial without its .json");
    const second = new ContentStore(base);
    await second.init();
    expect(second.partials()).toEqual([]);
    expect(await readdir(second.tmpRoot)).toEqual([]);
  });

  test("removePartial removes a kept one, not one a writer has open", async () => {
    const s = new ContentStore(await tmpDir("pt-partial-"));
    await s.init();
    const w = await s.createWriter({ key: "job-4", resume: {} });
    await write(w, randomBytes(300_000));
    expect(await s.removePartial("job-4")).toBe(false); // open
    await w.keep();
    expect(s.partials()).toEqual(["job-4"]);
    expect(await s.removePartial("job-4")).toBe(true);
    expect(s.partials()).toEqual([]);
    expect(await s.tempFiles()).toEqual([]);
    expect(s.usedBytes()).toBe(0);
  });
});

describe("space", () => {
  test("used bytes follow commits and removals, and count what open writers claimed", async () => {
    const s = new ContentStore(await tmpDir("pt-space-"));
    await s.init();
    const data = randomBytes(200_000);
    const w = await s.createWriter({ expectedSize: data.length });
    expect(s.usedBytes()).toBe(data.length); // claimed up front
    await write(w, data);
    const blob = await w.commit();
    blob.pin.release();
    expect(s.usedBytes()).toBe(data.length);
    // the same bytes again: one blob
    const again = await s.createWriter({ expectedSize: data.length });
    await write(again, data);
    (await again.commit()).pin.release();
    expect(s.usedBytes()).toBe(data.length);
    expect(await s.remove(blob.sha256, async () => false)).toBe(data.length);
    expect(s.usedBytes()).toBe(0);
    // counted again from the disk by a fresh store
    const w2 = await s.createWriter();
    await write(w2, data);
    (await w2.commit()).pin.release();
    const fresh = new ContentStore(s.basePath);
    await fresh.init();
    expect(fresh.usedBytes()).toBe(data.length);
  });

  test("a claim over STORAGE__MAX_BYTES asks for space once, then fails naming the setting; what was freed lets it through", async () => {
    const s = new ContentStore(await tmpDir("pt-space-"), undefined, { maxBytes: 500_000, minFreeBytes: 0 });
    await s.init();
    const old = await s.createWriter();
    await write(old, randomBytes(300_000));
    const oldBlob = await old.commit();
    oldBlob.pin.release();
    let asked = 0;
    s.reclaim = async () => {
      asked++;
    };
    await expect(s.createWriter({ expectedSize: 300_000 })).rejects.toThrow(
      "The body (300000 bytes) does not fit: this node's store would hold 600000 bytes, over STORAGE__MAX_BYTES=500000 bytes, even after removing content no live request needs",
    );
    expect(asked).toBe(1);
    expect(await s.tempFiles()).toEqual([]);
    // larger than the whole cap: no use asking
    await expect(s.createWriter({ expectedSize: 600_000 })).rejects.toBeInstanceOf(InsufficientStorage);
    expect(asked).toBe(1);
    // unannounced size: refused once it grows past what fits
    const unsized = await s.createWriter();
    await expect(write(unsized, randomBytes(300_000))).rejects.toThrow(/size not announced\) does not fit/);
    await unsized.abort();
    expect(asked).toBe(2);
    // a reclaim that frees the old blob lets the body in
    s.reclaim = async () => {
      asked++;
      await s.remove(oldBlob.sha256, async () => false);
    };
    const w = await s.createWriter({ expectedSize: 300_000 });
    await write(w, randomBytes(300_000));
    (await w.commit()).pin.release();
    expect(asked).toBe(3);
    expect(s.usedBytes()).toBe(300_000);
  });
});
