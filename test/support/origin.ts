/**
 * A loopback HTTP(S) origin for tests: routes by path, a log of every request, and ready-made
 * route handlers for the cases a fetcher must survive (large deterministic bodies with a known
 * sha256, Range/If-Range, a connection dropped mid-body, stalls, redirects, status codes,
 * compressed bodies and decompression bombs).
 *
 *   const origin = await startOrigin({
 *     "/data": bytesRoute({ size: 4 << 20, seed: 7, ranges: true, dropAfter: 1 << 20 }),
 *     "/moved": redirectRoute("/data"),
 *   });
 *   ... fetch(origin.url("/moved")) ...
 *   expect(origin.count("/data")).toBe(2);
 *   expect(origin.requests.some((r) => r.headers.range)).toBe(true);
 *   await origin.close();
 *
 * Built on node:http rather than Bun.serve on purpose: Bun.serve re-frames a streamed body as
 * chunked and terminates it properly even when the stream errors, so it cannot simulate a
 * connection that breaks in the middle of a Content-Length body. node:http (also under Bun)
 * gives the socket, so a route can cut it after exactly N bytes. Listens on 127.0.0.1 only.
 */
import { createHash } from "node:crypto";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import zlib from "node:zlib";

export interface OriginRequest {
  method: string;
  /** Path without the query. */
  path: string;
  /** Path and query, as sent. */
  target: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  remoteAddress: string;
  remotePort: number;
  /** For https: the SNI name the client sent (undefined without SNI). */
  servername?: string;
}

export interface RouteContext {
  /** 1 for the first request to this path, 2 for the second... */
  nth: number;
  origin: Origin;
}

export type Route = (req: OriginRequest, res: http.ServerResponse, ctx: RouteContext) => void | Promise<void>;

export interface Origin {
  /** e.g. `http://127.0.0.1:41234` */
  readonly base: string;
  readonly port: number;
  /** Absolute URL of a path on this origin. */
  url(path: string): string;
  /** Every request received, in order. */
  readonly requests: OriginRequest[];
  /** Requests to a path (all requests without an argument). */
  count(path?: string): number;
  /** TCP connections accepted so far (also those that never sent a request). */
  readonly connections: number;
  /** TCP connections open right now. */
  readonly open: number;
  /** Add or replace a route. */
  route(path: string, handler: Route): void;
  close(): Promise<void>;
}

export interface OriginOptions {
  /** Serve https with this certificate and key (PEM). */
  tls?: { cert: string; key: string };
}

