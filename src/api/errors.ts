import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { BaseIssue } from "valibot";
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

/** Longest string a 422 echoes back in `input`; longer ones are cut (with "…"). */
export const MAX_ECHOED_INPUT = 200;

/**
 * What a 422 may echo of the offending value: numbers, booleans, null and short strings. Objects and
 * arrays become null: echoing them could return megabytes, and a deeply nested one overflows the
 * stack when serialised.
 */
export function boundedInput(input: unknown): unknown {
  if (typeof input === "string")
    return input.length > MAX_ECHOED_INPUT ? `${input.slice(0, MAX_ECHOED_INPUT)}…` : input;
  if (typeof input === "number" || typeof input === "boolean") return input;
  return null;
}

/** "url is required" rather than valibot's `Invalid key: Expected "url" but received undefined`. */
function missingKey(i: BaseIssue<unknown>): string | null {
  if (i.kind !== "schema" || i.type !== "object" || i.received !== "undefined") return null;
  return /^"(.+)"$/.exec(i.expected ?? "")?.[1]?.concat(" is required") ?? null;
}

/** Most issues one 422 lists: a body of 100,000 wrong values must not get 100,000 answers. */
export const MAX_LISTED_ISSUES = 20;

/** Where a validated value came from, first in each issue's `loc` (as FastAPI does). */
export type InputPlace = "body" | "query";

/** Valibot issues → the original's 422 body: `{"detail":[{"type","loc","msg","input"}]}`. */
export function validationDetail(issues: readonly BaseIssue<unknown>[], place: InputPlace = "body") {
  return issues.slice(0, MAX_LISTED_ISSUES).map((i) => ({
    type: i.type,
    loc: [place, ...(i.path?.map((p) => p.key as string | number) ?? [])],
    msg: missingKey(i) ?? i.message,
    input: boundedInput(i.input),
  }));
}

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
