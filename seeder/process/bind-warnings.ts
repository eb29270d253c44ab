/**
 * Start-up checks of where a node listens against what its torrents tell peers. A node reachable
 * from other machines (HOST public) whose NODE__PUBLIC_URL still names loopback makes torrents whose
 * tracker and web seed nobody else can reach: they "work" only on the node's own machine.
 */
import ipaddr from "ipaddr.js";
import type { Config } from "../../src/config";

function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  if (h === "localhost" || h.endsWith(".localhost")) return true;
  return ipaddr.isValid(h) && ipaddr.process(h).range() === "loopback";
}

/** The warning to log, or null when HOST is loopback or NODE__PUBLIC_URL is not. */
export function loopbackPublicUrlWarning(config: Config): string | null {
  if (isLoopbackHost(config.host)) return null;
  const publicHost = new URL(config.node.publicUrl).hostname;
  if (!isLoopbackHost(publicHost)) return null;
  return (
    `HOST=${config.host} accepts connections from other machines, but NODE__PUBLIC_URL is ` +
    `${config.node.publicUrl}: torrents would name a tracker and web seed on loopback that no other ` +
    "machine can reach. Set NODE__PUBLIC_URL to the address peers use to reach this node."
  );
}
