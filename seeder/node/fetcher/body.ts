/**
 * Streaming a response body into a sink (the content store's writer): decode gzip/deflate/br,
 * count decoded bytes against the size cap, guard the decompression ratio, never hold more than
 * one chunk in memory (each write is awaited before the next chunk is pulled), and give each
 * identity chunk's memory back as soon as the sink has copied it (releaseChunk).
 */
import type { IncomingMessage } from "node:http";
import { pipeline, Transform } from "node:stream";
import zlib from "node:zlib";
import { FetchError } from "./errors";

export interface BodyLimits {
  /** Largest decoded body, bytes (FETCHER__MAX_SIZE; exactly this many is allowed). */
  maxSize: number;
  /** Refuse when decoded bytes exceed this many times the encoded bytes... */
  maxDecompressionRatio: number;
  /** ...once at least this many bytes were decoded (small, very compressible bodies are fine). */
  ratioCheckAfter: number;
}

export type ContentCoding = "identity" | "gzip" | "deflate" | "br";

/** The response's Content-Encoding, or a FetchError for one we did not ask for and cannot decode. */
export function contentCoding(header: string | undefined, host: string): ContentCoding {
  const codings = (header ?? "")
    .split(",")
    .map((c) => c.trim().toLowerCase())
    .filter((c) => c && c !== "identity");
  if (codings.length === 0) return "identity";
  const [only] = codings;
  if (codings.length === 1 && (only === "gzip" || only === "x-gzip")) return "gzip";
  if (codings.length === 1 && (only === "deflate" || only === "br")) return only;
  throw new FetchError(
    "bad_response",
    `${host} sent the body in an unsupported encoding (${codings.join(", ")})`,
  );
}

function decoderFor(coding: Exclude<ContentCoding, "identity">): Transform {
  switch (coding) {
    case "gzip":
      return zlib.createGunzip();
    case "deflate":
      return zlib.createInflate();
    case "br":
      return zlib.createBrotliDecompress();
  }
}

/**
 * Free a buffer's memory now instead of when the collector gets to it. Under Bun, each socket
 * read (up to 512 KiB) arrives in an ArrayBuffer of its own, and node:http copies the body out
 * of it into another one; at ~500 MB/s both arrive far faster than JSC frees them (it sweeps dead
 * ArrayBuffers lazily), and 1 GiB through the pipeline peaked 60–100 MiB above idle with nothing
 * but such garbage. Detaching the buffer (`transfer(0)`) frees it at once. Only a chunk that spans
 * its whole, ordinary ArrayBuffer is released: a slice of a pooled or shared buffer (small
 * Buffers, zlib output) is left to the GC, since other views may still read it. True if released.
 */
export function releaseChunk(chunk: Uint8Array): boolean {
  const buf = chunk.buffer;
  if (
    !(buf instanceof ArrayBuffer) ||
    chunk.byteOffset !== 0 ||
    chunk.byteLength !== buf.byteLength ||
    chunk.byteLength < RELEASE_MIN_BYTES ||
    (buf as { resizable?: boolean }).resizable
  )
    return false;
  (buf as ArrayBuffer & { transfer(length: number): ArrayBuffer }).transfer(0);
  return true;
}

/**
 * Whether socket reads are released (pumpBody). That is safe only while node:http copies each body
 * chunk out of the read (Bun 1.4.5 does; test/fetcher/body-release.test.ts pins it). Turned off
 * for the rest of the process the first time a body chunk turns out to share a released read.
 */
let releaseSocketReads = true;

/** Smaller chunks are left to the GC: they matter little (and Buffer pools slices below 4 KiB). */
const RELEASE_MIN_BYTES = 16 * 1024;

/** Thrown when the body stopped before its end (connection reset or closed early). */
export class BodyInterrupted extends Error {
  constructor(
    readonly receivedEncoded: number,
    override readonly cause: unknown,
  ) {
    super("body interrupted");
    this.name = "BodyInterrupted";
  }
}

export interface BodyRun {
  coding: ContentCoding;
  limits: BodyLimits;
  /** Decoded bytes already in the sink before this response (a resumed body). */
  alreadyDecoded: number;
  /** Encoded bytes this response should carry, when Content-Length says so. */
  expectedLength: number | null;
  host: string;
  /**
   * Take the chunk's bytes. The chunk is valid only until the returned promise resolves: its
   * memory may be released then (releaseChunk), so a sink copies what it keeps.
   */
  write(chunk: Uint8Array, decodedTotal: number): Promise<void>;
  /** Called whenever bytes arrive (the idle-read timer). */
  touch(): void;
  /** Sees every chunk of the body as sent (before decoding): the origin's digests are over these. */
  onEncoded?(chunk: Uint8Array): void;
  signal: AbortSignal;
}

