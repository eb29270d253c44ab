/** Pieces every v1 router uses: OpenAPI response descriptions and the 422 shapes of validation. */
import { resolver } from "hono-openapi";
import type * as v from "valibot";
import { ApiError, boundedInput, type InputPlace, validationDetail } from "../errors";
import { errorResponse } from "../schemas";

/** An OpenAPI JSON body described by a valibot schema. */
export const json = (schema: v.GenericSchema) => ({ "application/json": { schema: resolver(schema) } });

/** An OpenAPI error response (`{"detail": …}`). */
export const err = (description: string) => ({ description, content: json(errorResponse) });

/** A 422 naming one body (or query) field, in the same shape as validation errors. */
export function fieldError(field: string, msg: string, input: unknown, place: InputPlace = "body"): ApiError {
  return new ApiError(422, [{ type: "value_error", loc: [place, field], msg, input: boundedInput(input) }]);
}

/** The validator hook's answer to invalid input: 422 with the issues; undefined when valid. */
export const invalid = (
  result: { success: boolean; error?: unknown },
  c: { json: (b: unknown, s: 422) => Response },
  place: InputPlace = "body",
) =>
  result.success
    ? undefined
    : c.json({ detail: validationDetail(result.error as readonly v.BaseIssue<unknown>[], place) }, 422);
