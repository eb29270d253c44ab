/**
 * One exchange of a fetch: connect (or reuse an idle connection to an address this request's
 * check approved), send, and return the response head with the connection's lease.
 */
import type { IncomingMessage } from "node:http";
import type { TargetUrl } from "../../../src/egress";
import { FetchError } from "./errors";
import { requestHeaders } from "./headers";
import { type KeepAlivePool, type PooledConnection, StaleConnection } from "./keepalive";
import type { FetchRun } from "./run";

/** What goes out on each hop; redirects rewrite it. */
export interface Hop {
  target: TargetUrl;
  method: string;
  headers: Record<string, string>;
  body: string | null;
}

/** A response head and its connection; whoever holds it settles `conn` (keep or destroy). */
export interface Exchange {
  res: IncomingMessage;
  conn: PooledConnection;
}

export type Send = (run: FetchRun, hop: Hop, extra?: Record<string, string>) => Promise<Exchange>;

/**
 * A reused connection that the server had closed, failing before any byte of the answer, is
 * retried once on a fresh connection. Every other failure becomes a FetchError (or the run's
 * abort reason).
 */
export function createSend(pool: KeepAlivePool, userAgent: string): Send {
  return async (run, { target, method, headers, body }, extra) => {
    const req = {
      method,
      path: target.url.pathname + target.url.search,
      headers: requestHeaders(headers, {
        host: target.url.host,
        userAgent,
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
  };
}
