/**
 * Just enough bencode for the service: decode a .torrent (to read and check what create-torrent
 * produced), find the exact bytes of its `info` dictionary (the infohash is the SHA-1 of those
 * bytes as they appear in the file, never of a re-encoding), re-encode a .torrent with other
 * trackers and web seeds around the same `info` bytes, and encode small tracker replies.
 * Written here instead of importing `bencode` because that package is only a transitive dependency
 * of webtorrent and could disappear or change major version under us. Runs on Workers too (no
 * node:*); the SHA-1 of the infohash is the caller's (seeder/node/swarm/bencode.ts).
 */

export type BValue = number | Uint8Array | BValue[] | BDict;
export interface BDict {
  [key: string]: BValue;
}

const textDecoder = new TextDecoder();
const textEncoder = new TextEncoder();

class Reader {
  pos = 0;
  constructor(readonly buf: Uint8Array) {}

  byte(): number {
    const b = this.buf[this.pos];
    if (b === undefined) throw new Error("bencode: unexpected end of data");
    return b;
  }

  /** Digits up to `stop`; bencode integers and string lengths are plain ASCII decimals. */
  number(stop: number): number {
    const start = this.pos;
    while (this.byte() !== stop) this.pos++;
    const s = textDecoder.decode(this.buf.subarray(start, this.pos));
    this.pos++; // the stop byte
    if (!/^(0|-?[1-9]\d*)$/.test(s)) throw new Error(`bencode: bad number ${JSON.stringify(s)}`);
    const n = Number(s);
    if (!Number.isSafeInteger(n)) throw new Error("bencode: number out of range");
    return n;
  }

  value(onInfo?: (start: number, end: number) => void, depth = 0): BValue {
    if (depth > 64) throw new Error("bencode: nested too deep");
    const c = this.byte();
    if (c === 0x69 /* i */) {
      this.pos++;
      return this.number(0x65 /* e */);
    }
    if (c === 0x6c /* l */) {
      this.pos++;
      const list: BValue[] = [];
      while (this.byte() !== 0x65) list.push(this.value(undefined, depth + 1));
      this.pos++;
      return list;
    }
    if (c === 0x64 /* d */) {
      this.pos++;
      const dict: BDict = Object.create(null);
      while (this.byte() !== 0x65) {
        const key = textDecoder.decode(this.string());
        const start = this.pos;
        dict[key] = this.value(undefined, depth + 1);
        // Only the top-level `info` key matters for the infohash.
        if (depth === 0 && key === "info" && onInfo) onInfo(start, this.pos);
      }
      this.pos++;
      return dict;
    }
    if (c >= 0x30 && c <= 0x39) return this.string();
    throw new Error(`bencode: unexpected byte 0x${c.toString(16)} at ${this.pos}`);
  }

  string(): Uint8Array {
    const len = this.number(0x3a /* : */);
    if (len < 0 || this.pos + len > this.buf.length) throw new Error("bencode: string runs past the end");
    const s = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return s;
  }
}

/** Decode a whole bencoded buffer. Strings stay bytes (views into `buf`). */
export function bdecode(buf: Uint8Array): BValue {
  const r = new Reader(buf);
  const v = r.value();
  if (r.pos !== buf.length) throw new Error("bencode: trailing data");
  return v;
}

/** Decode a .torrent; `infoBytes` is the `info` dictionary exactly as it appears in the file. */
export function decodeTorrentDict(torrent: Uint8Array): { dict: BDict; info: BDict; infoBytes: Uint8Array } {
  const r = new Reader(torrent);
  let span: [number, number] | null = null;
  const dict = r.value((s, e) => {
    span = [s, e];
  });
  if (r.pos !== torrent.length) throw new Error("bencode: trailing data");
  const found = span as [number, number] | null;
  if (!isDict(dict) || !found || !isDict(dict["info"])) throw new Error("not a torrent: no info dictionary");
  return { dict, info: dict["info"], infoBytes: torrent.subarray(found[0], found[1]) };
}

/** Bytes that bencode() writes as they are: an already-encoded value (a torrent's `info`). */
export class Encoded {
  constructor(readonly bytes: Uint8Array) {}
}

export function isDict(v: BValue | undefined): v is BDict {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

export function text(v: BValue | undefined): string | undefined {
  return v instanceof Uint8Array ? textDecoder.decode(v) : undefined;
}

/** What bencode() accepts: decoded values, plus JS strings (encoded as UTF-8). */
export type BEncodable =
  | number
  | string
  | Uint8Array
  | Encoded
  | BEncodable[]
  | { [key: string]: BEncodable };

/** Encode; dictionary keys are sorted as bencode requires. */
export function bencode(v: BEncodable): Uint8Array<ArrayBuffer> {
  const parts: Uint8Array[] = [];
  const put = (s: string) => parts.push(textEncoder.encode(s));
  const enc = (x: BEncodable): void => {
    if (typeof x === "number") {
      if (!Number.isSafeInteger(x)) throw new Error("bencode: only integers");
      put(`i${x}e`);
    } else if (typeof x === "string") {
      const b = textEncoder.encode(x);
      put(`${b.length}:`);
      parts.push(b);
    } else if (x instanceof Encoded) {
      parts.push(x.bytes);
    } else if (x instanceof Uint8Array) {
      put(`${x.length}:`);
      parts.push(x);
    } else if (Array.isArray(x)) {
      put("l");
      for (const item of x) enc(item);
      put("e");
    } else {
      put("d");
      for (const key of Object.keys(x).sort()) {
        enc(key);
        enc(x[key] as BEncodable);
      }
      put("e");
    }
  };
  enc(v);
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
