import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { Logger } from "../log";

/** The one typed HTTP error of the API, rendered as the original's `{"detail": …}` envelope. */
export class ApiError extends Error {
  constructor(
    readonly status: ContentfulStatusCode,
    readonly detail: unknown,
    readonly headers: Record<string, string> = {},
  ) {
    super(typeof detail === "string" ? detail : "API error");
  }
}

export const notFound = (id: string) => new ApiError(404, `Request ${id} not found`);

export function renderError(err: Error, c: Context, log: Logger): Response {
  if (err instanceof ApiError) {
    for (const [k, v] of Object.entries(err.headers)) c.header(k, v);
    return c.json({ detail: err.detail }, err.status);
  }
  if (err instanceof HTTPException) {
    // Hono's JSON validator throws 400 "Malformed JSON": the original (FastAPI) answered 422.
    if (err.status === 400 && /malformed json/i.test(err.message)) {
      return c.json(
        {
          detail: [
            { type: "json_invalid", loc: ["body"], msg: "Request body is not valid JSON", input: null },
          ],
        },
        422,
      );
    }
    return c.json({ detail: err.message || "Request failed" }, err.status);
  }
  log.error("unhandled error", { err: err.message, stack: err.stack, path: c.req.path });
  return c.json({ detail: "Internal server error" }, 500);
}
