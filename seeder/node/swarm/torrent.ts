/**
 * Making .torrent files for CAS blobs, plus the small naming helpers around them (piece length,
 * magnet link, a safe torrent name from the fetched URL).
 *
 * The infohash covers only the `info` dictionary: name, piece length, piece hashes, length and the
 * private flag. So the same bytes, name, piece length and privacy always give the same infohash,
 * while trackers, web seeds, creation date and "created by" (outside `info`) can differ between
 * copies of the same torrent.
 */
import { stat } from "node:fs/promises";
import createTorrent from "create-torrent";
import { bencode, decodeTorrent } from "./bencode";

const KiB = 1024;
const MiB = 1024 * KiB;

export interface CreateTorrentFileOptions {
  /** The CAS blob to hash. Its own file name (the sha256) never shows up in the torrent. */
  path: string;
  /** `info.name`: the file name clients save the download under. */
  name: string;
  /** Expected size of the blob; checked against the file so a wrong blob fails loudly. */
  size: number;
  pieceSize: number | "auto";
  private: boolean;
  /** Tracker URLs, one tier each, in order. `[]` means no tracker (web seed or direct peers only). */
  announce: string[];
  /** BEP 19 web seed URLs. For single-file torrents clients append the name to a URL ending in '/'. */
  urlList: string[];
  createdBy?: string;
  /** Defaults to now; pass it to get byte-identical .torrent files. */
  creationDate?: Date;
}

export interface CreatedTorrent {
  torrent: Uint8Array;
  infohash: string;
  pieceLength: number;
}

/**
 * Piece length for a file of `size` bytes. An explicit setting wins. For "auto": a power of two
 * aiming at <= ~2000 pieces, never below 256 KiB, at least 1 MiB above 64 MiB (webtorrent serves
 * far faster with big pieces: fewer store reads and hashes per byte), and at most 16 MiB (bigger
 * pieces make clients re-download more on a bad block and some clients refuse them).
 */
export function choosePieceLength(size: number, setting: number | "auto"): number {
  if (setting !== "auto") {
    if (!Number.isSafeInteger(setting) || setting < 16 * KiB || (setting & (setting - 1)) !== 0) {
      throw new Error(`piece size must be a power of two >= 16384, got ${setting}`);
    }
    return setting;
  }
  if (!Number.isSafeInteger(size) || size < 0) throw new Error(`invalid size ${size}`);
  const min = size > 64 * MiB ? 1 * MiB : 256 * KiB;
  const max = 16 * MiB;
  let len = min;
  while (len < max && Math.ceil(size / len) > 2000) len *= 2;
  return len;
}

/** Build the .torrent for one CAS blob. */
/**
 * The same .torrent create-torrent writes (byte for byte: same keys, same encoding, same info
 * dict, so the same infohash), from piece hashes computed while the body streamed into the store
 * (seeder/node/cas.ts). Packaging a 1 GiB body then no longer re-reads and re-hashes the blob.
 * test/swarm/torrent-from-pieces.test.ts pins the equivalence.
 */
export function torrentFromPieces(
  opts: Omit<CreateTorrentFileOptions, "path" | "pieceSize"> & {
    pieces: { pieceLength: number; hashes: Uint8Array };
  },
): CreatedTorrent {
  if (!opts.name || opts.name.includes("/") || opts.name === "." || opts.name === "..") {
    throw new Error(`invalid torrent name ${JSON.stringify(opts.name)}`);
  }
  if (opts.size <= 0) throw new Error("cannot make a torrent of an empty file");
  const { pieceLength, hashes } = opts.pieces;
  if (hashes.byteLength !== Math.ceil(opts.size / pieceLength) * 20)
    throw new Error("piece hashes do not match the size");
  const info: Record<string, number | string | Uint8Array> = {
    length: opts.size,
    name: opts.name,
    "piece length": pieceLength,
    pieces: hashes,
  };
  if (opts.private) info.private = 1;
  const dict: Parameters<typeof bencode>[0] = {
    "creation date": Math.floor((opts.creationDate ?? new Date()).getTime() / 1000),
    encoding: "UTF-8",
    info,
  };
  if (opts.announce.length) {
    dict.announce = opts.announce[0]!;
    dict["announce-list"] = opts.announce.map((url) => [url]);
  }
  if (opts.createdBy) dict["created by"] = opts.createdBy;
  if (opts.urlList.length) dict["url-list"] = [...opts.urlList];
  const torrent = bencode(dict);
  return { torrent, infohash: decodeTorrent(torrent).infohash, pieceLength };
}

export async function createTorrentFile(opts: CreateTorrentFileOptions): Promise<CreatedTorrent> {
  if (!opts.name || opts.name.includes("/") || opts.name === "." || opts.name === "..") {
    throw new Error(`invalid torrent name ${JSON.stringify(opts.name)}`);
  }
  // Clients cannot do anything useful with a zero-length torrent (libtorrent rejects it).
  if (opts.size <= 0) throw new Error("cannot make a torrent of an empty file");
  // create-torrent appends this global to every torrent's trackers; we must never leak one in.
  if ((globalThis as { WEBTORRENT_ANNOUNCE?: unknown }).WEBTORRENT_ANNOUNCE !== undefined) {
    throw new Error("globalThis.WEBTORRENT_ANNOUNCE is set; refusing to create torrents with extra trackers");
  }
  const st = await stat(opts.path);
  if (!st.isFile()) throw new Error(`not a file: ${opts.path}`);
  if (st.size !== opts.size) {
    throw new Error(`size mismatch for ${opts.path}: expected ${opts.size}, file has ${st.size}`);
  }

  const pieceLength = choosePieceLength(opts.size, opts.pieceSize);
  const torrent = await new Promise<Uint8Array>((resolve, reject) => {
    createTorrent(
      opts.path,
      {
        name: opts.name,
        pieceLength,
        private: opts.private,
        // Always explicit: without announceList create-torrent adds 8 public trackers.
        announceList: opts.announce.map((url) => [url]),
        // Omitted when empty rather than written as an empty list.
        urlList: opts.urlList.length ? [...opts.urlList] : undefined,
        createdBy: opts.createdBy,
        creationDate: opts.creationDate ?? new Date(),
      },
      (err, buf) => (err ? reject(err) : resolve(new Uint8Array(buf))),
    );
  });

  const { dict, info, infohash } = decodeTorrent(torrent);
  // Belt and braces: the file must say exactly what we asked for, whatever create-torrent's
  // defaults become in a later version.
  const announceList = dict["announce-list"];
  const trackers = Array.isArray(announceList) ? announceList.flat().length : 0;
  if (trackers !== opts.announce.length) throw new Error("torrent has unexpected trackers");
  if (info["length"] !== opts.size || info["piece length"] !== pieceLength) {
    throw new Error("torrent does not match the file");
  }
  return { torrent, infohash, pieceLength };
}

