/**
 * One HTTP/1.1 request over a connection we opened ourselves, using node:http's parser.
 *
 * node:http is given the socket through an Agent whose `createConnection` returns it. Under Bun
 * this is the form that is honoured (test/fetcher/transport.test.ts pins it). Bun 1.4.5 ignored
 * a `createConnection` passed in the request options and resolved and dialled `host:port` itself;
 * with the Agent form, an strace in an isolated network namespace showed no lookup of `host`.
 * As a fail-closed backstop, host/port handed to node:http are a dead loopback address: if a
 * runtime ever ignored the agent, the request would go nowhere instead of going direct.
 */
import http from "node:http";
import type { Duplex } from "node:stream";

/** Where node:http would connect if it ever bypassed our socket: loopback, a closed port. */
export const UNREACHABLE_HOST = "127.0.0.1";
export const UNREACHABLE_PORT = 9;

class OneSocketAgent extends http.Agent {
  constructor(private readonly socket: Duplex) {
    super({ keepAlive: false, maxSockets: 1 });
  }
  override createConnection(): Duplex {
    return this.socket;
  }
}

export interface OutgoingRequest {
  method: string;
  /** Origin-form request target: path and query. */
  path: string;
  headers: Record<string, string>;
  body: string | null;
}

/**
 * Write the request and wait for the response head. Rejects with the socket's error, or with
 * the signal's reason when it fires (the request and its socket are destroyed). The socket is
 * used for this one request (no keep-alive); the caller destroys it when done.
 */
export function exchange(
  socket: Duplex,
  req: OutgoingRequest,
  signal: AbortSignal,
): Promise<http.IncomingMessage> {
  return exchangeWith(new OneSocketAgent(socket), {}, req, signal, () => socket.destroy());
}

/**
 * The request/response mechanics shared by the one-socket form above and the connection pool
 * (keepalive.ts): `agent` supplies the socket, `options` travel to it (the pool's key), `destroy`
 * tears the connection down on abort, `started` sees the request object as soon as it exists.
 */
export function exchangeWith(
  agent: http.Agent,
  options: Record<string, unknown>,
  req: OutgoingRequest,
  signal: AbortSignal,
  destroy: () => void,
  started?: (r: http.ClientRequest) => void,
): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    let r: http.ClientRequest;
    try {
      r = http.request({
        ...options,
        host: UNREACHABLE_HOST,
        port: UNREACHABLE_PORT,
        method: req.method,
        path: req.path,
        headers: req.headers,
        agent,
        setHost: false,
      });
    } catch (e) {
      return reject(e);
    }
    started?.(r);
    let settled = false;
    const onAbort = () => {
      r.destroy(signal.reason as Error);
      destroy();
      if (!settled) {
        settled = true;
        reject(signal.reason);
      }
    };
    signal.addEventListener("abort", onAbort, { once: true });
    // Keep a listener for the request's whole life: a reset after the head arrived surfaces on
    // the response stream, and must not become an unhandled 'error' here.
    r.on("error", (e) => {
      if (!settled) {
        settled = true;
        signal.removeEventListener("abort", onAbort);
        reject(e);
      }
    });
    r.once("response", (res) => {
      settled = true;
      // The body phase installs its own abort handling; ours must not linger on a long-lived signal.
      signal.removeEventListener("abort", onAbort);
      resolve(res);
    });
    r.end(req.body ?? undefined);
  });
}
