/**
 * The node's side of TORRENT__ACCESS (src/torrents/access.ts has the rules): which announces its
 * tracker answers, which web seed URLs it serves, and the passkey its own seeder announces with.
 *
 * Passkeys and their hashes are never logged; refusals all read the same, so a stranger cannot
 * tell a wrong passkey from content this node does not hold.
 */
import { randomHex, timingSafeEqual, utf8 } from "../../src/auth/crypto";
import type { Clock } from "../../src/clock";
import type { Database } from "../../src/db";
import { type Grant, passkeyGrant, type TorrentAccess } from "../../src/torrents/access";
import type { NodePath } from "../../src/torrents/links";
import { passkeyedTorrent } from "../../src/torrents/links";

/** Sent back for every refused announce or scrape. */
export const TRACKER_DENIED =
  "access denied: this torrent needs the passkey from your .torrent or magnet link";

export interface NodeAccessDeps {
  db: Database;
  clock: Clock;
  nodeName: string;
  config: { torrent: { access: TorrentAccess; passkeyTtlSeconds: number } };
  /** A peer announced with a live passkey (for the BitTorrent port's own check). */
  onGrant?: (remoteAddress: string, grant: Grant) => void;
}

export class NodeAccess {
  /**
   * The passkey this node's own seeder announces with: random per process, known to nobody else,
   * so the seeder's announces pass without a request of its own.
   */
  private readonly ownPasskey = randomHex(16);

  constructor(private readonly deps: NodeAccessDeps) {}

  get mode(): TorrentAccess {
    return this.deps.config.torrent.access;
  }

  /** The torrent as the node's own seeder uses it: announcing with the node's passkey. */
  forOwnSeeder(torrent: Uint8Array): Uint8Array {
    return this.mode === "passkey" ? passkeyedTorrent(torrent, this.ownPasskey) : torrent;
  }

  private isOwn(passkey: string | null): boolean {
    return passkey !== null && timingSafeEqual(utf8(passkey), utf8(this.ownPasskey));
  }

  /** The live grant `passkey` holds on this node, or null. */
  private async grant(passkey: string): Promise<Grant | null> {
    const { db, clock, config, nodeName } = this.deps;
    const grant = await passkeyGrant(db, passkey, clock.now(), config.torrent.passkeyTtlSeconds);
    // A torrent names the tracker and web seed of the node that seeds it; another node's grant
    // is not for this one.
    return grant && grant.seedNode === nodeName ? grant : null;
  }

  /** The tracker's `authorize` hook: null = answer it, else the failure reason. */
  async tracker(q: {
    action: "announce" | "scrape";
    passkey: string | null;
    event?: string | null;
    infohashes: string[];
    remoteAddress: string;
  }): Promise<string | null> {
    if (this.isOwn(q.passkey)) return null;
    if (this.mode === "open") return null;
    if (!q.passkey) return TRACKER_DENIED;
    const grant = await this.grant(q.passkey);
    // One passkey opens one torrent: a scrape of several infohashes must name only that one.
    if (!grant || !q.infohashes.every((h) => h === grant.infohash)) return TRACKER_DENIED;
    // A client saying it stopped gets its answer but no (renewed) entitlement to the port.
    if (q.action === "announce" && q.event !== "stopped") this.deps.onGrant?.(q.remoteAddress, grant);
    return null;
  }

  /** The content hash a web seed path may serve, or null (answer 404 whatever the reason). */
  async webSeed(path: Extract<NodePath, { kind: "webseed" }>): Promise<string | null> {
    if (path.passkey === null) return this.mode === "open" ? path.hash : null;
    return (await this.grant(path.passkey))?.contentHash ?? null;
  }
}
