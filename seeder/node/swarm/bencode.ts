/**
 * The service's bencode (src/torrents/bencode.ts) plus the infohash, which needs SHA-1 (node:crypto
 * here; Workers would need the async WebCrypto digest and never compute one).
 */
import { createHash } from "node:crypto";
import { type BDict, decodeTorrentDict } from "../../../src/torrents/bencode";

export { type BDict, bdecode, bencode, isDict, text } from "../../../src/torrents/bencode";

/** Decode a .torrent and return it with the infohash (hex SHA-1 of the raw `info` bytes). */
export function decodeTorrent(torrent: Uint8Array): { dict: BDict; info: BDict; infohash: string } {
  const { dict, info, infoBytes } = decodeTorrentDict(torrent);
  return { dict, info, infohash: createHash("sha1").update(infoBytes).digest("hex") };
}
