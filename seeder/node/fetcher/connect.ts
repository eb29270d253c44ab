/**
 * Opening the connection a request travels on: resolve here, check every address with the egress
 * guard, connect to exactly a checked address (directly, through SOCKS5, or through an HTTP
 * CONNECT tunnel), then TLS on top for https. With a proxy configured the only socket we ever
 * open goes to the proxy: there is no code path that falls back to a direct connection.
 *
 * The caller passes an AbortSignal that covers the whole connect phase (connect timeout, total
 * deadline, cancellation); aborting destroys whatever socket is open.
 *
 * Two steps, so that the fetcher's connection pool (keepalive.ts) can sit between them: resolveChecked
 * (guard, resolve, guard every address) runs for every request, and only then is an idle
 * connection to one of those very addresses taken, or connectChecked opens a new one to them.
 * openConnection does both, for a connection of one's own (webhook delivery).
 */
import { lookup } from "node:dns/promises";
import net from "node:net";
import type { Duplex } from "node:stream";
import tls from "node:tls";
import { SocksClient } from "socks";
import type { ProxyConfig } from "../../../src/config";
import {
  checkAddresses,
  checkTarget,
  checkUnresolvedName,
  type EgressPolicy,
  type TargetUrl,
} from "../../../src/egress";
import { FetchError } from "./errors";

/** Opens a TCP connection to host:port (an IP for origins, the configured name for a proxy). */
export type Dial = (host: string, port: number, signal: AbortSignal) => Promise<net.Socket>;
/** Resolves a host name to IP addresses (all of them, in preference order). */
export type Resolve = (host: string) => Promise<string[]>;

export interface ConnectOptions {
  policy: EgressPolicy;
  proxy: ProxyConfig | null;
  verifySsl: boolean;
  /** Trust anchors for origins and an https proxy (replaces the system roots; tests and private CAs). */
  tlsCa?: string | string[];
  dial: Dial;
  resolve: Resolve;
  /** Upper bound for the SOCKS handshake (the connect-phase signal normally fires first). */
  connectTimeoutMs: number;
}

export interface Connection {
  /** What the HTTP request is written to (a TLS socket for https origins). */
  socket: Duplex;
  /**
   * The checked address the connection goes to (directly or through the proxy's tunnel); null
   * with socks5h, where the proxy resolved the name.
   */
  address: string | null;
  /** Every socket of the connection, lowest first (raw TCP, proxy TLS, tunnel, origin TLS). */
  layers: readonly Duplex[];
  /** Tear down every layer. */
  destroy(): void;
}

/** Every socket we create keeps an error listener for its whole life: a late error must not crash the process. */
function keepErrorsQuiet<T extends Duplex>(s: T): T {
  s.on("error", () => {});
  return s;
}

export const defaultResolve: Resolve = async (host) => {
  const found = await lookup(host, { all: true, verbatim: true });
  return found.map((a) => a.address);
};

export const defaultDial: Dial = (host, port, signal) =>
  new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const s = keepErrorsQuiet(net.connect({ host, port }));
    const onAbort = () => {
      s.destroy();
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
    s.once("connect", () => {
      signal.removeEventListener("abort", onAbort);
      resolve(s);
    });
    s.once("error", (e) => {
      signal.removeEventListener("abort", onAbort);
      s.destroy();
      reject(e);
    });
  });

/** Reject with the signal's reason as soon as it fires. */
function raceAbort<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}

/** Destroy `sockets` when the signal fires; returns the un-registration. */
function destroyOnAbort(signal: AbortSignal, ...sockets: Duplex[]): () => void {
  const onAbort = () => {
    for (const s of sockets) s.destroy();
  };
  if (signal.aborted) onAbort();
  else signal.addEventListener("abort", onAbort, { once: true });
  return () => signal.removeEventListener("abort", onAbort);
}

function errCode(e: unknown): string {
  const code = (e as { code?: unknown })?.code;
  return typeof code === "string" ? code : "";
}

const SYSCALL_WORDS: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  ETIMEDOUT: "timed out",
  EPIPE: "connection closed",
};

function describeSyscall(e: unknown): string {
  return SYSCALL_WORDS[errCode(e)] ?? "connection failed";
}

