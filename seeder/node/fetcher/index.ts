/**
 * The seeder's outgoing HTTP fetcher: one caller URL in, one blob in the content store out.
 *
 * Every hop (the URL, each redirect, each resume request) goes through the same gate: parse
 * (WHATWG), egress guard on the name, resolve here, egress guard on every address, connect to a
 * checked address (directly or through the configured proxy; never around it), TLS with SNI and
 * verification per FETCHER__VERIFY_SSL. The body streams into `store.createWriter()`; the writer
 * is aborted on every failure, so no temp file outlives a fetch.
 *
 * Connections are reused (HTTP/1.1 keep-alive, keepalive.ts) only after that whole gate ran for the
 * request, only to an address it approved, and only for the same scheme, host name, port, proxy
 * and TLS settings; a response not read to its end, or rejected, closes its connection.
 *
 * Timeouts: FETCHER__CONNECT_TIMEOUT covers resolve + connect + proxy handshake + TLS of each
 * connection; FETCHER__READ_TIMEOUT is the longest silence while waiting for the head or body;
 * FETCHER__TOTAL_TIMEOUT bounds the whole fetch. They, and the caller's AbortSignal, destroy the
 * socket at once (run.ts).
 *
 * fetch() below reads as the lifecycle of one fetch: the redirect loop (redirects.ts) over single
 * exchanges (request.ts), the checks on the answer (response.ts), the body writer
 * (body-writer.ts, over body.ts), and the resume decision when a body breaks off (resume.ts).
 */
import type { Config } from "../../../src/config";
import {
  createEgressPolicy,
  type EgressPolicy,
  EgressRefusedError,
  parseAndCheckTarget,
  type TargetUrl,
} from "../../../src/egress";
import {
  type BlobWriter,
  ContentMismatch,
  type ContentStore,
  type PartialBody,
  type StoredBlob,
} from "../cas";
import { BodyInterrupted, type BodyLimits } from "./body";
import { openWriter, reportProgress, sizeMismatch, storageError, writeBody } from "./body-writer";
import { type ConnectOptions, type Dial, defaultDial, defaultResolve, type Resolve } from "./connect";
import type { OnIntegrityCheck } from "./digests";
import { FetchError } from "./errors";
import { callerHeaders, hasHeader, normaliseMethod } from "./headers";
import { DEFAULT_POOL_LIMITS, KeepAlivePool, type PooledConnection } from "./keepalive";
import { followRedirects } from "./redirects";
import { createSend, type Exchange, type Hop } from "./request";
import { acceptResponse, type Representation, rangeContinues, wholeLength } from "./response";
import { canResume, recover } from "./resume";
import { FetchRun } from "./run";

export type { Dial, Resolve } from "./connect";
export { FetchError } from "./errors";
export { isMimeAllowed } from "./mime";

export interface FetchSpec {
  url: string;
  method: string;
  headers: Record<string, string>;
  body?: string | null;
}

export interface FetchOptions {
  signal: AbortSignal;
  /** Decoded bytes written so far (goes back to 0 if a download restarts from scratch). */
  onProgress?: (bytes: number) => void;
  /**
   * The job this body belongs to: its temp file is named after it. When the body can be resumed
   * (canResume), a fetch that stops part-way (connection, timeout, abort) keeps what it wrote, and
   * the next fetch with the same key continues from those bytes, also after a restart: it asks
   * the same URL again, through the same redirect checks, with Range from the bytes on disk and
   * If-Range with the validator of the body they belong to. The caller removes the partial body
   * when the job ends (ContentStore.removePartial).
   */
  partialKey?: string;
  /**
   * What the caller expects (POST `expected_sha256`, `expected_size`): other bytes end the fetch
   * with `integrity_mismatch` and are never stored. The size is judged from Content-Length before
   * the body, and while it streams.
   */
  expect?: { sha256?: string | null; size?: number | null };
}

/** What a kept partial body needs to be continued (stored next to it, see ContentStore). */
interface SavedBody {
  url: string;
  method: string;
  rep: Representation;
}

/** Failures after which a kept partial body is worth continuing: the body itself was fine. */
const INTERRUPTIONS: ReadonlySet<string> = new Set(["network", "timeout", "aborted", "proxy_failed"]);

