/**
 * Log forging: no value that reaches a log line (a request path decoded from %0A, a message, a field)
 * may start a new line, in text mode (MONITORING__JSON_LOGS=false) or JSON mode.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createLogger } from "../../src/log";
import { testApp } from "../support/app";
import { tempDatabase } from "../support/db";

// No reserved characters: Hono decodes the path with decodeURI, which leaves %3A etc. encoded.
const FORGED = "2026-01-01 ERROR   forged line";
let db: Awaited<ReturnType<typeof tempDatabase>>;

beforeAll(async () => {
  db = await tempDatabase({ SECURITY__BEARER_TOKENS: "token-0123456789" });
});
afterAll(() => db.client.close());

/** The lines one request leaves in the log, checked to be one physical line per log call. */
async function linesFor(json: boolean, path: string): Promise<string[]> {
  const lines: string[] = [];
  const app = testApp({
    db: db.db,
    config: db.config,
    log: createLogger({ json, write: (l) => lines.push(l) }),
  });
  await app.request(path);
  // What a file or journal would hold: the writer appends one newline per call.
  const physical = lines.join("\n").split(/\r\n|\r|\n|\u2028|\u2029/);
  expect(physical).toHaveLength(lines.length);
  return physical.filter((l) => l.includes("forged"));
}

const PATH = `/v1/requests/x%0A${encodeURI(FORGED)}%0D%1B[31m%E2%80%A8y`;

describe("given a request whose path decodes to newlines and other control characters", () => {
  test("when logs are text, then it is exactly one line and the characters are escaped", async () => {
    const lines = await linesFor(false, PATH);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`path=/v1/requests/x\\n${FORGED}\\r\\u001b[31m\\u2028y `);
  });

  test("when logs are JSON, then it is one line of valid JSON carrying the exact path", async () => {
    const lines = await linesFor(true, PATH);
    expect(lines).toHaveLength(1);
    const rec = JSON.parse(lines[0]!) as { path: string };
    expect(rec.path).toBe(`/v1/requests/x\n${FORGED}\r\u001b[31m\u2028y`);
  });
});

describe("given a message and field values with control characters", () => {
  test("when logged as text, then each stays on one line", () => {
    const lines: string[] = [];
    const log = createLogger({ json: false, write: (l) => lines.push(l) }).child({ "job\nid": "a\rb" });
    log.warn("first\nsecond", { err: "x\u0085y", obj: { s: "\n" } });
    expect(lines).toHaveLength(1);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
    expect(lines[0]).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/);
    expect(lines[0]).toEndWith('first\\nsecond job\\nid=a\\rb err=x\\u0085y obj={"s":"\\n"}');
  });
});