/** Resolve (unless the host is a literal) and run the egress guard on every address. */
async function checkedAddresses(
  target: TargetUrl,
  o: ConnectOptions,
  signal: AbortSignal,
): Promise<string[]> {
  let addresses: string[];
  if (target.ip) addresses = [target.ip.address];
  else {
    try {
      addresses = await raceAbort(o.resolve(target.hostname), signal);
    } catch (e) {
      if (signal.aborted) throw signal.reason;
      const code = errCode(e);
      const permanent = code === "ENOTFOUND" || code === "ENODATA";
      throw new FetchError("network", `Could not resolve ${target.hostname}`, {
        transient: !permanent,
        detail: code || undefined,
      });
    }
  }
  const verdict = checkAddresses(target.hostname, addresses, o.policy);
  if (!verdict.ok)
    throw new FetchError(
      verdict.refusal.reason === "no_address" ? "network" : "egress_refused",
      verdict.refusal.message,
      { transient: false, detail: verdict.refusal.addressClass },
    );
  return verdict.addresses.map((a) => a.address);
}

async function connectDirect(
  target: TargetUrl,
  addresses: readonly string[],
  o: ConnectOptions,
  signal: AbortSignal,
): Promise<{ socket: net.Socket; address: string }> {
  let last: unknown;
  for (const address of addresses) {
    try {
      return { socket: keepErrorsQuiet(await o.dial(address, target.port, signal)), address };
    } catch (e) {
      if (signal.aborted) throw signal.reason;
      last = e;
    }
  }
  throw new FetchError("network", `Could not connect to ${target.hostname} (${describeSyscall(last)})`, {
    detail: errCode(last) || undefined,
  });
}

async function dialProxy(proxy: ProxyConfig, o: ConnectOptions, signal: AbortSignal): Promise<net.Socket> {
  try {
    return keepErrorsQuiet(await o.dial(proxy.host, proxy.port, signal));
  } catch (e) {
    if (signal.aborted) throw signal.reason;
    // Never name the proxy in a caller-facing message: its address is internal.
    throw new FetchError("proxy_failed", `Could not connect to the proxy (${describeSyscall(e)})`, {
      detail: errCode(e) || undefined,
    });
  }
}

const SOCKS_REPLY = /Socks5 proxy rejected connection - (\w+)/;

function socksFailure(e: unknown, host: string): FetchError {
  // SocksClientError carries the proxy options (password included) in `.options`: only the
  // message text is used here, and the error object itself is never passed on.
  const msg = e instanceof Error ? e.message : "";
  if (msg.includes("Authentication failed"))
    return new FetchError("proxy_failed", "The proxy rejected our credentials", {
      transient: false,
      detail: "socks5 auth failed",
    });
  if (msg.includes("no accepted authentication type"))
    return new FetchError("proxy_failed", "The proxy did not accept our authentication method", {
      transient: false,
      detail: "socks5 no acceptable auth",
    });
  const reply = SOCKS_REPLY.exec(msg)?.[1];
  switch (reply) {
    case "ConnectionRefused":
      return new FetchError(
        "network",
        `Could not connect to ${host} through the proxy (connection refused)`,
        {
          detail: "socks5 reply 5",
        },
      );
    case "HostUnreachable":
    case "NetworkUnreachable":
    case "TTLExpired":
      return new FetchError("network", `Could not connect to ${host} through the proxy (unreachable)`, {
        detail: `socks5 ${reply}`,
      });
    case "NotAllowed":
      return new FetchError("proxy_failed", `The proxy refused to connect to ${host}`, {
        transient: false,
        detail: "socks5 reply 2",
      });
    case undefined:
      return new FetchError("proxy_failed", "The proxy handshake failed", { detail: errCode(e) || "socks5" });
    default:
      return new FetchError("proxy_failed", `The proxy could not connect to ${host}`, {
        detail: `socks5 ${reply}`,
      });
  }
}

async function socksTunnel(
  proxy: ProxyConfig,
  destination: string,
  target: TargetUrl,
  o: ConnectOptions,
  signal: AbortSignal,
): Promise<net.Socket> {
  const raw = await dialProxy(proxy, o, signal);
  const undo = destroyOnAbort(signal, raw);
  try {
    const auth =
      proxy.username !== undefined || proxy.password !== undefined
        ? { userId: proxy.username ?? "", password: proxy.password ?? "" }
        : {};
    const { socket } = await SocksClient.createConnection({
      proxy: { host: proxy.host, port: proxy.port, type: 5, ...auth },
      command: "connect",
      destination: { host: destination, port: target.port },
      existing_socket: raw,
      // Our connect-phase signal governs. The library never clears this timer (it unrefs it), so
      // a long value would pin each finished connection in memory until it fires: keep it short.
      timeout: o.connectTimeoutMs,
    });
    return socket;
  } catch (e) {
    raw.destroy();
    if (signal.aborted) throw signal.reason;
    throw socksFailure(e, target.hostname);
  } finally {
    undo();
  }
}

