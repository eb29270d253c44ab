/**
 * Where a torrent's peers and web-seed clients go, and how the URLs handed to a caller carry that
 * request's passkey. Shared by the API (Bun and Worker), which hands out .torrent files and magnet
 * links, and by the node, which answers them.
 *
 * URL shapes on a node's HTTP port (`<public>` = NODE__PUBLIC_URL):
 *   <public>/announce, <public>/scrape                          open tracker (TORRENT__ACCESS=open)
 *   <public>/announce?passkey=<passkey>, …/scrape?passkey=…     the tracker, for one request's passkey
 *   <public>/webseed/<sha256>/                                  open web seed
 *   <public>/webseed/<passkey>/                                 the web seed, for one request's passkey
 * The tracker's passkey is a query parameter, not a path segment, because libtorrent's SSRF
 * mitigation refuses a tracker on a loopback or local address unless its path is exactly
 * `/announce` (checked with python3-libtorrent 2.0.8); clients add their own parameters after it
 * with `&`, and find the scrape URL by replacing `announce` with `scrape` (BEP 48). The web seed
 * URL ends in `/` so BEP 19 clients append the file name, and has no query (libtorrent refuses
 * local web seeds with one). A passkey is 32 hex characters, a content hash 64: the two web seed
 * forms cannot be confused.
 *
 * The node stores each torrent in the open shape. `announce`, `announce-list` and `url-list` sit
 * outside the `info` dictionary, so rewriting them per request (passkeyedTorrent) leaves the
 * infohash unchanged: every owner of the same content joins the same swarm.
 */
import { type BDict, type BEncodable, bencode, decodeTorrentDict, Encoded, text } from "./bencode";
import { PASSKEY_PATTERN } from "./passkey";

const base = (publicUrl: string) => publicUrl.replace(/\/+$/, "");

/** The node's tracker; with a passkey, the URL only that request's owner gets. */
export function announceUrl(publicUrl: string, passkey?: string): string {
  return passkey ? `${base(publicUrl)}/announce?passkey=${passkey}` : `${base(publicUrl)}/announce`;
}

/** The url-list entry: by content hash (open) or by passkey; trailing slash so clients append the name. */
export function webSeedUrl(publicUrl: string, sha256OrPasskey: string): string {
  return `${base(publicUrl)}/webseed/${sha256OrPasskey}/`;
}

/** What a path on the node's HTTP port asks for; null when it is none of the node's paths. */
export type NodePath =
  | { kind: "tracker"; action: "announce" | "scrape"; passkey: string | null }
  | { kind: "webseed"; hash: string; passkey: null }
  | { kind: "webseed"; hash: null; passkey: string };

export function nodePath(url: URL): NodePath | null {
  const { pathname } = url;
  if (pathname === "/announce" || pathname === "/scrape") {
    const passkey = url.searchParams.get("passkey")?.toLowerCase() ?? null;
    return { kind: "tracker", action: pathname.slice(1) as "announce" | "scrape", passkey };
  }
  // Only at the root: the node serves these before the API app, so `/v1/...` stays the app's.
  const seed = pathname.match(/^\/webseed\/([0-9a-fA-F]{64}|[0-9a-fA-F]{32})(?:\/.*)?$/);
  if (!seed) return null;
  const key = seed[1]!.toLowerCase();
  return key.length === 64
    ? { kind: "webseed", hash: key, passkey: null }
    : { kind: "webseed", hash: null, passkey: key };
}

/**
 * The node's own URLs in a stored torrent or magnet, rewritten for `passkey`: its tracker
 * (`<public>/announce`) and its web seed (`<public>/webseed/<sha256>/`). Other trackers
 * (TORRENT__ANNOUNCE_URL) are left as they are. `<public>` is read off the web seed URL, which
 * only the node writes.
 */