/** Start an origin on 127.0.0.1 with a free port. Unknown paths answer 404 text/plain. */
export async function startOrigin(
  routes: Record<string, Route> = {},
  opts: OriginOptions = {},
): Promise<Origin> {
  const table = new Map(Object.entries(routes));
  const requests: OriginRequest[] = [];
  const perPath = new Map<string, number>();
  const sockets = new Set<import("node:net").Socket>();
  let connections = 0;

  const handler = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const target = req.url ?? "/";
    const path = target.split("?")[0]!;
    const record: OriginRequest = {
      method: req.method ?? "GET",
      path,
      target,
      headers: req.headers,
      body: Buffer.concat(chunks),
      remoteAddress: req.socket.remoteAddress ?? "",
      remotePort: req.socket.remotePort ?? 0,
    };
    const sni = (req.socket as { servername?: string | false }).servername;
    if (typeof sni === "string" && sni) record.servername = sni;
    requests.push(record);
    const nth = (perPath.get(path) ?? 0) + 1;
    perPath.set(path, nth);
    const route = table.get(path);
    try {
      if (!route) {
        res.writeHead(404, { "content-type": "text/plain" });
        res.end("not found");
        return;
      }
      await route(record, res, { nth, origin });
    } catch {
      // The client went away mid-response (the normal end of a cancelled or refused fetch).
      res.destroy();
    }
  };

  const server = opts.tls
    ? https.createServer({ cert: opts.tls.cert, key: opts.tls.key }, handler)
    : http.createServer(handler);
  server.on("connection", (s: import("node:net").Socket) => {
    connections++;
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  // A test's cut connection must not surface as an unhandled error.
  server.on("clientError", (_e, s) => s.destroy());
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  const base = `${opts.tls ? "https" : "http"}://127.0.0.1:${port}`;

  const origin: Origin = {
    base,
    port,
    url: (path) => base + path,
    requests,
    count: (path) => (path === undefined ? requests.length : requests.filter((r) => r.path === path).length),
    get connections() {
      return connections;
    },
    get open() {
      return sockets.size;
    },
    route: (path, h) => {
      table.set(path, h);
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  return origin;
}

// ---------- deterministic bodies ----------

const BLOCK = 64 * 1024;

/**
 * `size` bytes of pseudo-random data named by `seed`, generated block by block (64 KiB) so any
 * range can be produced without holding the body in memory; several GiB stream at constant memory.
 */
export class PatternBody {
  private digest: string | null = null;

  constructor(
    readonly size: number,
    readonly seed = 1,
  ) {}

  private block(index: number): Buffer {
    const buf = Buffer.allocUnsafe(BLOCK);
    // xorshift32 seeded per block: every block is independent, hence random access.
    let x = (Math.imul(index + 1, 0x9e3779b1) ^ Math.imul(this.seed, 0x85ebca6b) ^ 0x2545f491) >>> 0 || 1;
    for (let i = 0; i < BLOCK; i += 4) {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      buf.writeUInt32LE(x, i);
    }
    return buf;
  }

  /** Chunks covering [start, end). */
  *chunks(start = 0, end = this.size): Generator<Buffer> {
    let pos = start;
    while (pos < end) {
      const index = Math.floor(pos / BLOCK);
      const blockStart = index * BLOCK;
      const from = pos - blockStart;
      const to = Math.min(BLOCK, end - blockStart);
      yield this.block(index).subarray(from, to);
      pos = blockStart + to;
    }
  }

  /** The whole body in memory (small sizes only). */
  bytes(): Buffer {
    return Buffer.concat([...this.chunks()]);
  }

  /** SHA-256 hex of the whole body (computed once, streaming). */
  sha256(): string {
    if (this.digest === null) {
      const h = createHash("sha256");
      for (const c of this.chunks()) h.update(c);
      this.digest = h.digest("hex");
    }
    return this.digest;
  }
}

/** Write respecting backpressure; rejects when the client goes away. */
function writeChunk(res: http.ServerResponse, chunk: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    if (res.destroyed || res.writableEnded) return reject(new Error("client gone"));
    const ok = res.write(chunk, (err) => {
      if (err) reject(err);
      else if (ok) resolve();
    });
    if (!ok) {
      const onDrain = () => {
        res.off("close", onClose);
        resolve();
      };
      const onClose = () => {
        res.off("drain", onDrain);
        reject(new Error("client gone"));
      };
      res.once("drain", onDrain);
      res.once("close", onClose);
    }
  });
}

/** Resolve after `ms`, or reject early if the client closes. */
function pause(res: http.ServerResponse, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onClose = () => {
      clearTimeout(t);
      reject(new Error("client gone"));
    };
    const t = setTimeout(() => {
      res.off("close", onClose);
      resolve();
    }, ms);
    res.once("close", onClose);
  });
}

/** Never resolves until the client closes (then rejects). */
function forever(res: http.ServerResponse): Promise<never> {
  return new Promise((_, reject) => {
    res.once("close", () => reject(new Error("client gone")));
  });
}

/** Cut the connection after what was written so far has been flushed (FIN, no terminating chunk). */
function cut(res: http.ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    res.socket?.end(() => resolve());
    res.socket?.once("close", () => resolve());
    setTimeout(resolve, 1000).unref?.();
  });
}

export interface BytesRouteOptions {
  /** Body length in bytes. */
  size: number;
  /** Names the pseudo-random content (see PatternBody). */
  seed?: number;
  contentType?: string;
  /** Send Content-Length (default) or use chunked encoding. */
  contentLength?: boolean;
  /**
   * Range support: true honours `Range: bytes=a-` / `a-b` (and If-Range) with 206; "ignore"
   * advertises `Accept-Ranges: bytes` but answers every request with the full 200 body;
   * false (default) neither advertises nor honours ranges.
   */
  ranges?: boolean | "ignore";
  /** ETag to send (and match If-Range against); default a strong tag derived from seed and size. */
  etag?: string | null;
  lastModified?: string | null;
  /** Cut the connection after this many body bytes... */
  dropAfter?: number;
  /** ...on the first this-many requests to the route (default 1). */
  dropTimes?: number;
  /** After this many body bytes, stop sending and hold the connection open. */
  stallAfter?: number;
  /** Pause between chunks, to make a slow but steady body. */
  chunkDelayMs?: number;
  /** Extra response headers. */
  headers?: Record<string, string>;
}