export interface FetchResult {
  /** SHA-256 (hex) of the decoded body: the blob's name in the content store. */
  contentHash: string;
  size: number;
  /** The origin's Content-Type header as sent ("" when absent and `*\/*` allowed it). */
  contentType: string;
  /** URL of the response that was stored, after redirects. */
  finalUrl: string;
  status: number;
  /** Path of the blob in the content store. */
  path: string;
  /** Torrent piece hashes computed while streaming, when the size was announced up front. */
  pieces?: StoredBlob["pieces"];
  /** Holds the blob in the store until the caller's job records `contentHash` (release it then). */
  pin: StoredBlob["pin"];
  /** The origin's digests the body was checked against and matched (digests.ts), e.g. `content-digest: sha-256=:…:`. */
  verifiedDigests: string[];
}

export interface Fetcher {
  fetch(spec: FetchSpec, opts: FetchOptions): Promise<FetchResult>;
  /** Close idle keep-alive connections (they also close by themselves after a few seconds). */
  closeIdleConnections?(): void;
}

export interface FetcherLimits {
  /** Resume (Range) or restart attempts after a body was interrupted. Default 3. */
  maxResumes: number;
  /** Decoded/encoded ratio that marks a decompression bomb. Default 200. */
  maxDecompressionRatio: number;
  /** The ratio is judged only past this many decoded bytes. Default 1 MiB. */
  ratioCheckAfter: number;
  /**
   * Idle keep-alive connections close after this many ms. Default 4000: shorter than the
   * keep-alive timeout of common servers (5 s in nginx' and Node's defaults is the low end), so
   * we close first. 0 turns connection reuse off.
   */
  idleTimeoutMs: number;
  /** Idle connections kept per connection key (scheme, host, checked address, port). Default 4. */
  maxIdlePerKey: number;
  /** Idle connections kept in all. Default 64. */
  maxIdleTotal: number;
}

export const DEFAULT_LIMITS: FetcherLimits = {
  maxResumes: 3,
  maxDecompressionRatio: 200,
  ratioCheckAfter: 1024 * 1024,
  ...DEFAULT_POOL_LIMITS,
};

export interface FetcherDeps {
  config: Config;
  store: ContentStore;
  /** Name resolution (default: the system resolver, all addresses). Tests inject a map. */
  resolve?: Resolve;
  /**
   * Opens TCP connections, to origins (always an address the guard checked) and to the proxy.
   * Default node:net. Tests use it to route a stand-in public address to a loopback server: the
   * guard still judges the address it was given, only the routing changes.
   */
  dial?: Dial;
  /** Trust anchors for origin (and https proxy) certificates; replaces the system roots. */
  tlsCa?: string | string[];
  limits?: Partial<FetcherLimits>;
  /** Told of every integrity check (expected_sha256, origin digests) and its outcome: metrics. */
  onIntegrityCheck?: OnIntegrityCheck;
}

