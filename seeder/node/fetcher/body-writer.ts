/** The body writer: a response body streamed into a content-store writer, with progress. */
import type { IncomingMessage } from "node:http";
import type { BlobWriter, ContentStore } from "../cas";
import { type BodyLimits, pumpBody } from "./body";
import { FetchError } from "./errors";
import { expectedFor, type Representation, wholeLength } from "./response";

/** A fresh writer for `rep`'s body (its size, when announced, lets the store hash pieces as it goes). */
export function openWriter(store: ContentStore, rep: Representation): Promise<BlobWriter> {
  return store.createWriter({ expectedSize: wholeLength(rep) }).catch((e) => {
    throw new FetchError("storage", "Could not open a file in the content store", { detail: e?.code });
  });
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
}

/**
 * Pump `res` into `writer`. Resolves with the decoded total once the body is complete; throws
 * BodyInterrupted when it stopped early (the caller decides whether to resume), FetchError
 * otherwise.
 */
export async function writeBody(res: IncomingMessage, writer: BlobWriter, o: BodyWrite): Promise<number> {
  const done = await pumpBody(res, {
    coding: o.rep.coding,
    limits: o.limits,
    alreadyDecoded: o.alreadyDecoded,
    expectedLength:
      o.method === "HEAD" || res.statusCode === 204 || res.statusCode === 304 ? 0 : expectedFor(res, o.rep),
    host: o.host,
    touch: o.touch,
    signal: o.signal,
    write: async (chunk, total) => {
      try {
        await writer.write(chunk);
      } catch (e) {
        throw new FetchError("storage", "Could not write the body to the content store", {
          detail: (e as { code?: string })?.code,
        });
      }
      reportProgress(o.onProgress, total);
    },
  });
  return done.decoded;
}
