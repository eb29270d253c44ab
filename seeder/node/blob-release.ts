/**
 * A node deletes a blob from its store once no live job of its own needs that content: when it
 * stops seeding a torrent, when a job ends without becoming ready, and in the sweep that runs at
 * start-up and on every garbage-collection tick (seeder/node/gc.ts) for blobs a previous run left
 * behind or whose removal failed.
 *
 * "Needs" is answered from three places, because each one alone has a gap:
 * - the database: a job of this node (fetching it, or seeding it) that records the content hash
 *   and has not ended in error or cancelled (contentNeeded, src/jobs/queue.ts);
 * - the store's pins: a fetch commits the blob (BlobWriter.commit renames it into place) BEFORE its
 *   job records the hash (daemon storeStage). In between, the database does not show the need, so
 *   commit pins the hash before the rename and the job releases the pin only once its row records
 *   the hash, or when the job ends;
 * - what this process seeds right now (`inUse`): a torrent stays seeded until the next reconcile
 *   drops it, even when its job was cancelled a moment ago.
 *
 * Why a concurrent new request for the same content never loses its blob: ContentStore.remove
 * asks all of the above under the hash's lock, and commit's rename takes the same lock. Either the
 * rename comes first (then the pin was taken before it and remove sees it), or the removal holds
 * the lock first (then the rename waits, runs after the unlink and puts the whole blob back). The
 * pin is released only after the job's row records the hash, so from then on the database check
 * sees it. Re-seeding from the database (the daemon's reconcile) checks for the blob and starts
 * serving it under the same lock, so it never starts on a blob a removal is about to unlink; a
 * torrent it did start is then seen by `inUse`.
 *
 * Crashes: the unlink is atomic and its directory is fsynced, so a crash leaves the whole blob or
 * nothing; a blob left behind (crash before the unlink, or a fetch committed just before a crash)
 * is removed by the next sweep, which asks the same questions.
 */
import type { Database } from "../../src/db";
import { contentNeeded, contentNeededOn } from "../../src/jobs/queue";
import type { Logger } from "../../src/log";
import type { Metrics } from "../process/metrics";
import type { ContentStore } from "./cas";
import type { StoreUsage } from "./gc";

export interface BlobReleaseDeps {
  store: ContentStore;
  db: Database;
  nodeName: string;
  log: Logger;
  metrics?: Metrics;
  /** Whether this process serves the content right now (seeded torrents). */
  inUse?: (contentHash: string) => boolean;
  /** The store's size for the metrics: told of every removal. */
  usage?: StoreUsage;
}

/** Delete the blob unless something still needs it. Returns the bytes removed, or null. */
export async function releaseBlob(deps: BlobReleaseDeps, contentHash: string): Promise<number | null> {
  const { store, db, nodeName, log, metrics, inUse } = deps;
  const bytes = await store.remove(
    contentHash,
    async () => (inUse?.(contentHash) ?? false) || (await contentNeeded(db, nodeName, contentHash)),
  );
  if (bytes !== null) {
    deps.usage?.removed(contentHash);
    log.info("blob removed", { content_hash: contentHash, bytes, removed: true });
    metrics?.blobsRemoved.inc();
  }
  return bytes;
}

/**
 * The sweep (at start-up and on every GC tick, seeder/node/gc.ts): every blob of the store that no
 * live job of this node records goes (each one re-checked by releaseBlob under its lock, so jobs
 * that started meanwhile keep theirs). With `measure`, the blobs kept are handed to it with their
 * sizes: the store's exact size for the metrics, at no extra directory walk. A blob's size never
 * changes (its name is its content's hash), so only blobs `measure` does not know yet are stat'ed.
 */
export async function sweepBlobs(
  deps: BlobReleaseDeps,
  /** Checked between blobs: a node shutting down does not finish the sweep. */
  stopped: () => boolean = () => false,
  measure?: Pick<StoreUsage, "sizeOf" | "scanned">,
): Promise<{ removed: number; bytes: number }> {
  const needed = await contentNeededOn(deps.db, deps.nodeName);
  const kept = new Map<string, number>();
  let removed = 0;
  let bytes = 0;
  for await (const hash of deps.store.blobs()) {
    if (stopped()) return { removed, bytes };
    const n = needed.has(hash) ? null : await releaseBlob(deps, hash);
    if (n !== null) {
      removed++;
      bytes += n;
    } else if (measure) {
      const size = measure.sizeOf(hash) ?? (await deps.store.size(hash));
      if (size !== null) kept.set(hash, size);
    }
  }
  measure?.scanned(kept);
  return { removed, bytes };
}
