/**
 * How much the content store may take: STORAGE__MAX_BYTES caps what this node's store holds
 * (blobs plus temp files being written), STORAGE__MIN_FREE_BYTES keeps a margin free on the disk
 * under it. Either one 0 turns that check off.
 *
 * Writers claim their bytes before they write them (ContentStore.claim): a body whose size was
 * announced claims it all up front, one of unknown size as it streams. The cap is checked on every
 * claim, in memory; the margin asks the filesystem (statfs) at most every MARGIN_STEP bytes of a
 * writer, and counts what writers claimed but have not written to their files yet. A claim that does not
 * fit first lets the node free space (content no live job needs), then fails with
 * InsufficientStorage, which names the figures and the setting.
 */
import { statfs } from "node:fs/promises";

export interface SpaceLimits {
  /** STORAGE__MAX_BYTES: 0 = no cap. */
  maxBytes: number;
  /** STORAGE__MIN_FREE_BYTES: 0 = no margin (writes may then meet ENOSPC). */
  minFreeBytes: number;
}

export const NO_LIMITS: SpaceLimits = { maxBytes: 0, minFreeBytes: 0 };

/**
 * A writer of unknown final size asks the filesystem again after this many more bytes (a statfs
 * per MiB costs nothing next to writing it); the margin may be undershot by that much per writer.
 */
export const MARGIN_STEP = 1024 * 1024;

/** The body does not fit in the store (the cap, or the free-space margin), even after freeing space. */
export class InsufficientStorage extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InsufficientStorage";
  }
}

/** Bytes an unprivileged writer may still use on the filesystem of `path`, and its size. */
export async function diskSpace(path: string): Promise<{ free: number; total: number }> {
  const s = await statfs(path);
  // Counts are in fragments where the runtime reports their size (as df does), else in blocks.
  const unit = (s as { frsize?: number }).frsize || s.bsize;
  // f_bavail, not f_bfree: the blocks reserved for root are not ours to plan with.
  return { free: s.bavail * unit, total: s.blocks * unit };
}

/** ENOSPC (disk full) or EDQUOT (quota): a write failed for want of space. */
export function isOutOfSpace(e: unknown): boolean {
  const code = (e as { code?: string } | null)?.code;
  return code === "ENOSPC" || code === "EDQUOT";
}