/**
 * Pump `res` into `run.write`. Resolves with the decoded total when the body is complete; throws
 * BodyInterrupted when it ends early, FetchError for limits and decoding errors, and the signal's
 * reason when aborted.
 */
export async function pumpBody(
  res: IncomingMessage,
  run: BodyRun,
): Promise<{ decoded: number; encoded: number }> {
  let encoded = 0;
  let decoded = run.alreadyDecoded;
  let sourceError: unknown = null;
  let source: AsyncIterable<Buffer>;
  let decoder: Transform | null = null;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      encoded += chunk.length;
      run.touch();
      run.onEncoded?.(chunk);
      cb(null, chunk);
    },
  });
  res.on("error", (e) => {
    sourceError ??= e;
  });
  res.on("aborted", () => {
    sourceError ??= new Error("aborted");
  });
  if (run.coding === "identity") {
    source = pipeline(res, counter, () => {});
  } else {
    decoder = decoderFor(run.coding);
    source = pipeline(res, counter, decoder, () => {});
  }
  const destroyAll = (e?: Error) => {
    res.destroy(e);
    counter.destroy(e);
    decoder?.destroy(e);
  };
  // Our listener runs after node:http's parser, which registered first: by the time we see a read,
  // the parser has copied its body bytes out, so the read is garbage (see releaseChunk).
  const socket = run.coding === "identity" && releaseSocketReads ? res.socket : null;
  const releasedReads = new WeakSet<ArrayBufferLike>();
  const onSocketRead = (d: Uint8Array) => {
    if (releaseSocketReads && releaseChunk(d)) releasedReads.add(d.buffer);
  };
  socket?.on("data", onSocketRead);
  const onAbort = () => destroyAll(run.signal.reason as Error);
  if (run.signal.aborted) onAbort();
  else run.signal.addEventListener("abort", onAbort, { once: true });
  try {
    for await (const chunk of source) {
      if (releasedReads.has(chunk.buffer)) {
        // A Bun whose parser hands out views of the socket's reads: stop releasing them, and
        // fetch this body again from scratch (bytes taken so far may be wrong).
        releaseSocketReads = false;
        throw new FetchError("network", "The body was read incorrectly; it will be fetched again", {
          detail: "socket read released under a body chunk",
        });
      }
      decoded += chunk.length;
      if (decoded > run.limits.maxSize)
        throw new FetchError("too_large", `The body is larger than the limit of ${run.limits.maxSize} bytes`);
      if (
        decoder &&
        decoded - run.alreadyDecoded > run.limits.ratioCheckAfter &&
        decoded - run.alreadyDecoded > encoded * run.limits.maxDecompressionRatio
      )
        throw new FetchError(
          "too_large",
          `The compressed body expands more than ${run.limits.maxDecompressionRatio}-fold (refused as a decompression bomb)`,
        );
      await run.write(chunk, decoded);
      if (run.coding === "identity") releaseChunk(chunk);
      run.touch();
    }
  } catch (e) {
    destroyAll();
    if (run.signal.aborted) throw run.signal.reason;
    if (e instanceof FetchError) throw e;
    if (sourceError) throw new BodyInterrupted(encoded, sourceError);
    // The decoder failed while the transport was fine: the origin sent broken compressed data.
    const code = (e as { code?: string })?.code ?? "";
    if (code.startsWith("Z_") || code.startsWith("ERR_") || code === "")
      throw new FetchError(
        "bad_response",
        `${run.host} sent a body that could not be decoded (${run.coding})`,
        {
          detail: code || undefined,
        },
      );
    throw new BodyInterrupted(encoded, e);
  } finally {
    run.signal.removeEventListener("abort", onAbort);
    socket?.off("data", onSocketRead);
  }
  if (run.signal.aborted) throw run.signal.reason;
  // node:http flags a body that ended before its Content-Length or final chunk as incomplete.
  if (sourceError || !res.complete || (run.expectedLength !== null && encoded !== run.expectedLength))
    throw new BodyInterrupted(encoded, sourceError ?? new Error("body ended early"));
  return { decoded, encoded };
}
