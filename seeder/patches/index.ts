/**
 * Every patch ProxyTorrent applies to a library's internals, and the start-up self-check.
 *
 * One file per patch in this folder; each says why it exists and which package version it was
 * written against, and its install function throws LibraryPatchError when it cannot apply (so no
 * caller can run silently without it). `verifyLibraryPatches` runs every check a process relies on
 * before anything starts, logs one line `{"msg":"library patches","active":[...]}` (plus a warning
 * per package whose version differs from the one a patch was written for), and throws
 * LibraryPatchError naming the patch and the package version when one cannot apply.
 * Why runtime patches and not install-time ones or forks: docs/patches.md.
 */
import type { Config } from "../../src/config";
import type { Logger } from "../../src/log";
import { mseFastDhPatch } from "./bittorrent-protocol-mse-dh";
import { trackerSwarmPatch } from "./bittorrent-tracker-swarm";
import { statementCachePatch } from "./libsql-statement-cache";
import { agentAddRequestPatch } from "./node-http-agent";
import { describeVersions, type LibraryPatch, LibraryPatchError } from "./patch";
import { fastPipesPatch } from "./webtorrent-fast-pipes";
import { peerGatePatch } from "./webtorrent-peer-gate";

export { type LibraryPatch, LibraryPatchError } from "./patch";

export const LIBRARY_PATCHES: readonly LibraryPatch[] = [
  fastPipesPatch,
  mseFastDhPatch,
  trackerSwarmPatch,
  statementCachePatch,
  agentAddRequestPatch,
  peerGatePatch,
];

export interface PatchStatus {
  name: string;
  /** null: it applies; otherwise what is missing. */
  problem: string | null;
  /** Packages whose loaded version differs from the one the patch was written for. */
  drift: { package: string; writtenFor: string; installed: string }[];
}

/** Check each patch against what this process loads. Never throws. */
export function checkLibraryPatches(patches: readonly LibraryPatch[] = LIBRARY_PATCHES): PatchStatus[] {
  return patches.map((p) => {
    let problem: string | null;
    try {
      problem = p.check();
    } catch (e) {
      problem = `its check failed: ${(e as Error).message}`;
    }
    const drift = Object.entries(p.writtenFor)
      .map(([pkg, want]) => ({ package: pkg, writtenFor: want, installed: p.installedVersion(pkg) }))
      .filter((d) => d.installed !== d.writtenFor);
    return { name: p.name, problem, drift };
  });
}

/** The patches a process with this config relies on (which code paths it will run). */
export function patchesFor(config: Config, role: "embedded" | "api" | "seeder"): LibraryPatch[] {
  const out: LibraryPatch[] = [];
  const node = role !== "api";
  if (node && config.torrent.uploadRateLimit <= 0) out.push(fastPipesPatch);
  if (node) out.push(mseFastDhPatch, trackerSwarmPatch);
  if (config.database.url.startsWith("file:")) out.push(statementCachePatch);
  if (node) out.push(agentAddRequestPatch);
  if (node && config.torrent.access === "passkey") out.push(peerGatePatch);
  return out;
}

/**
 * The start-up self-check: log which patches are active, warn about version drift, and throw
 * LibraryPatchError for the first relied-on patch that cannot apply.
 */
export function verifyLibraryPatches(log: Logger, patches: readonly LibraryPatch[]): PatchStatus[] {
  const status = checkLibraryPatches(patches);
  const drift = status.flatMap((s) => s.drift.map((d) => ({ patch: s.name, ...d })));
  for (const d of drift)
    log.warn(
      `library patch "${d.patch}" was written for ${d.package} ${d.writtenFor} but ${d.installed} is installed: re-check it (docs/patches.md)`,
      d,
    );
  const failed = status.filter((s) => s.problem !== null);
  log.info("library patches", {
    active: status.filter((s) => s.problem === null).map((s) => s.name),
    ...(failed.length ? { failed: failed.map((s) => s.name) } : {}),
    ...(drift.length ? { drift } : {}),
  });
  const first = failed[0];
  if (first) {
    const patch = patches.find((p) => p.name === first.name)!;
    throw new LibraryPatchError(first.name, first.problem!, describeVersions(patch));
  }
  return status;
}
