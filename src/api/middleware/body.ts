/**
 * Request bodies: one size limit for every route, and a clear answer when a JSON route gets
 * something else.
 *
 * The limit is hono's bodyLimit: a declared Content-Length over the limit is refused before a byte is
 * read, and a body without one (chunked) is counted while it is read and refused as soon as it
 * passes the limit, so no route (nor the signature check, which hashes the body) ever holds more
 * than the limit in memory.
 */
import type { MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";

export function requestBodyLimit(maxBytes: number): MiddlewareHandler {
  const limit = bodyLimit({
    maxSize: maxBytes,
    onError: (c) =>
      c.json(
        { detail: `Request body is larger than the limit of ${maxBytes} bytes (SECURITY__MAX_BODY_BYTES)` },
        413,
      ),
  });
  // No GET or HEAD route reads a body, and a GET Request cannot be rebuilt with the counted one.
  return (c, next) => (c.req.method === "GET" || c.req.method === "HEAD" ? next() : limit(c, next));
}

const JSON_MEDIA_TYPE = /^application\/([\w.-]+\+)?json$/i;

/**
 * 415 for a body that is not declared JSON. Without it, hono's validator silently validates `{}`,
 * and a `curl -d` (form-encoded) caller reads "url is required". A request with no body at all is
 * let through: the schema then names the missing fields, or applies its defaults.
 */
export const jsonBody: MiddlewareHandler = async (c, next) => {
  const type = c.req.header("content-type");
  const media = (type ?? "").split(";")[0]!.trim();
  const declared = c.req.header("content-length");
  const hasBody = declared !== undefined ? Number(declared) > 0 : c.req.raw.body !== null;
  if ((hasBody || type) && !JSON_MEDIA_TYPE.test(media)) {
    return c.json(
      {
        detail: `Send the request body as JSON with Content-Type: application/json (got ${
          type ? JSON.stringify(media.slice(0, 100)) : "no Content-Type"
        })`,
      },
      415,
    );
  }
  return next();
};
