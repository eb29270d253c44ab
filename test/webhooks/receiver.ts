/**
 * A webhook receiver for tests: Bun.serve on 127.0.0.1 that records every POST (headers and raw
 * body) and answers from a script: a status (with headers), or "hold" (keep the request open until
 * the sender goes away). When the script runs out it answers 204.
 */
import type { Server } from "bun";

export interface Received {
  path: string;
  headers: Record<string, string>;
  body: string;
}

export type Answer = number | { status: number; headers?: Record<string, string> } | "hold";

export interface Receiver {
  readonly url: string;
  readonly port: number;
  readonly received: Received[];
  /** Held requests whose sender went away (connection closed). */
  readonly released: number;
  /** Answers for the next requests, in order. */
  script(...answers: Answer[]): void;
  /** Resolves when `n` requests have arrived. */
  waitFor(n: number, timeoutMs?: number): Promise<Received[]>;
  close(): Promise<void>;
}

/** Poll `pred` until it holds (or fail after `timeoutMs` with `what`). */
export async function until(pred: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(20);
  }
}

export async function startReceiver(path = "/hook"): Promise<Receiver> {
  const received: Received[] = [];
  const answers: Answer[] = [];
  let released = 0;
  const server: Server<unknown> = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeout: 0,
    async fetch(req) {
      const headers: Record<string, string> = {};
      req.headers.forEach((v, k) => {
        headers[k] = v;
      });
      received.push({ path: new URL(req.url).pathname, headers, body: await req.text() });
      const a = answers.shift() ?? 204;
      if (a === "hold") {
        await new Promise<void>((resolve) => {
          if (req.signal.aborted) return resolve();
          req.signal.addEventListener("abort", () => resolve(), { once: true });
        });
        released++;
        return new Response(null, { status: 500 });
      }
      const { status, headers: h } = typeof a === "number" ? { status: a, headers: {} } : a;
      return new Response(status === 204 ? null : "ok", { status, headers: h });
    },
  });
  const port = server.port!;
  return {
    url: `http://127.0.0.1:${port}${path}`,
    port,
    received,
    get released() {
      return released;
    },
    script: (...a) => {
      answers.push(...a);
    },
    async waitFor(n, timeoutMs = 60_000) {
      await until(() => received.length >= n, `${n} webhook requests (got ${received.length})`, timeoutMs);
      return received.slice();
    },
    close: async () => {
      server.stop(true);
    },
  };
}