function rewriter(webSeeds: string[], passkey: string): (url: string) => string {
  if (!PASSKEY_PATTERN.test(passkey)) throw new Error("not a passkey");
  const ours = webSeeds
    .map((u) => u.match(/^(.*)\/webseed\/[0-9a-f]{64}\/$/)?.[1])
    .filter((p): p is string => p !== undefined);
  return (url) => {
    const seed = url.match(/^(.*)\/webseed\/[0-9a-f]{64}\/$/);
    if (seed) return webSeedUrl(seed[1]!, passkey);
    const tracker = url.match(/^(.*)\/announce$/);
    if (tracker && ours.includes(tracker[1]!)) return announceUrl(tracker[1]!, passkey);
    return url;
  };
}

const strings = (v: unknown): string[] =>
  v instanceof Uint8Array ? [text(v)!] : Array.isArray(v) ? v.flatMap(strings) : [];

/**
 * The same .torrent with the node's tracker and web seed URLs carrying `passkey`. The `info`
 * dictionary is copied byte for byte (never re-encoded), so the infohash stays the same.
 */
export function passkeyedTorrent(torrent: Uint8Array, passkey: string): Uint8Array {
  const { dict, infoBytes } = decodeTorrentDict(torrent);
  const rewrite = rewriter(strings(dict["url-list"]), passkey);
  const out: { [key: string]: BEncodable } = {};
  for (const [key, value] of Object.entries(dict as BDict)) {
    if (key === "info") out[key] = new Encoded(infoBytes);
    else if (key === "announce" && value instanceof Uint8Array) out[key] = rewrite(text(value)!);
    else if (key === "announce-list" && Array.isArray(value))
      out[key] = value.map((tier) => strings(tier).map(rewrite));
    else if (key === "url-list") out[key] = strings(value).map(rewrite);
    else out[key] = value as BEncodable;
  }
  return bencode(out);
}

export interface MagnetOptions {
  infohash: string;
  name: string;
  size: number;
  trackers: string[];
  /**
   * BEP 19 web seeds (the torrent's url-list), sent as `ws=`: a client that understands it (libtorrent,
   * webtorrent) downloads over HTTP as soon as it has the metadata, instead of from peers only.
   */
  webSeeds?: string[];
}

/**
 * `magnet:?xt=urn:btih:<hex>&dn=<name>&xl=<size>&tr=<tracker>...&ws=<web seed>...`, every value
 * URL-encoded.
 */
export function magnetFor(m: MagnetOptions): string {
  if (!/^[0-9a-fA-F]{40}$/.test(m.infohash)) throw new Error(`not a v1 infohash: ${m.infohash}`);
  const parts = [
    `xt=urn:btih:${m.infohash.toLowerCase()}`,
    `dn=${encodeURIComponent(m.name)}`,
    `xl=${m.size}`,
  ];
  for (const tr of m.trackers) parts.push(`tr=${encodeURIComponent(tr)}`);
  for (const ws of m.webSeeds ?? []) parts.push(`ws=${encodeURIComponent(ws)}`);
  return `magnet:?${parts.join("&")}`;
}

/** A magnet link made by magnetFor, with the node's tracker and web seed carrying `passkey`. */
export function passkeyedMagnet(magnet: string, passkey: string): string {
  if (!magnet.startsWith("magnet:?")) throw new Error("not a magnet link");
  const params = magnet
    .slice("magnet:?".length)
    .split("&")
    .map((p) => {
      const i = p.indexOf("=");
      return [p.slice(0, i), decodeURIComponent(p.slice(i + 1))] as const;
    });
  const all = (k: string) => params.filter(([key]) => key === k).map(([, v]) => v);
  const rewrite = rewriter(all("ws"), passkey);
  return params
    .map(([k, v]) =>
      k === "tr" || k === "ws"
        ? `${k}=${encodeURIComponent(rewrite(v))}`
        : `${k}=${k === "xt" ? v : encodeURIComponent(v)}`,
    )
    .join("&")
    .replace(/^/, "magnet:?");
}
