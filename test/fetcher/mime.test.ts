/** The Content-Type whitelist as a table (pure function, no network). */
import { describe, expect, test } from "bun:test";
import { isMimeAllowed } from "../../seeder/node/fetcher";
import { DEFAULT_MIME_WHITELIST } from "../../src/config";

describe("isMimeAllowed", () => {
  const CASES: [string | undefined, string[], boolean][] = [
    ["text/html", DEFAULT_MIME_WHITELIST, true],
    ["Text/HTML; charset=UTF-8", DEFAULT_MIME_WHITELIST, true],
    ["application/json", DEFAULT_MIME_WHITELIST, true],
    ["image/png", DEFAULT_MIME_WHITELIST, true],
    ["image/svg+xml", DEFAULT_MIME_WHITELIST, true],
    ["imagex/png", DEFAULT_MIME_WHITELIST, false], // the original matched the prefix "image" without the slash
    ["image", DEFAULT_MIME_WHITELIST, false],
    ["application/octet-stream", DEFAULT_MIME_WHITELIST, false],
    ["text/htmlx", DEFAULT_MIME_WHITELIST, false],
    ["", DEFAULT_MIME_WHITELIST, false],
    [undefined, DEFAULT_MIME_WHITELIST, false],
    ["; charset=utf-8", DEFAULT_MIME_WHITELIST, false],
    [undefined, ["*/*"], true],
    ["anything/at-all", ["text/plain", "*/*"], true],
    ["video/mp4", ["VIDEO/*"], true],
    ["audio/mp4", ["video/*"], false],
  ];
  test.each(CASES.map(([type, list, allowed]) => ({ type: type ?? null, list, allowed })))(
    "given Content-Type $type and whitelist $list, allowed is $allowed",
    ({ type, list, allowed }) => {
      expect(isMimeAllowed(type ?? undefined, list)).toBe(allowed);
    },
  );
});
