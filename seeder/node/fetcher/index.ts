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
 * socket at once.
 */
import type { IncomingMessage } from "node:http";
import type { Config } from "../../../src/config";
import {
  createEgressPolicy,
  type EgressPolicy,
  EgressRefusedError,
  parseAndCheckTarget,
  type TargetUrl,
} from "../../../src/egress";
import type { BlobWriter, ContentStore, StoredBlob } from "../cas";
import { BodyInterrupted, type BodyLimits, type ContentCoding, contentCoding, pumpBody } from "./body";
import { type ConnectOptions, type Dial, defaultDial, defaultResolve, type Resolve } from "./connect";
import { FetchError, isTransientStatus } from "./errors";
import {
  callerHeaders,
  crossOriginHeaders,
  hasHeader,
  normaliseMethod,
  requestHeaders,
  withoutHeaders,
} from "./headers";
import {
  DEFAULT_POOL_LIMITS,
  discardBody,
  KeepAlivePool,
  type PooledConnection,
  StaleConnection,
} from "./keepalive";
import { isMimeAllowed, mimeEssence } from "./mime";

export type { Dial, Resolve } from "./connect";
export { FetchError, type FetchErrorCode, isTransientStatus } from "./errors";
export { isMimeAllowed, mimeEssence } from "./mime";

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

/** A redirect's body is read (to keep its connection) only up to this size and this long. */
const DISCARD_MAX_BYTES = 64 * 1024;
const DISCARD_TIMEOUT_MS = 1000;

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

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** Owns the timers and the abort controller of one fetch. */
class FetchRun {
  private readonly controller = new AbortController();
  private readonly timers = new Set<ReturnType<typeof setTimeout>>();
  private idleTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly onCallerAbort: () => void;

  constructor(
    private readonly caller: AbortSignal,
    private readonly cfg: Config["fetcher"],
  ) {
    this.onCallerAbort = () =>
      this.abort(new FetchError("aborted", "The fetch was cancelled", { transient: false }));
    if (caller.aborted) this.onCallerAbort();
    else caller.addEventListener("abort", this.onCallerAbort, { once: true });
    this.timer(
      cfg.totalTimeoutMs,
      () => new FetchError("timeout", `The fetch did not finish within ${seconds(cfg.totalTimeoutMs)}`),
    );
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  abort(reason: FetchError): void {
    if (!this.controller.signal.aborted) this.controller.abort(reason);
  }

  private timer(ms: number, reason: () => FetchError): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      this.abort(reason());
    }, ms);
    this.timers.add(t);
  }

  /** A signal for one connect phase: the run's, plus the connect timeout. */
  connectPhase(host: string): { signal: AbortSignal; done(): void } {
    const phase = new AbortController();
    const forward = () => phase.abort(this.signal.reason);
    if (this.signal.aborted) forward();
    else this.signal.addEventListener("abort", forward, { once: true });
    const t = setTimeout(
      () =>
        phase.abort(
          new FetchError(
            "timeout",
            `Timed out connecting to ${host} after ${seconds(this.cfg.connectTimeoutMs)}`,
          ),
        ),
      this.cfg.connectTimeoutMs,
    );
    return {
      signal: phase.signal,
      done: () => {
        clearTimeout(t);
        this.signal.removeEventListener("abort", forward);
      },
    };
  }

  /**
   * Note activity for the idle-read timer: nothing received for FETCHER__READ_TIMEOUT aborts the
   * fetch. Called for every chunk, so it only stores a timestamp; one timer re-arms itself for
   * the time left instead of being replaced on each chunk.
   */
  touch = (): void => {
    this.lastActivity = performance.now();
    if (this.idleTimer === null) this.armIdle(this.cfg.readTimeoutMs);
  };

  private lastActivity = 0;

  private armIdle(ms: number): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      const left = this.lastActivity + this.cfg.readTimeoutMs - performance.now();
      if (left > 1) return this.armIdle(left);
      this.idleTimer = null;
      this.abort(new FetchError("timeout", `The origin sent nothing for ${seconds(this.cfg.readTimeoutMs)}`));
    }, ms);
    this.timers.add(t);
    this.idleTimer = t;
  }

  dispose(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.caller.removeEventListener("abort", this.onCallerAbort);
  }
}

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}

function header(res: IncomingMessage, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v.join(", ") : v;
}

function statusText(res: IncomingMessage): string {
  const reason = (res.statusMessage ?? "").replace(/[^\x20-\x7e]/g, "").slice(0, 80);
  return reason ? `${res.statusCode} ${reason}` : String(res.statusCode);
}

/** What the first good response told us, to decide whether and how to resume. */
interface Representation {
  status: number;
  contentType: string;
  coding: ContentCoding;
  /** Encoded length of the whole body, when known. */
  length: number | null;
  /** Strong ETag or Last-Modified, for If-Range; null when the body cannot be resumed. */
  validator: string | null;
}