/** Read the proxy's answer to CONNECT: status line and headers, nothing past them. */
function readConnectResponse(sock: Duplex, signal: AbortSignal): Promise<number> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const done = (err: unknown, status?: number) => {
      sock.off("data", onData);
      sock.off("close", onClose);
      sock.off("error", onClose);
      signal.removeEventListener("abort", onAbort);
      if (err) reject(err);
      else resolve(status!);
    };
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) {
        if (buf.length > 16384) done(new FetchError("proxy_failed", "The proxy sent an invalid answer"));
        return;
      }
      // No pause(): a paused socket stays paused when node:http or TLS attach their listeners.
      // Nothing arrives before we speak on the tunnel, so no byte is lost in between.
      // Nobody may speak on the tunnel before we do: extra bytes mean a confused or hostile proxy.
      if (end + 4 !== buf.length)
        return done(new FetchError("proxy_failed", "The proxy sent an invalid answer"));
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(buf.subarray(0, end).toString("latin1"));
      if (!m) return done(new FetchError("proxy_failed", "The proxy sent an invalid answer"));
      done(null, Number(m[1]));
    };
    const onClose = () =>
      done(new FetchError("proxy_failed", "The proxy closed the connection during the handshake"));
    const onAbort = () => done(signal.reason);
    sock.on("data", onData);
    sock.once("close", onClose);
    sock.once("error", onClose);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

async function httpTunnel(
  proxy: ProxyConfig,
  address: string,
  target: TargetUrl,
  o: ConnectOptions,
  signal: AbortSignal,
): Promise<{ socket: Duplex; layers: Duplex[] }> {
  const raw = await dialProxy(proxy, o, signal);
  const layers: Duplex[] = [raw];
  const undo = destroyOnAbort(signal, raw);
  try {
    let sock: Duplex = raw;
    if (proxy.type === "https") {
      const proxyIsIp = net.isIP(proxy.host) !== 0;
      sock = await startTls(raw, {
        host: proxy.host,
        servername: proxyIsIp ? undefined : proxy.host,
        verify: o.verifySsl,
        ca: o.tlsCa,
        signal,
        failure: (e) =>
          new FetchError("proxy_failed", "The TLS handshake with the proxy failed", {
            detail: errCode(e) || undefined,
          }),
      });
      layers.push(sock);
    }
    const authority = address.includes(":") ? `[${address}]:${target.port}` : `${address}:${target.port}`;
    const lines = [`CONNECT ${authority} HTTP/1.1`, `Host: ${authority}`];
    if (proxy.username !== undefined || proxy.password !== undefined) {
      const token = Buffer.from(`${proxy.username ?? ""}:${proxy.password ?? ""}`, "utf8").toString("base64");
      lines.push(`Proxy-Authorization: Basic ${token}`);
    }
    sock.write(`${lines.join("\r\n")}\r\n\r\n`);
    const status = await readConnectResponse(sock, signal);
    if (status >= 200 && status < 300) return { socket: sock, layers };
    if (status === 407)
      throw new FetchError("proxy_failed", "The proxy rejected our credentials", {
        transient: false,
        detail: "CONNECT 407",
      });
    if (status === 403 || status === 405)
      throw new FetchError("proxy_failed", `The proxy refused to connect to ${target.hostname}`, {
        transient: false,
        detail: `CONNECT ${status}`,
      });
    if (status === 502 || status === 503 || status === 504)
      throw new FetchError("network", `Could not connect to ${target.hostname} through the proxy`, {
        detail: `CONNECT ${status}`,
      });
    throw new FetchError("proxy_failed", "The proxy handshake failed", { detail: `CONNECT ${status}` });
  } catch (e) {
    for (const l of layers) l.destroy();
    if (signal.aborted) throw signal.reason;
    throw e;
  } finally {
    undo();
  }
}

const CERT_ERRORS = /CERT|SELF_SIGNED|UNABLE_TO_|ALTNAME|HOSTNAME|ERR_TLS_CERT/;

function startTls(
  socket: Duplex,
  o: {
    host: string;
    servername: string | undefined;
    verify: boolean;
    ca?: string | string[];
    signal: AbortSignal;
    failure: (e: unknown) => FetchError;
  },
): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    if (o.signal.aborted) return reject(o.signal.reason);
    const t = keepErrorsQuiet(
      tls.connect({
        socket,
        host: o.host, // the name (or IP) the certificate must match
        ...(o.servername ? { servername: o.servername } : {}), // SNI: never an IP (RFC 6066)
        rejectUnauthorized: o.verify,
        ...(o.ca ? { ca: o.ca } : {}),
        ALPNProtocols: ["http/1.1"],
      }),
    );
    const onAbort = () => {
      t.destroy();
      reject(o.signal.reason);
    };
    o.signal.addEventListener("abort", onAbort, { once: true });
    t.once("secureConnect", () => {
      o.signal.removeEventListener("abort", onAbort);
      resolve(t);
    });
    t.once("error", (e) => {
      o.signal.removeEventListener("abort", onAbort);
      t.destroy();
      reject(o.failure(e));
    });
  });
}

