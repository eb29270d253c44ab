/**
 * Keep-alive connection reuse for the fetcher (HTTP/1.1 persistent connections), without giving
 * up any guarantee of connect.ts.
 *
 * Every request still runs the whole gate first: egress guard on the URL, resolve here, guard on
 * every address (resolveChecked). Only then may an idle connection be taken, and only one whose
 * key names one of the addresses this request's own check approved: a name that resolves
 * elsewhere now (DNS rebinding) never rides an older connection. The key is everything that
 * makes a connection what it is: scheme, host name (SNI and the name the certificate was
 * verified against), port, the checked address (or "proxy-resolved" with socks5h), and the
 * pool's identity: proxy type, host, port and credentials, certificate verification and trust
 * anchors. A pool belongs to one fetcher (one set of connect options, dialler and resolver).
 *
 * The pooling itself is node:http's keep-alive Agent (Bun 1.4.5 ships Node's _http_agent and
 * _http_client): it hands a socket back only after the response was read to its end, the request
 * was fully written, and neither side said `Connection: close` (or spoke HTTP/1.0 without
 * keep-alive); a socket that errors, closes, or receives bytes while idle is dropped; idle
 * sockets are unref'd, closed after `idleTimeoutMs` (or sooner if the server's `Keep-Alive:
 * timeout=` says so), and kept LIFO. On top of that, this file adds: our key (getName), sockets
 * that we opened (createConnection returns the connection we pass in), a request that brings a
 * fresh connection never takes an idle one instead (addRequest), a cap on idle connections
 * across all keys (keepSocketAlive), and ownership: a connection stays held by its lease until
 * the fetcher settles it. node:http may put it back in the pool as soon as the body's last byte
 * was read, but until the lease says `keep()` (the fetch accepted the response and finished with
 * it) no other request may take it, and `destroy()` still closes it: a response that the fetcher
 * rejects after reading it (a body that does not decode, a failed write) never leaves a reusable
 * connection behind.
 *
 * A reused connection can turn out to have been closed by the server just as we wrote to it. Such
 * a failure, before a single byte of response arrived, is reported as StaleConnection so the
 * caller can retry once on a fresh connection; only idempotent requests are ever sent on a reused
 * connection, so that retry is always allowed (RFC 9112 §9.3.1).
 */
import { createHash } from "node:crypto";
import http, { type IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import type { TargetUrl } from "../../../src/egress";
import { addRequestAmong, requireAgentPatch } from "../../patches/node-http-agent";
import { type Connection, type ConnectOptions, connectChecked, resolveChecked } from "./connect";
import { exchangeWith, type OutgoingRequest } from "./exchange";

export interface PoolLimits {
  /** Idle connections are closed after this many ms (less than common server keep-alive timeouts). 0: no reuse. */
  idleTimeoutMs: number;
  /** Idle connections kept per key (same scheme, host, address, port, proxy, TLS settings). 0: no reuse. */
  maxIdlePerKey: number;
  /** Idle connections kept in all. 0: no reuse. */
  maxIdleTotal: number;
}

export const DEFAULT_POOL_LIMITS: PoolLimits = { idleTimeoutMs: 4000, maxIdlePerKey: 4, maxIdleTotal: 64 };

/** RFC 9110 §9.2.2: methods a client may retry on its own. Others always get a fresh connection. */
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]);

const KEY = "proxyTorrentPoolKey";
const CONNECTION = "proxyTorrentConnection";

/** A request on a reused connection failed before any response byte: retry it on a fresh one. */
export class StaleConnection extends Error {
  constructor(override readonly cause: unknown) {
    super("a reused connection was closed before it answered");
    this.name = "StaleConnection";
  }
}

/** The Agent found no idle socket where one was a moment ago (never seen; handled like a stale one). */
class PoolMiss extends Error {
  constructor() {
    super("no idle connection for the key");
    this.name = "PoolMiss";
  }
}

class KeepAliveAgent extends http.Agent {
  /** The layers behind each socket we handed to node:http (to tear all of them down). */
  private readonly connections = new WeakMap<Duplex, Connection>();
  /** Which lease holds a socket; a held socket is never handed to another request, even when idle. */
  private readonly holders = new WeakMap<Duplex, object>();
  /** Sockets that must never be pooled again (a lease gave up on them). */
  private readonly condemned = new WeakSet<Duplex>();
  /** The idle socket node:http picked for a request (known as soon as the request exists). */
  readonly reusedFor = new WeakMap<http.ClientRequest, Duplex>();

  constructor(private readonly limits: PoolLimits) {
    requireAgentPatch();
    const keepAlive = limits.idleTimeoutMs > 0 && limits.maxIdlePerKey > 0 && limits.maxIdleTotal > 0;
    super({
      keepAlive,
      maxFreeSockets: Math.max(1, limits.maxIdlePerKey),
      ...(keepAlive ? { timeout: limits.idleTimeoutMs } : {}),
      scheduling: "lifo",
    });
  }