function parseLength(v: string | undefined, host: string): number | null {
  if (v === undefined) return null;
  if (!/^\d+$/.test(v.trim())) throw new FetchError("bad_response", `${host} sent an invalid Content-Length`);
  return Number(v.trim());
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

  /**
   * Connect (or reuse an idle connection to an address this request's check approved), send,
   * and return the response head; the caller owns the lease afterwards. A reused connection
   * that the server had closed, failing before any byte of the answer, is retried once on a
   * fresh connection.
   */
  async function send(
    run: FetchRun,
    target: TargetUrl,
    method: string,
    headers: Record<string, string>,
    body: string | null,
    extra?: Record<string, string>,
  ): Promise<{ res: IncomingMessage; conn: PooledConnection }> {
    const req = {
      method,
      path: target.url.pathname + target.url.search,
      headers: requestHeaders(headers, {
        host: target.url.host,
        userAgent: cfg.userAgent,
        bodyLength: body === null ? null : Buffer.byteLength(body),
        extra,
      }),
      body,
    };
    for (let attempt = 0; ; attempt++) {
      run.touch();
      try {
        const { res, lease } = await pool.send(target, req, {
          connect: run.connectPhase(target.hostname),
          signal: run.signal,
          fresh: attempt > 0,
        });
        run.touch();
        return { res, conn: lease };
      } catch (e) {
        if (run.signal.aborted) throw run.signal.reason;
        if (e instanceof StaleConnection && attempt === 0) continue;
        const cause = e instanceof StaleConnection ? e.cause : e;
        if (cause instanceof FetchError) throw cause;
        const code = (cause as { code?: string })?.code ?? "";
        if (code.startsWith("HPE_"))
          throw new FetchError("bad_response", `${target.hostname} sent an invalid HTTP response`, {
            detail: code,
          });
        throw new FetchError("network", `The connection to ${target.hostname} failed before it answered`, {
          detail: code || undefined,
        });
      }
    }
  }

  /** Status, MIME and size checks every stored response passes. */
  function accept(
    res: IncomingMessage,
    target: TargetUrl,
    method: string,
    expectPartial: boolean,
  ): Representation {
    const status = res.statusCode ?? 0;
    const ok = expectPartial ? status === 206 || status === 200 : status >= 200 && status < 300;
    if (!ok)
      throw new FetchError("http_status", `Origin answered ${statusText(res)}`, {
        status,
        transient: isTransientStatus(status),
      });
    const contentType = (header(res, "content-type") ?? "").trim();
    if (!isMimeAllowed(contentType, cfg.mimeWhitelist))
      throw new FetchError(
        "mime_refused",
        // Names the setting, so whoever reads this (the operator's log, or a caller asking the
        // operator) knows what would allow it.
        contentType
          ? `Content-Type ${mimeEssence(contentType)} is not allowed (its operator can add it to FETCHER__MIME_WHITELIST)`
          : "The origin sent no Content-Type, and only listed types are allowed (its operator can add */* to FETCHER__MIME_WHITELIST)",
      );
    const coding = contentCoding(header(res, "content-encoding"), target.hostname);
    const length = parseLength(header(res, "content-length"), target.hostname);
    // The decoded size is only known for identity bodies; encoded ones are capped while streaming.
    if (
      coding === "identity" &&
      length !== null &&
      length > cfg.maxSize &&
      status !== 206 &&
      method !== "HEAD"
    )
      throw new FetchError(
        "too_large",
        `The body is ${length} bytes, larger than the limit of ${cfg.maxSize} bytes`,
      );
    const etag = header(res, "etag")?.trim();
    const lastModified = header(res, "last-modified")?.trim();
    const ranges = (header(res, "accept-ranges") ?? "")
      .toLowerCase()
      .split(",")
      .map((s) => s.trim());
    const strongEtag = etag && !etag.startsWith("W/") ? etag : null;
    const validator =
      coding === "identity" && ranges.includes("bytes") ? (strongEtag ?? lastModified ?? null) : null;
    return { status, contentType, coding, length, validator };
  }

  /** The body's final size when the origin announced it (identity coding, whole body). */
  const wholeLength = (r: Representation): number | null =>
    r.coding === "identity" && r.status === 200 ? r.length : null;

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
      let target = checkUrl(spec.url);
      let method = normaliseMethod(spec.method);
      let headers = callerHeaders(spec.headers);
      let body = spec.body ?? null;
      // A caller's own Range asks for a part: store that part as is, and never resume over it.
      const callerRange = hasHeader(headers, "range");

      let res: IncomingMessage;
      for (let redirects = 0; ; redirects++) {
        ({ res, conn } = await send(run, target, method, headers, body));
        const status = res.statusCode ?? 0;
        const location = header(res, "location");
        if (!REDIRECTS.has(status) || !location) break;
        if (redirects >= cfg.maxRedirects)
          throw new FetchError("too_many_redirects", `More than ${cfg.maxRedirects} redirects`, {
            transient: false,
          });
        const from = target.url.origin;
        target = checkUrl(location, target.url);
        if (target.url.origin !== from) headers = crossOriginHeaders(headers);
        // Read the (small) redirect body so the connection can carry the next hop if it goes
        // to the same place; anything else closes it.
        const hop = conn!;
        conn = null;
        await discardBody(res, hop, {
          maxBytes: DISCARD_MAX_BYTES,
          timeoutMs: Math.min(DISCARD_TIMEOUT_MS, cfg.readTimeoutMs),
          signal: run.signal,
          method,
        });
        if (run.signal.aborted) throw run.signal.reason;
        if (status === 303 || ((status === 301 || status === 302) && method === "POST")) {
          if (method !== "HEAD") method = "GET";
          body = null;
          headers = withoutHeaders(headers, ["content-type", "content-encoding", "content-language"]);
        }
      }

      let rep = accept(res, target, method, false);
      const canResume = (r: Representation) =>
        !callerRange && method !== "HEAD" && r.validator !== null && r.status === 200;
      writer = await store.createWriter({ expectedSize: wholeLength(rep) }).catch((e) => {
        throw new FetchError("storage", "Could not open a file in the content store", { detail: e?.code });
      });
      let decodedSoFar = 0;
      let recoveries = 0;
      for (;;) {
        const w: BlobWriter = writer;
        try {
          const done = await pumpBody(res, {
            coding: rep.coding,
            limits: bodyLimits,
            alreadyDecoded: decodedSoFar,
            expectedLength:
              method === "HEAD" || res.statusCode === 204 || res.statusCode === 304
                ? 0
                : expectedFor(res, rep),
            host: target.hostname,
            touch: run.touch,
            signal: run.signal,
            write: async (chunk, total) => {
              try {
                await w.write(chunk);
              } catch (e) {
                throw new FetchError("storage", "Could not write the body to the content store", {
                  detail: (e as { code?: string })?.code,
                });
              }
              try {
                opts.onProgress?.(total);
              } catch {
                /* a progress callback must not break the download */
              }
            },
          });
          decodedSoFar = done.decoded;
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
              `The connection to ${target.hostname} broke off during the body`,
              {
                detail: (e.cause as { code?: string })?.code,
              },
            );
          recoveries++;
          // Only identity bodies are resumed, so written bytes and body offsets are the same.
          if (canResume(rep) && decodedSoFar > 0) {
            ({ res, conn } = await send(run, target, method, headers, body, {
              Range: `bytes=${decodedSoFar}-`,
              "If-Range": rep.validator!,
            }));
            const next = accept(res, target, method, true);
            if (next.status === 206 && rangeContinues(res, decodedSoFar, rep.length)) continue;
            if (next.status === 206) {
              // A 206 for a different range: start again without Range.
              closeConn();
              ({ res, conn } = await send(run, target, method, headers, body));
              rep = accept(res, target, method, false);
            } else rep = next; // 200: the representation changed (or Range was ignored)
          } else {
            ({ res, conn } = await send(run, target, method, headers, body));
            rep = accept(res, target, method, false);
          }
          // Restart from scratch: the partial bytes belong to another attempt.
          await w.abort();
          writer = null;
          writer = await store.createWriter({ expectedSize: wholeLength(rep) }).catch((err) => {
            throw new FetchError("storage", "Could not open a file in the content store", {
              detail: err?.code,
            });
          });
          decodedSoFar = 0;
          try {
            opts.onProgress?.(0);
          } catch {
            /* ignored */
          }
        }
      }
      // Belt and braces for resumed bodies: the pieces must add up to the announced length.
      if (
        method !== "HEAD" &&
        rep.coding === "identity" &&
        rep.length !== null &&
        rep.status !== 206 &&
        writer.size !== rep.length
      )
        throw new FetchError("network", `The body from ${target.hostname} did not arrive complete`);
      const blob = await writer.commit().catch((e) => {
        throw new FetchError("storage", "Could not store the body", { detail: e?.code });
      });
      writer = null;
      return {
        contentHash: blob.sha256,
        size: blob.size,
        contentType: rep.contentType,
        finalUrl: target.url.href,
        status: rep.status,
        path: blob.path,
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

/** Encoded bytes this response should carry (Content-Length), or null when it does not say. */
function expectedFor(res: IncomingMessage, rep: Representation): number | null {
  if (res.statusCode === 206) {
    const len = header(res, "content-length");
    return len && /^\d+$/.test(len) ? Number(len) : null;
  }
  return rep.length;
}

/** Does a 206 answer continue exactly where we stopped (and describe the same total length)? */
function rangeContinues(res: IncomingMessage, from: number, total: number | null): boolean {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec((header(res, "content-range") ?? "").trim());
  if (!m) return false;
  if (Number(m[1]) !== from) return false;
  if (total !== null && m[3] !== "*" && Number(m[3]) !== total) return false;
  return true;
}
