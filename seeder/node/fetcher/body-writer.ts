/** The body writer: a response body streamed into a content-store writer, with progress. */
import type { IncomingMessage } from "node:http";
import type { BlobWriter, ContentStore } from "../cas";
import { InsufficientStorage, isOutOfSpace } from "../store-space";
import { type BodyLimits, pumpBody } from "./body";
import { claimedDigests, DigestCheck, type OnIntegrityCheck } from "./digests";
import { FetchError } from "./errors";
import { expectedFor, type Representation, wholeLength } from "./response";

/**
 * A fresh writer for `rep`'s body (its size, when announced, lets the store hash pieces as it goes
 * and is claimed from the store's space up front). A HEAD's Content-Length describes no body here.
 */
export function openWriter(
  store: ContentStore,
  rep: Representation,
  method: string,
  partial: { key?: string; resume?: unknown } = {},
): Promise<BlobWriter> {
  return store
    .createWriter({ expectedSize: method === "HEAD" ? null : wholeLength(rep), ...partial })
    .catch((e) => {
      throw storageError(e, "Could not open a file in the content store");
    });
}

/**
 * The FetchError for a failure of the content store: `insufficient_storage` when the body does not
 * fit (the store's limits) or the disk is full, `storage` (transient) for anything else.
 */
export function storageError(e: unknown, message: string, bytes?: number): FetchError {
  if (e instanceof InsufficientStorage)
    return new FetchError("insufficient_storage", e.message, { transient: false });
  if (isOutOfSpace(e)) {
    const code = (e as { code: string }).code;
    const at = bytes === undefined ? "" : ` after ${bytes} bytes of the body`;
    return new FetchError(
      "insufficient_storage",
      `The storage disk ran out of space (${code})${at}; nothing of it was kept. Free space under STORAGE__BASE_PATH, or set STORAGE__MIN_FREE_BYTES / STORAGE__MAX_BYTES so the node refuses such bodies up front`,
      { transient: false, detail: code },
    );
  }
  return new FetchError("storage", message, { detail: (e as { code?: string })?.code });
}

/** Tell the caller how many decoded bytes are written; a progress callback must not break the download. */
export function reportProgress(onProgress: ((bytes: number) => void) | undefined, bytes: number): void {
  try {
    onProgress?.(bytes);
  } catch {
    /* ignored */
  }
}

export interface BodyWrite {
  rep: Representation;
  method: string;
  /** Decoded bytes already in the writer (a resumed body). */
  alreadyDecoded: number;
  limits: BodyLimits;
  host: string;
  touch(): void;
  signal: AbortSignal;
  onProgress?: (bytes: number) => void;
  /** The caller's `expected_size`: a body growing past it stops at once. */
  expectedSize?: number;
  onIntegrityCheck?: OnIntegrityCheck;
}

/** The FetchError for a body that is not `expected` bytes long. */
export function sizeMismatch(expected: number, actual: string): FetchError {
  return new FetchError(
    "integrity_mismatch",
    `The body is ${actual}, not the expected ${expected} bytes (expected_size); nothing was stored`,
    { transient: false },
  );
}

/**
 * Pump `res` into `writer`. Resolves with the origin's digests it verified (digests.ts) once the
 * body is complete; throws BodyInterrupted when it stopped early (the caller decides whether to
 * resume), FetchError otherwise (digest_mismatch among them).
 */
export async function writeBody(res: IncomingMessage, writer: BlobWriter, o: BodyWrite): Promise<string[]> {
  const digests = new DigestCheck(
    claimedDigests(res.headers, res.statusCode ?? 0, o.method),
    o.host,
    o.onIntegrityCheck,
  );
  await pumpBody(res, {
    coding: o.rep.coding,
    limits: o.limits,
    alreadyDecoded: o.alreadyDecoded,
    expectedLength:
      o.method === "HEAD" || res.statusCode === 204 || res.statusCode === 304 ? 0 : expectedFor(res, o.rep),
    host: o.host,
    touch: o.touch,
    signal: o.signal,
    ...(digests.active ? { onEncoded: digests.update } : {}),
    write: async (chunk, total) => {
      if (o.expectedSize !== undefined && total > o.expectedSize)
        throw sizeMismatch(o.expectedSize, `more than ${o.expectedSize} bytes (${total} so far)`);
      try {
        await writer.write(chunk);
      } catch (e) {
        throw storageError(e, "Could not write the body to the content store", writer.size);
      }
      reportProgress(o.onProgress, total);
    },
  });
  return digests.finish();
}