/** Serve `size` deterministic bytes; see BytesRouteOptions for ranges, drops and stalls. */
export function bytesRoute(o: BytesRouteOptions): Route & { body: PatternBody } {
  const body = new PatternBody(o.size, o.seed ?? 1);
  const etag = o.etag === undefined ? `"pb-${o.seed ?? 1}-${o.size}"` : o.etag;
  const lastModified = o.lastModified === undefined ? null : o.lastModified;
  let drops = 0;
  const route: Route = async (req, res) => {
    const headers: Record<string, string> = {
      "content-type": o.contentType ?? "application/octet-stream",
      ...o.headers,
    };
    if (etag) headers.etag = etag;
    if (lastModified) headers["last-modified"] = lastModified;
    if (o.ranges) headers["accept-ranges"] = "bytes";
    let start = 0;
    let end = body.size;
    let status = 200;
    const range = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ""));
    const ifRange = req.headers["if-range"];
    const validatorMatches = ifRange === undefined || ifRange === etag || ifRange === lastModified;
    if (o.ranges === true && range && validatorMatches) {
      start = Number(range[1]);
      end = range[2] ? Math.min(Number(range[2]) + 1, body.size) : body.size;
      if (start >= body.size || start >= end) {
        res.writeHead(416, { "content-range": `bytes */${body.size}` });
        res.end();
        return;
      }
      status = 206;
      headers["content-range"] = `bytes ${start}-${end - 1}/${body.size}`;
    }
    if (o.contentLength !== false) headers["content-length"] = String(end - start);
    res.writeHead(status, headers);
    if (req.method === "HEAD") return void res.end();
    const dropNow = o.dropAfter !== undefined && drops < (o.dropTimes ?? 1);
    if (dropNow) drops++;
    let sent = 0;
    for (const chunk of body.chunks(start, end)) {
      let piece = chunk;
      const limit = dropNow ? o.dropAfter! : o.stallAfter;
      if (limit !== undefined && sent + piece.length > limit)
        piece = piece.subarray(0, Math.max(0, limit - sent));
      if (piece.length) await writeChunk(res, piece);
      sent += piece.length;
      if (dropNow && sent >= o.dropAfter!) return cut(res);
      if (o.stallAfter !== undefined && sent >= o.stallAfter) return forever(res);
      if (o.chunkDelayMs) await pause(res, o.chunkDelayMs);
    }
    res.end();
  };
  return Object.assign(route, { body });
}

/** A fixed body with a content type (and optional status and headers). */
export function textRoute(
  text: string | Buffer,
  opts: { status?: number; contentType?: string | null; headers?: Record<string, string> } = {},
): Route {
  return (_req, res) => {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.contentType !== null) headers["content-type"] = opts.contentType ?? "text/plain; charset=utf-8";
    headers["content-length"] = String(Buffer.byteLength(text));
    res.writeHead(opts.status ?? 200, headers);
    res.end(text);
  };
}

/** Answer a status code (with a short text body). */
export function statusRoute(status: number, headers: Record<string, string> = {}): Route {
  return textRoute(`status ${status}`, { status, headers });
}

/** Redirect to `location` (relative or absolute) with the given status. */
export function redirectRoute(location: string, status = 302): Route {
  return (_req, res) => {
    res.writeHead(status, { location, "content-type": "text/plain", "content-length": "0" });
    res.end();
  };
}

export type Coding = "gzip" | "deflate" | "br";

export function compress(data: Buffer, coding: Coding): Buffer {
  if (coding === "gzip") return zlib.gzipSync(data);
  if (coding === "deflate") return zlib.deflateSync(data);
  return zlib.brotliCompressSync(data);
}

/** Serve `data` compressed with Content-Encoding `coding`. */
export function compressedRoute(data: Buffer, coding: Coding, contentType = "text/plain"): Route {
  const encoded = compress(data, coding);
  return textRoute(encoded, { contentType, headers: { "content-encoding": coding } });
}

/**
 * A gzip body that decodes to `decodedBytes` zeros while staying tiny on the wire (gzip members
 * of 16 MiB of zeros, concatenated: a valid multi-member stream, about 1000:1).
 */
export function gzipBomb(decodedBytes: number): Buffer {
  const member = 16 * 1024 * 1024;
  const full = zlib.gzipSync(Buffer.alloc(member), { level: 9 });
  const parts: Buffer[] = [];
  let left = decodedBytes;
  while (left >= member) {
    parts.push(full);
    left -= member;
  }
  if (left > 0) parts.push(zlib.gzipSync(Buffer.alloc(left), { level: 9 }));
  return Buffer.concat(parts);
}

/**
 * Never finish: with `afterHead` the status line and headers (and `bytes` body bytes) are sent
 * first; without, the origin accepts the request and stays silent. Ends when the client closes.
 */
export function stallRoute(opts: { afterHead?: boolean; bytes?: number; contentType?: string } = {}): Route {
  return async (_req, res) => {
    if (opts.afterHead) {
      res.writeHead(200, {
        "content-type": opts.contentType ?? "application/octet-stream",
        "content-length": "1000000",
      });
      if (opts.bytes) await writeChunk(res, Buffer.alloc(opts.bytes, 0x61));
      else res.flushHeaders();
    }
    await forever(res);
  };
}
