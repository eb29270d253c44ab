/**
 * Which addresses may talk to the BitTorrent port about which torrent (TORRENT__ACCESS=passkey).
 *
 * The node's tracker records (announcer's address, infohash) each time someone announces with a
 * live passkey (NodeAccess `onGrant`); the swarm's peer gate (seeder/patches/webtorrent-peer-gate.ts)
 * asks `allows()` before it answers an incoming peer. An entitlement lasts `windowMs` after the
 * last such announce: clients re-announce every tracker interval, so twice that survives one
 * missed or late re-announce while still forgetting a peer that went quiet.
 *
 * Only the SHA-256 of the passkey is kept (to re-check it against the database with
 * `liveGrantHashes`, so a DELETE or key revocation also closes the BitTorrent port), never the
 * passkey. Memory is bounded: past `maxEntries`, the entitlement announced longest ago goes first.
 */

/**
 * Default cap on remembered (address, torrent) pairs: a few hundred bytes each, so ~15 MB at most.
 * A busy peer evicted early gets back in with its next announce.
 */
export const PEER_ENTITLEMENTS_MAX = 50_000;

export interface Entitlement {
  passkeyHash: string;
  expiresAt: number;
}

/**
 * One spelling per address on both sides: the tracker and the BitTorrent socket may report an
 * IPv4 peer as `::ffff:1.2.3.4` (a dual-stack listener) or `1.2.3.4`.
 */
export function peerAddress(address: string): string {
  return address
    .trim()
    .toLowerCase()
    .replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, "");
}

export interface PeerEntitlementsOptions {
  windowMs: number;
  maxEntries: number;
  now: () => number;
}

export class PeerEntitlements {
  /** "address infohash" -> entitlement; Map order = order of the latest announce (oldest first). */
  private readonly entries = new Map<string, Entitlement>();
  /** address -> how many entries it has, for the "anything at all for this address?" check. */
  private readonly perAddress = new Map<string, number>();

  constructor(private readonly opts: PeerEntitlementsOptions) {}

  get size(): number {
    return this.entries.size;
  }

  /** `address` announced with a live passkey (by its SHA-256) for `infohash` just now. */
  grant(address: string, infohash: string, passkeyHash: string): void {
    const ip = peerAddress(address);
    const key = `${ip} ${infohash.toLowerCase()}`;
    if (this.entries.has(key)) this.delete(key);
    // Re-inserted at the end: eviction takes the entry announced longest ago.
    this.entries.set(key, { passkeyHash, expiresAt: this.opts.now() + this.opts.windowMs });
    this.perAddress.set(ip, (this.perAddress.get(ip) ?? 0) + 1);
    while (this.entries.size > this.opts.maxEntries) {
      const oldest = this.entries.keys().next().value as string;
      this.delete(oldest);
    }
  }

  /** May `address` have `infohash` now? */
  allows(address: string, infohash: string): boolean {
    const e = this.entries.get(`${peerAddress(address)} ${infohash.toLowerCase()}`);
    return e !== undefined && e.expiresAt > this.opts.now();
  }

  /**
   * Does `address` hold any entitlement at all? Asked when a connection opens, before its
   * handshake names a torrent (an encrypted handshake answers with key material before that).
   * Expired entries may still count here until `revalidate` removes them; `allows` decides.
   */
  admitsAddress(address: string): boolean {
    return this.perAddress.has(peerAddress(address));
  }

  /**
   * Forget expired entitlements and those whose passkey is no longer live. `live` gets every
   * distinct passkey hash held and returns the live ones (one database query).
   * Returns how many entitlements were dropped.
   */
  async revalidate(live: (hashes: string[]) => Promise<Set<string>>): Promise<number> {
    const before = this.entries.size;
    const now = this.opts.now();
    for (const [key, e] of this.entries) if (e.expiresAt <= now) this.delete(key);
    if (this.entries.size > 0) {
      const asked = new Set([...this.entries.values()].map((e) => e.passkeyHash));
      const alive = await live([...asked]);
      // A passkey first seen while the query ran was live a moment ago: the next round checks it.
      for (const [key, e] of this.entries)
        if (asked.has(e.passkeyHash) && !alive.has(e.passkeyHash)) this.delete(key);
    }
    return before - this.entries.size;
  }

  private delete(key: string): void {
    if (!this.entries.delete(key)) return;
    const ip = key.slice(0, key.indexOf(" "));
    const n = (this.perAddress.get(ip) ?? 1) - 1;
    if (n <= 0) this.perAddress.delete(ip);
    else this.perAddress.set(ip, n);
  }
}
