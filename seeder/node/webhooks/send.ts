/**
 * One webhook POST, through the same gate as every fetch (seeder/node/fetcher/connect.ts): parse,
 * egress guard on the name, resolve here, guard on every address, connect to exactly a checked
 * address (or through the configured proxy, never around it), TLS with verification. A refused
 * destination is refused before any socket exists. Redirects are not followed: a 3xx is a failed
 * attempt, as the Standard Webhooks spec advises.
 */
import type { Config } from "../../../src/config";
import { EgressRefusedError, parseAndCheckTarget } from "../../../src/egress";
import { webhookEgressPolicy } from "../../../src/webhooks/destination";
import { type Dial, defaultDial, defaultResolve, openConnection, type Resolve } from "../fetcher/connect";
import { FetchError } from "../fetcher/errors";
import { exchange } from "../fetcher/exchange";

export interface SendOptions {
  config: Config;
  /** Tests route names and addresses here; the guard still judges what the resolver answers. */
  resolve?: Resolve;
  dial?: Dial;
  /** Trust anchors for https receivers (replaces the system roots). */
  tlsCa?: string | string[];
}

export interface SendResult {
  /** The receiver's status code; null when no answer arrived. */
  statusCode: number | null;
  retryAfter: string | null;
  /** Why the attempt failed without an answer (caller-safe: names the host, never an address). */
  error: string | null;
  /** True when trying again cannot help (the egress guard refused the destination). */
  permanent: boolean;
}

export type Sender = (
  url: string,
  headers: Record<string, string>,
  body: string,
  signal?: AbortSignal,
) => Promise<SendResult>;

export function createSender(o: SendOptions): Sender {
  const { config } = o;
  const policy = webhookEgressPolicy(config);
  const timeoutMs = config.webhook.timeoutMs;
  const connectOptions = {
    policy,
    proxy: config.proxy,
    // Always verified: FETCHER__VERIFY_SSL is about origins, and a signed event must not go to an impostor.
    verifySsl: true,
    tlsCa: o.tlsCa,
    dial: o.dial ?? defaultDial,
    resolve: o.resolve ?? defaultResolve,
    connectTimeoutMs: Math.min(timeoutMs, config.fetcher.connectTimeoutMs),
  };
  const userAgent = `${config.appName}-Webhooks/${config.appVersion}`;

  return async (url, headers, body, outer) => {
    let target: ReturnType<typeof parseAndCheckTarget>;
    try {
      target = parseAndCheckTarget(url, policy);
    } catch (e) {
      if (e instanceof EgressRefusedError)
        return { statusCode: null, retryAfter: null, error: e.message, permanent: true };
      throw e;
    }
    const controller = new AbortController();
    const timedOut = new FetchError(
      "timeout",
      `No answer from ${target.hostname} within ${timeoutMs / 1000} s`,
    );
    const timer = setTimeout(() => controller.abort(timedOut), timeoutMs);
    const onOuter = () => controller.abort(outer?.reason);
    outer?.addEventListener("abort", onOuter, { once: true });
    let conn: Awaited<ReturnType<typeof openConnection>> | null = null;
    try {
      conn = await openConnection(target, connectOptions, controller.signal);
      const res = await exchange(
        conn.socket,
        {
          method: "POST",
          path: target.url.pathname + target.url.search,
          headers: {
            host: target.url.host,
            "user-agent": userAgent,
            "content-type": "application/json",
            "content-length": String(new TextEncoder().encode(body).byteLength),
            connection: "close",
            ...headers,
          },
          body,
        },
        controller.signal,
      );
      const ra = res.headers["retry-after"];
      return {
        statusCode: res.statusCode ?? 0,
        retryAfter: (Array.isArray(ra) ? ra[0] : ra) ?? null,
        error: null,
        permanent: false,
      };
    } catch (e) {
      const reason = controller.signal.aborted ? controller.signal.reason : e;
      if (reason instanceof FetchError)
        return {
          statusCode: null,
          retryAfter: null,
          error: reason.message,
          permanent: reason.code === "egress_refused" || reason.code === "bad_url",
        };
      if (outer?.aborted) throw outer.reason;
      return {
        statusCode: null,
        retryAfter: null,
        error: `The connection to ${target.hostname} failed before it answered`,
        permanent: false,
      };
    } finally {
      clearTimeout(timer);
      outer?.removeEventListener("abort", onOuter);
      // Only the status matters; the body is not read.
      conn?.destroy();
    }
  };
}