function tlsFailure(host: string) {
  return (e: unknown): FetchError => {
    const code = errCode(e);
    if (CERT_ERRORS.test(code))
      return new FetchError("tls", `The TLS certificate of ${host} could not be verified (${code})`, {
        detail: code,
      });
    if (code === "ECONNRESET" || code === "EPIPE")
      return new FetchError("network", `The connection to ${host} was closed during the TLS handshake`, {
        detail: code,
      });
    return new FetchError("tls", `The TLS handshake with ${host} failed`, { detail: code || undefined });
  };
}

/**
 * The addresses a connection for `target` may go to: the URL passes the egress guard, the name is
 * resolved here and every address is checked. Null with socks5h, where the proxy resolves the name
 * (only literals, judged by checkTarget, are ours to check). Throws FetchError; on abort, the
 * signal's reason. Call it for every request: a pooled connection may only be reused when its
 * address is among those this request's own check approved (DNS rebinding).
 */
export async function resolveChecked(
  target: TargetUrl,
  o: ConnectOptions,
  signal: AbortSignal,
): Promise<string[] | null> {
  // The fetcher checked the URL already; checking again here keeps this function safe on its own.
  const refusal =
    checkTarget(target, o.policy) ??
    (o.proxy?.type === "socks5h" ? checkUnresolvedName(target, o.policy) : null);
  if (refusal)
    throw new FetchError("egress_refused", refusal.message, {
      transient: false,
      detail: refusal.addressClass ?? refusal.reason,
    });
  if (o.proxy?.type === "socks5h") return null;
  return checkedAddresses(target, o, signal);
}

/**
 * Open a connection to one of `addresses` (in order; the result of resolveChecked for this
 * target and these options, never anything else). Throws FetchError; on abort, the signal's reason.
 */
export async function connectChecked(
  target: TargetUrl,
  addresses: readonly string[] | null,
  o: ConnectOptions,
  signal: AbortSignal,
): Promise<Connection> {
  const layers: Duplex[] = [];
  let sock: Duplex;
  let address: string | null = null;
  const proxy = o.proxy;
  if (proxy?.type === "socks5h") {
    // The proxy resolves the name; only literals (checked by the caller's checkTarget) are judged.
    sock = await socksTunnel(proxy, target.ip ? target.ip.address : target.hostname, target, o, signal);
    layers.push(sock);
  } else {
    if (!addresses) throw new Error("connectChecked: no checked addresses"); // a bug, never a fallback
    if (!proxy) {
      const direct = await connectDirect(target, addresses, o, signal);
      sock = direct.socket;
      address = direct.address;
      layers.push(sock);
    } else {
      let last: unknown;
      let opened: { socket: Duplex; layers: Duplex[] } | null = null;
      for (const candidate of addresses) {
        try {
          opened =
            proxy.type === "socks5"
              ? await socksTunnel(proxy, candidate, target, o, signal).then((s) => ({
                  socket: s,
                  layers: [s] as Duplex[],
                }))
              : await httpTunnel(proxy, candidate, target, o, signal);
          address = candidate;
          break;
        } catch (e) {
          if (signal.aborted) throw signal.reason;
          last = e;
          // Only an unreachable origin is worth the next address; a proxy problem stays a proxy problem.
          if (!(e instanceof FetchError && e.code === "network")) throw e;
        }
      }
      if (!opened) throw last;
      sock = opened.socket;
      layers.push(...opened.layers);
    }
  }
  if (target.scheme === "https") {
    const undo = destroyOnAbort(signal, ...layers);
    try {
      sock = await startTls(sock, {
        host: target.hostname,
        servername: target.ip ? undefined : target.hostname,
        verify: o.verifySsl,
        ca: o.tlsCa,
        signal,
        failure: tlsFailure(target.hostname),
      });
      layers.push(sock);
    } catch (e) {
      for (const l of layers) l.destroy();
      throw e;
    } finally {
      undo();
    }
  }
  return {
    socket: sock,
    address,
    layers,
    destroy: () => {
      for (const l of [...layers].reverse()) l.destroy();
    },
  };
}

/**
 * Open the connection for one request to `target` (resolveChecked, then connectChecked).
 * Refusals (egress guard) happen before any socket exists. Throws FetchError; on abort, throws
 * the signal's reason.
 */
export async function openConnection(
  target: TargetUrl,
  o: ConnectOptions,
  signal: AbortSignal,
): Promise<Connection> {
  return connectChecked(target, await resolveChecked(target, o, signal), o, signal);
}