const MAX_NAME_BYTES = 200;

/** Extensions for the content types we usually fetch (keyed by the bare media type). */
const EXTENSIONS: Record<string, string> = {
  "text/html": ".html",
  "application/xhtml+xml": ".xhtml",
  "text/plain": ".txt",
  "text/css": ".css",
  "text/csv": ".csv",
  "text/markdown": ".md",
  "text/xml": ".xml",
  "text/javascript": ".js",
  "application/javascript": ".js",
  "application/json": ".json",
  "application/xml": ".xml",
  "application/rss+xml": ".xml",
  "application/atom+xml": ".xml",
  "application/pdf": ".pdf",
  "application/zip": ".zip",
  "application/gzip": ".gz",
  "application/octet-stream": ".bin",
  "image/png": ".png",
  "image/jpeg": ".jpg",
  "image/gif": ".gif",
  "image/webp": ".webp",
  "image/avif": ".avif",
  "image/svg+xml": ".svg",
  "image/bmp": ".bmp",
  "image/tiff": ".tiff",
  "image/x-icon": ".ico",
  "image/vnd.microsoft.icon": ".ico",
  "audio/mpeg": ".mp3",
  "video/mp4": ".mp4",
};

function extensionFor(contentType: string | null | undefined): string {
  const type = (contentType ?? "").split(";")[0]!.trim().toLowerCase();
  if (!type) return "";
  const known = EXTENSIONS[type];
  if (known) return known;
  if (type.endsWith("+json")) return ".json";
  if (type.endsWith("+xml")) return ".xml";
  return "";
}

/** A trailing ".ext" with 1-8 ASCII letters/digits, at least one letter ("v1.2" has none). */
const HAS_EXTENSION = /\.(?=[A-Za-z0-9]{0,7}[A-Za-z])[A-Za-z0-9]{1,8}$/;
const WINDOWS_RESERVED = /^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\.|$)/i;

/**
 * Make one path component safe on every client OS: no separators, no control characters, nothing
 * Windows forbids, no leading dots (hidden files, "..") or trailing dots/spaces.
 */
function sanitize(raw: string): string {
  let s = raw
    .normalize("NFC")
    // C0/C1 controls and DEL become nothing; separators and Windows-reserved characters become '_'.
    // biome-ignore lint/suspicious/noControlCharactersInRegex: stripping control characters is the point
    .replace(/[\u0000-\u001f\u007f-\u009f]/g, "")
    .replace(/[/\\<>:"|?*]/g, "_")
    .replace(/\s+/g, " ")
    .trim();
  s = s.replace(/^[.\s]+/, "").replace(/[.\s]+$/, "");
  if (WINDOWS_RESERVED.test(s)) s = `_${s}`;
  return s;
}

/** Cut to at most `max` UTF-8 bytes without splitting a code point. */
function truncateUtf8(s: string, max: number): string {
  const enc = new TextEncoder();
  if (enc.encode(s).length <= max) return s;
  let out = "";
  let bytes = 0;
  for (const ch of s) {
    const n = enc.encode(ch).length;
    if (bytes + n > max) break;
    out += ch;
    bytes += n;
  }
  return out;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * A deterministic, safe file name for the content fetched from `url`: the URL's last path segment
 * (percent-decoded, sanitised, <= 200 UTF-8 bytes), else the host name, else "download". When the
 * name has no extension, one is added from the content type (text/html -> .html).
 */
export function torrentNameFromUrl(url: string, contentType?: string | null): string {
  let segment = "";
  let host = "";
  try {
    const u = new URL(url);
    const segments = u.pathname.split("/").filter((p) => p !== "");
    segment = sanitize(safeDecode(segments[segments.length - 1] ?? ""));
    host = sanitize(u.hostname.replace(/^\[|\]$/g, "").replace(/:/g, "_"));
  } catch {
    /* not a URL: fall through to the generic name */
  }
  const ext = extensionFor(contentType);
  let stem: string;
  let suffix: string;
  const own = segment.match(HAS_EXTENSION);
  if (own) {
    // Keep the URL's own extension whole when the name has to be shortened.
    stem = segment.slice(0, own.index);
    suffix = own[0];
  } else if (segment) {
    stem = segment;
    suffix = ext;
  } else {
    // A host name ("example.com") looks like it has an extension; the content type decides instead.
    stem = host || "download";
    suffix = ext;
  }
  stem = truncateUtf8(stem, MAX_NAME_BYTES - new TextEncoder().encode(suffix).length).replace(/[.\s]+$/, "");
  return `${stem || "download"}${suffix}`;
}
