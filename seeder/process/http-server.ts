/**
 * What every `Bun.serve` of the service shares, whatever it serves (API, tracker, web seed, metrics):
 *
 * - production mode set here, not left to NODE_ENV: in development mode Bun answers an uncaught
 *   error with its error page, which shows source lines and absolute paths to anyone;
 * - an `error` handler of our own, so no route ever answers with a Bun page (a short JSON 500);
 * - a request whose URL cannot be parsed (no Host, or an invalid one: `curl --http1.0 -H 'Host:'`)
 *   is 400 before any handler runs `new URL(req.url)` on it;
 * - the body limit (SECURITY__MAX_BODY_BYTES): a declared Content-Length over it is 413 at once on
 *   every port. The API also counts chunked bodies while reading (src/api/middleware/body.ts); the
 *   node's routes never read a body. Bun's own `maxRequestBodySize` is a backstop at twice the
 *   limit, so callers normally get our JSON 413 rather than Bun's empty one.
 */
import type { Server } from "bun";
import type { Config } from "../../src/config";
import type { Logger } from "../../src/log";

type Handler = (req: Request, server: Server<unknown>) => Response | Promise<Response>;

const json = (status: number, detail: string) =>
  new Response(JSON.stringify({ detail }), { status, headers: { "content-type": "application/json" } });

export function serveOptions(config: Config, log: Logger) {
  return {
    development: false,
    maxRequestBodySize: config.security.maxBodyBytes * 2,
    error(err: Error): Response {
      log.error("unhandled error in HTTP handler", { err: err.message, stack: err.stack });
      return json(500, "Internal server error");
    },
  } as const;
}

/** `handler` behind the Host and Content-Length checks above. */
export function guarded(config: Config, handler: Handler): Handler {
  const limit = config.security.maxBodyBytes;
  return (req, server) => {
    if (!URL.canParse(req.url)) return json(400, "Missing or invalid Host header");
    const declared = Number(req.headers.get("content-length") ?? 0);
    if (declared > limit)
      return json(413, `Request body is larger than the limit of ${limit} bytes (SECURITY__MAX_BODY_BYTES)`);
    return handler(req, server);
  };
}
