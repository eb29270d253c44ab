/**
 * The Worker entry's own logic (bindings → config → database URL → cached app), exercised in-process;
 * the same module runs under workerd in worker.test.ts.
 */
import { describe, expect, spyOn, test } from "bun:test";
import worker, { buildEdgeApp, EdgeDatabaseUrlError, edgeAppFor, envFromBindings } from "../../edge/worker";
import { ConfigError } from "../../src/config";
import { createLogger, silentLogger } from "../../src/log";

const ctx = { waitUntil() {}, passThroughOnException() {}, props: {} };

describe("database URL on Workers", () => {
  test("given a file: URL, when the app is built, then a clear error says Workers have no file system", () => {
    expect(() =>
      buildEdgeApp({ DATABASE__DATABASE_URL: "file:./data/proxytorrent.db" }, { log: silentLogger }),
    ).toThrow(EdgeDatabaseUrlError);
    expect(() =>
      buildEdgeApp({ DATABASE__DATABASE_URL: "file:./data/proxytorrent.db" }, { log: silentLogger }),
    ).toThrow(/no file system.*npm run dev:edge/s);
  });

  test("given no DATABASE__DATABASE_URL, when the app is built, then the error names the variable and the fix", () => {
    expect(() => buildEdgeApp({}, { log: silentLogger })).toThrow(
      /DATABASE__DATABASE_URL is not set.*wrangler secret put/s,
    );
  });

  test("given a WebSocket URL, when the app is built, then it is refused (the Worker speaks HTTP only)", () => {
    expect(() =>
      buildEdgeApp({ DATABASE__DATABASE_URL: "wss://db.example.test" }, { log: silentLogger }),
    ).toThrow(/HTTP only/);
  });

  test.each(["libsql://db-org.turso.io", "https://db.example.test", "http://127.0.0.1:8080"])(
    "given %s, when the app is built, then it is accepted",
    (url) => {
      const built = buildEdgeApp(
        { DATABASE__DATABASE_URL: url, DATABASE__AUTH_TOKEN: "t" },
        { log: silentLogger },
      );
      expect(built.client.protocol).toBe("http");
      expect(built.config.database.authToken).toBe("t");
      built.client.close();
    },
  );
});

describe("bindings", () => {
  test("given vars of several types and an object binding, when read, then strings pass and objects are ignored", () => {
    expect(envFromBindings({ A__B: "x", C__D: 3, E__F: true, KV: { get() {} } })).toEqual({
      A__B: "x",
      C__D: "3",
      E__F: "true",
    });
  });

  test("given the same bindings twice (even as a new object), when the app is asked for, then it is built once", () => {
    const env = { DATABASE__DATABASE_URL: "http://127.0.0.1:1", SECURITY__BEARER_TOKENS: "a" };
    const first = edgeAppFor(env);
    expect(edgeAppFor(env)).toBe(first);
    expect(edgeAppFor({ ...env })).toBe(first);
    const other = edgeAppFor({ ...env, SECURITY__BEARER_TOKENS: "b" });
    expect(other).not.toBe(first);
    other.client.close();
  });
});

describe("fetch handler", () => {
  test("given a bad setting, when a request arrives, then it is a 500 that reveals no values and the log names the variable", async () => {
    // given
    const errors: string[] = [];
    const spy = spyOn(console, "error").mockImplementation((line: string) => {
      errors.push(line);
    });
    try {
      // when
      const res = await worker.fetch(
        new Request("http://edge.test/v1/health"),
        {
          DATABASE__DATABASE_URL: "https://db.example.test",
          DATABASE__AUTH_TOKEN: "secret-value",
          FETCHER__MAX_SIZE: "lots",
        },
        ctx,
      );
      // then
      expect(res.status).toBe(500);
      const text = await res.text();
      expect(text).not.toContain("secret-value");
      expect(text).not.toContain("db.example.test");
      expect(errors.join("\n")).toContain("FETCHER__MAX_SIZE");
      expect(errors.join("\n")).not.toContain("secret-value");
    } finally {
      spy.mockRestore();
    }
  });

  test("given a configuration error, when it is thrown by loadConfig, then it is a ConfigError naming the variable", () => {
    expect(() => buildEdgeApp({ DATABASE__DATABASE_URL: "https://x.test", PORT: "nope" })).toThrow(
      ConfigError,
    );
  });
});

describe("settings", () => {
  test("given a misspelled setting among the bindings, when the app is built, then the log names it and the closest known name", () => {
    const lines: string[] = [];
    const built = buildEdgeApp(
      { DATABASE__DATABASE_URL: "http://127.0.0.1:1", SECURITY__AUTH_ENABLE: "false" },
      { log: createLogger({ write: (l) => lines.push(l) }) },
    );
    built.client.close();
    expect(lines.join("\n")).toContain(
      "unknown setting SECURITY__AUTH_ENABLE is ignored; did you mean SECURITY__AUTH_ENABLED?",
    );
  });
});