export function createFetcher(deps: FetcherDeps): Fetcher {
  const { config, store } = deps;
  const cfg = config.fetcher;
  const limits: FetcherLimits = { ...DEFAULT_LIMITS, ...deps.limits };
  const bodyLimits: BodyLimits = {
    maxSize: cfg.maxSize,
    maxDecompressionRatio: limits.maxDecompressionRatio,
    ratioCheckAfter: limits.ratioCheckAfter,
  };
  const policy: EgressPolicy = createEgressPolicy({
    allowPrivateNetworks: config.egress.allowPrivateNetworks,
    urlAllowlist: cfg.urlAllowlist,
    urlDenylist: cfg.urlDenylist,
  });
  const connectOptions: ConnectOptions = {
    policy,
    proxy: config.proxy,
    verifySsl: cfg.verifySsl,
    tlsCa: deps.tlsCa,
    dial: deps.dial ?? defaultDial,
    resolve: deps.resolve ?? defaultResolve,
    connectTimeoutMs: cfg.connectTimeoutMs,
  };
  const pool = new KeepAlivePool(connectOptions, {
    idleTimeoutMs: limits.idleTimeoutMs,
    maxIdlePerKey: limits.maxIdlePerKey,
    maxIdleTotal: limits.maxIdleTotal,
  });

  const send = createSend(pool, cfg.userAgent);
  const accept = (ex: Exchange, hop: Hop, expectPartial: boolean) =>
    acceptResponse(ex.res, hop.target, hop.method, expectPartial, cfg);

  function checkUrl(raw: string, base?: URL): TargetUrl {
    try {
      return parseAndCheckTarget(raw, policy, base);
    } catch (e) {
      if (e instanceof EgressRefusedError)
        throw new FetchError(e.refusal.reason === "bad_url" ? "bad_url" : "egress_refused", e.message, {
          transient: false,
          detail: e.refusal.addressClass ?? e.refusal.reason,
        });
      throw e;
    }
  }

  async function fetch(spec: FetchSpec, opts: FetchOptions): Promise<FetchResult> {
    const run = new FetchRun(opts.signal, cfg);
    const expectSize = opts.expect?.size ?? undefined;
    const expectSha256 = opts.expect?.sha256 ?? undefined;
    let verifiedDigests: string[] = [];
    // The announced length already says the body is not the one expected: refuse it before it is
    // read, and before its size is claimed from the store.
    const refuseAnnounced = (rep: Representation, method: string) => {
      const announced = wholeLength(rep);
      if (expectSize !== undefined && announced !== null && method !== "HEAD" && announced !== expectSize)
        throw sizeMismatch(expectSize, `announced as ${announced} bytes (Content-Length)`);
    };
    let writer: BlobWriter | null = null;
    let keepPartial = false;
    let saved: PartialBody | null = null;
    // The connection of the response being read. Destroyed on every failure; kept on success
    // (node:http returns it to the pool once the body was read to its end).
    let conn: PooledConnection | null = null;
    const closeConn = () => {
      conn?.destroy();
      conn = null;
    };
    try {
      if (run.signal.aborted) throw run.signal.reason;
      const first: Hop = {
        target: checkUrl(spec.url),
        method: normaliseMethod(spec.method),
        headers: callerHeaders(spec.headers),
        body: spec.body ?? null,
      };
      // A caller's own Range asks for a part: store that part as is, and never resume over it.
      const callerRange = hasHeader(first.headers, "range");
      const follow = (extra?: Record<string, string>) =>
        followRedirects(send, run, first, {
          maxRedirects: cfg.maxRedirects,
          readTimeoutMs: cfg.readTimeoutMs,
          checkUrl,
          extra,
        });
      const key = opts.partialKey;
      // What an earlier attempt of this job kept, if it is of this very request and resumable.
      saved = key && !callerRange ? await store.openPartial(key) : null;
      const savedBody = saved && asSavedBody(saved.meta, first);
      if (saved && !savedBody) {
        await store.dropPartial(saved);
        saved = null;
      }
      let { ex, hop } = await follow(
        saved && savedBody
          ? { Range: `bytes=${saved.size}-`, "If-Range": savedBody.rep.validator! }
          : undefined,
      );
      conn = ex.conn;
      let rep: Representation;
      if (
        saved &&
        savedBody &&
        ex.res.statusCode === 206 &&
        rangeContinues(ex.res, saved.size, savedBody.rep.length)
      ) {
        accept(ex, hop, true);
        rep = savedBody.rep;
        const partial = saved;
        saved = null; // the writer has it now (and removes it if it fails)
        writer = await store.resumeWriter(partial, { expectedSize: wholeLength(rep) }).catch((e) => {
          throw storageError(e, "Could not continue the body kept in the content store");
        });
        reportProgress(opts.onProgress, writer.size);
      } else {
        if (saved) {
          // Not the rest of the same body: a 200 is the whole (new) one; anything else, ask again.
          await store.dropPartial(saved);
          saved = null;
          if (ex.res.statusCode === 206 || ex.res.statusCode === 416) {
            closeConn();
            ({ ex, hop } = await follow());
            conn = ex.conn;
          }
        }
        rep = accept(ex, hop, false);
        refuseAnnounced(rep, hop.method);
        writer = await openWriter(store, rep, hop.method, partialFor(key, first, rep, hop, callerRange));
      }
      let res = ex.res;
      let decodedSoFar = writer.size;
      let recoveries = 0;
      for (;;) {
        const w: BlobWriter = writer;
        try {
          verifiedDigests = await writeBody(res, w, {
            rep,
            method: hop.method,
            alreadyDecoded: decodedSoFar,
            limits: bodyLimits,
            host: hop.target.hostname,
            touch: run.touch,
            signal: run.signal,
            onProgress: opts.onProgress,
            expectedSize: expectSize,
            onIntegrityCheck: deps.onIntegrityCheck,
          });
          // Read to the end and accepted: the connection may be reused (unless either side said close).
          conn?.keep();
          conn = null;
          break;
        } catch (e) {
          if (!(e instanceof BodyInterrupted)) throw e;
          closeConn();
          // Resume from what reached the writer, not from what the socket delivered: chunks
          // in flight inside the stream pipeline when it broke were never written.
          decodedSoFar = w.size;
          if (recoveries >= limits.maxResumes)
            throw new FetchError(
              "network",
              `The connection to ${hop.target.hostname} broke off during the body`,
              {
                detail: (e.cause as { code?: string })?.code,
              },
            );
          recoveries++;
          const next = await recover(
            send,
            run,
            hop,
            rep,
            decodedSoFar,
            canResume(rep, hop, callerRange),
            accept,
          );
          res = next.ex.res;
          conn = next.ex.conn;
          if (next.resumed) continue;
          rep = next.rep;
          refuseAnnounced(rep, hop.method);
          // Restart from scratch: the partial bytes belong to another attempt.
          await w.abort();
          writer = null;
          writer = await openWriter(
            store,
            rep,
            hop.method,
            partialFor(opts.partialKey, first, rep, hop, callerRange),
          );
          decodedSoFar = 0;
          reportProgress(opts.onProgress, 0);
        }
      }
      // Belt and braces for resumed bodies: the pieces must add up to the announced length.
      if (
        hop.method !== "HEAD" &&
        rep.coding === "identity" &&
        rep.length !== null &&
        rep.status !== 206 &&
        writer.size !== rep.length
      )
        throw new FetchError("network", `The body from ${hop.target.hostname} did not arrive complete`);
      const size = writer.size;
      if (expectSize !== undefined && size !== expectSize) throw sizeMismatch(expectSize, `${size} bytes`);
      const blob = await writer.commit(expectSha256 ? { sha256: expectSha256 } : {}).catch((e) => {
        if (e instanceof ContentMismatch) {
          deps.onIntegrityCheck?.("expected_sha256", "mismatch");
          throw new FetchError(
            "integrity_mismatch",
            `The body's SHA-256 is ${e.actual}, not the expected ${e.expected} (expected_sha256); nothing was stored`,
            { transient: false },
          );
        }
        throw storageError(e, "Could not store the body", size);
      });
      if (expectSha256) deps.onIntegrityCheck?.("expected_sha256", "ok");
      writer = null;
      return {
        contentHash: blob.sha256,
        size: blob.size,
        contentType: rep.contentType,
        finalUrl: hop.target.url.href,
        status: rep.status,
        path: blob.path,
        pin: blob.pin,
        verifiedDigests,
        ...(blob.pieces ? { pieces: blob.pieces } : {}),
      };
    } catch (e) {
      const err = run.signal.aborted
        ? run.signal.reason
        : e instanceof FetchError
          ? e
          : new FetchError("network", "The fetch failed", { detail: (e as { code?: string })?.code });
      keepPartial = err instanceof FetchError && INTERRUPTIONS.has(err.code);
      throw err;
    } finally {
      closeConn();
      if (saved) await store.dropPartial(saved).catch(() => {});
      if (writer) await (keepPartial ? writer.keep() : writer.abort()).catch(() => {});
      run.dispose();
    }
  }

  return { fetch, closeIdleConnections: () => pool.closeIdle() };
}

/**
 * The temp file of job `key` for the body of `request`; resumable (kept on an interruption) when
 * the body can be resumed.
 */
function partialFor(
  key: string | undefined,
  request: Hop,
  rep: Representation,
  hop: Hop,
  callerRange: boolean,
): { key?: string; resume?: SavedBody } {
  if (!key) return {};
  if (!canResume(rep, hop, callerRange)) return { key };
  return { key, resume: { url: request.target.url.href, method: request.method, rep } };
}

/** `meta` as a SavedBody for a resumable body of this same request, else null. */
function asSavedBody(meta: unknown, request: Hop): SavedBody | null {
  const m = meta as Partial<SavedBody> | null;
  const rep = m?.rep;
  if (!m || m.url !== request.target.url.href || m.method !== request.method || !rep) return null;
  const ok =
    rep.status === 200 &&
    rep.coding === "identity" &&
    typeof rep.validator === "string" &&
    typeof rep.contentType === "string" &&
    (rep.length === null || Number.isSafeInteger(rep.length));
  return ok ? (m as SavedBody) : null;
}
