/**
 * Our tracker's own swarm class, plugged into bittorrent-tracker's Server.
 *
 * The tracker (seeder/node/swarm/tracker.ts) must never hand a peer its own address and must never
 * let an announce overwrite the node's seeder. Stock bittorrent-tracker has no option for either,
 * but it has an extension point: lib/server/swarm.js calls itself "the default implementation of an
 * interface that you need to support when overriding Server.createSwarm() and Server.getSwarm()".
 * So the tracker replaces `createSwarm` on its own Server instance and builds a subclass of
 * `Server.Swarm` that overrides the public `announce` and `scrape`, keeping the peers in the
 * swarm's `peers` LRU (the part of that interface server.js itself reads). It no longer calls the
 * private `_onAnnounce*` helpers: the event bookkeeping is in tracker.ts.
 *
 * Not a patch on shared code (nothing outside our Server instance changes), but it silently stops
 * working if upstream stops creating swarms through `createSwarm`: stock swarms would come back,
 * echoing announcers to themselves and letting anyone with the seeder's peer id move it. Written
 * against bittorrent-tracker 11.2.3; `requireTrackerSwarmPatch()` refuses to build a tracker when
 * that extension point has changed (docs/patches.md).
 */
import { dirname } from "node:path";
import Server from "bittorrent-tracker/server";
import { type LibraryPatch, packageVersion, requirePatch } from "./patch";

const LRU_METHODS = ["get", "set", "peek", "remove"] as const;

export const trackerSwarmPatch: LibraryPatch = {
  name: "bittorrent-tracker-swarm",
  why: "a swarm that never returns an announcer to itself and never records the node's seeder",
  writtenFor: { "bittorrent-tracker": "11.2.3" },
  installedVersion: (pkg) =>
    packageVersion(pkg, dirname(Bun.resolveSync("bittorrent-tracker/server", import.meta.dir))),
  check() {
    const proto = Server?.prototype as unknown as Record<string, unknown> | undefined;
    if (typeof proto?.createSwarm !== "function") return "Server has no createSwarm";
    if (typeof proto.onHttpRequest !== "function") return "Server has no onHttpRequest";
    // The announce path must still go through createSwarm for a new infohash.
    if (
      !Object.values(Object.getOwnPropertyDescriptors(proto)).some((d) =>
        String(d.value).includes(".createSwarm("),
      )
    )
      return "Server no longer creates swarms through createSwarm";
    if (typeof Server.Swarm !== "function") return "Server.Swarm is missing";
    const sw = Server.Swarm.prototype as unknown as Record<string, unknown>;
    if (typeof sw.announce !== "function" || typeof sw.scrape !== "function")
      return "Server.Swarm has no announce/scrape";
    const probe = new Server.Swarm("0".repeat(40), {} as Server) as unknown as {
      peers?: Record<string, unknown>;
    };
    for (const m of LRU_METHODS)
      if (typeof probe.peers?.[m] !== "function") return `a swarm's peers have no ${m}()`;
    if (!Array.isArray(probe.peers?.keys)) return "a swarm's peers have no keys list";
    return null;
  },
};

/** Throw LibraryPatchError unless bittorrent-tracker still builds swarms the way tracker.ts needs. */
export function requireTrackerSwarmPatch(): void {
  requirePatch(trackerSwarmPatch);
}
