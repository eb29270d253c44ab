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
import type { BlobWriter, ContentStore, StoredBlob } from "../cas";
import { BodyInterrupted, type BodyLimits } from "./body";
import { openWriter, reportProgress, storageError, writeBody } from "./body-writer";
import { type ConnectOptions, type Dial, defaultDial, defaultResolve, type Resolve } from "./connect";
import { FetchError } from "./errors";
import { callerHeaders, hasHeader, normaliseMethod } from "./headers";
import { DEFAULT_POOL_LIMITS, KeepAlivePool, type PooledConnection } from "./keepalive";
import { followRedirects } from "./redirects";
import { createSend, type Exchange, type Hop } from "./request";
import { acceptResponse } from "./response";
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
}

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
    let writer: BlobWriter | null = null;
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
      const { ex, hop } = await followRedirects(send, run, first, {
        maxRedirects: cfg.maxRedirects,
        readTimeoutMs: cfg.readTimeoutMs,
        checkUrl,
      });
      let res = ex.res;
      conn = ex.conn;
      let rep = accept(ex, hop, false);
      writer = await openWriter(store, rep, hop.method);
      let decodedSoFar = 0;
      let recoveries = 0;
      for (;;) {
        const w: BlobWriter = writer;
        try {
          await writeBody(res, w, {
            rep,
            method: hop.method,
            alreadyDecoded: decodedSoFar,
            limits: bodyLimits,
            host: hop.target.hostname,
            touch: run.touch,
            signal: run.signal,
            onProgress: opts.onProgress,
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
          // Restart from scratch: the partial bytes belong to another attempt.
          await w.abort();
          writer = null;
          writer = await openWriter(store, rep, hop.method);
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
      const blob = await writer.commit().catch((e) => {
        throw storageError(e, "Could not store the body", size);
      });
      writer = null;
      return {
        contentHash: blob.sha256,
        size: blob.size,
        contentType: rep.contentType,
        finalUrl: hop.target.url.href,
        status: rep.status,
        path: blob.path,
        pin: blob.pin,
        ...(blob.pieces ? { pieces: blob.pieces } : {}),
      };
    } catch (e) {
      if (run.signal.aborted) throw run.signal.reason;
      if (e instanceof FetchError) throw e;
      throw new FetchError("network", "The fetch failed", { detail: (e as { code?: string })?.code });
    } finally {
      closeConn();
      if (writer) await writer.abort().catch(() => {});
      run.dispose();
    }
  }

  return { fetch, closeIdleConnections: () => pool.closeIdle() };
}