  override getName(options?: http.ClientRequestArgs): string {
    const key = (options as Record<string, unknown> | undefined)?.[KEY];
    // Every request through this agent carries our key; guessing one could share a socket.
    if (typeof key !== "string") throw new Error("connection pool: a request without a pool key");
    return key;
  }

  override createConnection(options: http.ClientRequestArgs): Duplex {
    const conn = (options as Record<string, unknown>)[CONNECTION] as Connection | undefined;
    if (!conn) throw new PoolMiss();
    return conn.socket;
  }

  /**
   * A request that brings its own fresh connection travels on it, never on an idle one; any other
   * request may only take an idle socket that no lease holds. node:http picks from
   * `freeSockets[name]`, so for the length of this synchronous call it sees only what it may take.
   */
  addRequest(req: http.ClientRequest, options: Record<string, unknown>, ...rest: unknown[]): void {
    const name = this.getName(options as http.ClientRequestArgs);
    addRequestAmong(
      this,
      name,
      (idle) => (options[CONNECTION] ? [] : idle.filter((s) => !this.holders.has(s))),
      req,
      options,
      rest,
    );
  }

  override keepSocketAlive(socket: Duplex): boolean {
    if (this.condemned.has(socket)) return false;
    if (!(super.keepSocketAlive(socket) as unknown as boolean)) return false;
    if (this.idleCount() >= this.limits.maxIdleTotal) return false;
    for (const layer of this.connections.get(socket)?.layers ?? [])
      (layer as { unref?: () => void }).unref?.();
    return true;
  }

  override reuseSocket(socket: Duplex, req: http.ClientRequest): void {
    super.reuseSocket(socket, req);
    // The idle timeout is for idle sockets; a request in flight has the fetcher's own timers.
    (socket as { setTimeout?: (ms: number) => void }).setTimeout?.(0);
    for (const layer of this.connections.get(socket)?.layers ?? []) (layer as { ref?: () => void }).ref?.();
    this.reusedFor.set(req, socket);
  }

  /** Take charge of a connection we opened: when any of its layers closes, all of them go. */
  adopt(conn: Connection): void {
    this.connections.set(conn.socket, conn);
    for (const layer of conn.layers) layer.once("close", () => conn.destroy());
  }

  /** Mark `socket` as held by a lease; `release` with the same token may destroy it. */
  hold(socket: Duplex, token: object): void {
    this.holders.set(socket, token);
  }

  /** The lease is done with the socket and it may be reused (once node:http pools it). */
  keep(socket: Duplex, token: object): void {
    if (this.holders.get(socket) === token) this.holders.delete(socket);
  }

  /** Destroy the socket (every layer) if `token`'s lease still holds it; otherwise do nothing. */
  release(socket: Duplex, token: object): void {
    if (this.holders.get(socket) !== token) return;
    this.holders.delete(socket);
    this.condemned.add(socket);
    const conn = this.connections.get(socket);
    if (conn) conn.destroy();
    else socket.destroy();
  }

  hasIdle(name: string): boolean {
    return (this.freeSockets[name] ?? []).some((s) => !s.destroyed && s.writable && !this.holders.has(s));
  }

  idleCount(): number {
    let n = 0;
    for (const list of Object.values(this.freeSockets)) n += list?.length ?? 0;
    return n;
  }

  closeIdle(): void {
    for (const list of Object.values(this.freeSockets))
      for (const s of [...(list ?? [])]) {
        const conn = this.connections.get(s);
        if (conn) conn.destroy();
        else s.destroy();
      }
  }
}

/** One request's hold on its connection; settle it with exactly one of keep() or destroy(). */
export interface PooledConnection {
  /** True when the request went out on an idle connection from the pool. */
  readonly reused: boolean;
  /**
   * The response was read to its end and accepted: the connection may carry other requests
   * (node:http pools it unless either side said close). destroy() does nothing afterwards.
   */
  keep(): void;
  /** Close the connection (every layer), unless keep() came first. */
  destroy(): void;
}

export class KeepAlivePool {
  private readonly agent: KeepAliveAgent;
  private readonly identity: string;

  constructor(
    private readonly o: ConnectOptions,
    limits: PoolLimits = DEFAULT_POOL_LIMITS,
  ) {
    this.agent = new KeepAliveAgent(limits);
    const p = o.proxy;
    const ca = o.tlsCa === undefined ? null : Array.isArray(o.tlsCa) ? o.tlsCa : [o.tlsCa];
    // Hashed so that credentials never sit in a readable map key.
    this.identity = createHash("sha256")
      .update(
        JSON.stringify([
          p ? [p.type, p.host, p.port, p.username ?? null, p.password ?? null] : null,
          o.verifySsl,
          ca,
        ]),
      )
      .digest("hex")
      .slice(0, 32);
  }

