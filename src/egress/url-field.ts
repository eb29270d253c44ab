/**
 * The http(s) URL fields of the wire schemas (a request's `url`, webhook URLs): the syntax
 * checks valibot can make. Whether the destination may be reached is the egress policy's call
 * (targetUrlRefusal at create time, the full check when the URL is used).
 */
import * as v from "valibot";

export interface HttpUrlField {
  /** Messages for: not a string, longer than 2083 characters, not a URL, not http(s). */
  messages: { type: string; tooLong: string; invalid: string; scheme: string };
  /** A further problem with the parsed URL (the message), or null. */
  problem?: (u: URL) => string | null;
  /** Drop `#fragment` (it is never sent anyway). */
  dropFragment?: boolean;
}

/** A trimmed http(s) URL of at most 2083 characters, normalised by the WHATWG parser. */
export function httpUrlField(o: HttpUrlField) {
  const { messages: m } = o;
  return v.pipe(
    v.string(m.type),
    v.trim(),
    v.maxLength(2083, m.tooLong),
    v.rawTransform(({ dataset, addIssue, NEVER }) => {
      let u: URL;
      try {
        u = new URL(dataset.value);
      } catch {
        addIssue({ message: m.invalid });
        return NEVER;
      }
      if (u.protocol !== "http:" && u.protocol !== "https:") {
        addIssue({ message: m.scheme });
        return NEVER;
      }
      const problem = o.problem?.(u);
      if (problem) {
        addIssue({ message: problem });
        return NEVER;
      }
      if (o.dropFragment) u.hash = "";
      return u.href;
    }),
    v.metadata({ format: "uri" }),
  );
}