  /** The pool key of a connection to `target` through checked `address` (null: the proxy resolved it). */
  key(target: TargetUrl, address: string | null): string {
    return JSON.stringify([
      target.scheme,
      target.hostname,
      target.port,
      address ?? "proxy-resolved",
      this.identity,
    ]);
  }

  /** Close every idle connection (connections in use finish their request first). */
  closeIdle(): void {
    this.agent.closeIdle();
  }

  /**
   * Check, connect (or take an idle connection to an address this check approved), send `req`,
   * and wait for the response head. `connect` bounds resolve + connect and is `done()` once that
   * phase is over; `signal` covers the whole exchange. With `fresh`, or for a method that is not
   * idempotent, a new connection is opened. Throws FetchError, the signal's reason, the
   * transport's error, or StaleConnection (a reused connection failed before any response byte).
   */
  async send(
    target: TargetUrl,
    req: OutgoingRequest,
    o: { connect: { signal: AbortSignal; done(): void }; signal: AbortSignal; fresh?: boolean },
  ): Promise<{ res: IncomingMessage; lease: PooledConnection }> {
    let key: string | null = null;
    let conn: Connection | null = null;
    try {
      const addresses = await resolveChecked(target, this.o, o.connect.signal);
      if (!o.fresh && IDEMPOTENT.has(req.method)) {
        const candidates = addresses === null ? [null] : addresses;
        for (const address of candidates) {
          const k = this.key(target, address);
          if (this.agent.hasIdle(k)) {
            key = k;
            break;
          }
        }
      }
      if (key === null) {
        conn = await connectChecked(target, addresses, this.o, o.connect.signal);
        this.agent.adopt(conn);
        key = this.key(target, conn.address);
      }
    } catch (e) {
      if (o.connect.signal.aborted) throw o.connect.signal.reason;
      throw e;
    } finally {
      o.connect.done();
    }
    // From here to http.request nothing awaits: the idle socket seen above is still there.
    const token = {};
    let socket: Duplex | null = conn?.socket ?? null;
    let reused = false;
    let answered = false;
    const onData = () => {
      answered = true;
    };
    const destroy = () => {
      if (socket) this.agent.release(socket, token);
      else conn?.destroy();
    };
    const keep = () => {
      if (socket) this.agent.keep(socket, token);
    };
    if (socket) {
      this.agent.hold(socket, token);
      socket.on("data", onData);
    }
    try {
      const res = await exchangeWith(
        this.agent,
        { [KEY]: key, [CONNECTION]: conn ?? undefined },
        req,
        o.signal,
        destroy,
        (r) => {
          const idle = this.agent.reusedFor.get(r);
          if (!idle) return;
          reused = true;
          socket = idle;
          this.agent.hold(idle, token);
          idle.on("data", onData);
        },
      );
      return { res, lease: { reused, keep, destroy } };
    } catch (e) {
      destroy();
      if (o.signal.aborted) throw o.signal.reason;
      if (e instanceof PoolMiss || (reused && !answered)) throw new StaleConnection(e);
      throw e;
    } finally {
      (socket as Duplex | null)?.off("data", onData);
    }
  }
}

/**
 * Read and drop a small body (a redirect's) so its connection can go back to the pool; a body
 * that is large, slow, broken, or on a connection that will not be kept is not read: the
 * connection is closed instead. Never throws; resolves once the connection is pooled or closed.
 */
export function discardBody(
  res: IncomingMessage,
  lease: PooledConnection,
  o: { maxBytes: number; timeoutMs: number; signal: AbortSignal; method: string },
): Promise<void> {
  // A HEAD answer has no body, whatever its Content-Length says.
  const length = o.method === "HEAD" ? undefined : res.headers["content-length"];
  const closing = /(^|,)\s*close\s*(,|$)/i.test(String(res.headers.connection ?? ""));
  const tooBig = length !== undefined && (!/^\d+$/.test(length) || Number(length) > o.maxBytes);
  if (closing || tooBig || o.signal.aborted) {
    lease.destroy();
    res.destroy();
    return Promise.resolve();
  }
  return new Promise<void>((resolve) => {
    let seen = 0;
    let finished = false;
    const finish = (keep: boolean) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      o.signal.removeEventListener("abort", onAbort);
      res.off("data", onData);
      if (!keep) {
        lease.destroy();
        res.destroy();
        return resolve();
      }
      lease.keep();
      // node:http hands the socket back on the next tick after 'end': wait for that.
      setImmediate(resolve);
    };
    const onData = (chunk: Buffer) => {
      seen += chunk.length;
      if (seen > o.maxBytes) finish(false);
    };
    const onAbort = () => finish(false);
    const timer = setTimeout(() => finish(false), o.timeoutMs);
    o.signal.addEventListener("abort", onAbort, { once: true });
    res.on("data", onData);
    res.once("end", () => finish(res.complete));
    res.once("error", () => finish(false));
    res.once("close", () => finish(false)); // after 'end' this is a no-op
  });
}
