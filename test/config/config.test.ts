import { describe, expect, test } from "bun:test";
import { ConfigError, loadConfig, maskUrlSecrets, parseProxyUrl, unknownSettings } from "../../src/config";

function problems(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems.map((p) => p.variable);
    throw e;
  }
  return [];
}

describe("configuration", () => {
  test("defaults are safe: auth on, private torrents, no proxy, private networks refused", () => {
    const c = loadConfig({});
    expect(c.port).toBe(8000);
    expect(c.security.authEnabled).toBe(true);
    expect(c.torrent.private).toBe(true);
    expect(c.proxy).toBeNull();
    expect(c.egress.allowPrivateNetworks).toBe(false);
    expect(c.database.url).toBe("file:./data/proxytorrent.db");
    expect(c.fetcher.mimeWhitelist).toContain("image/*");
    expect(c.node.publicUrl).toBe("http://127.0.0.1:8000");
  });

  test("everything the service writes follows STORAGE__BASE_PATH", () => {
    const c = loadConfig({ STORAGE__BASE_PATH: "/srv/pt/" });
    expect(c.storage.basePath).toBe("/srv/pt");
    expect(c.database.url).toBe("file:/srv/pt/proxytorrent.db");
  });

  test("lists accept JSON arrays and comma-separated values", () => {
    expect(loadConfig({ SECURITY__BEARER_TOKENS: '["a","b"]' }).security.bearerTokens).toEqual(["a", "b"]);
    expect(loadConfig({ SECURITY__BEARER_TOKENS: "a, b ,c" }).security.bearerTokens).toEqual(["a", "b", "c"]);
  });

  test("an empty value means unset (the original crashed on PROXY__PROXY_PORT=)", () => {
    const c = loadConfig({ PROXY__PROXY_PORT: "", PORT: " " });
    expect(c.port).toBe(8000);
    expect(c.proxy).toBeNull();
  });

  test("every bad variable is named in one error", () => {
    expect(problems({ PORT: "eighty", FETCHER__MAX_SIZE: "-1", TORRENT__PIECE_SIZE: "1000" })).toEqual([
      "PORT",
      "FETCHER__MAX_SIZE",
      "TORRENT__PIECE_SIZE",
    ]);
    expect(problems({ SECURITY__AUTH_ENABLED: "maybe" })).toEqual(["SECURITY__AUTH_ENABLED"]);
  });

  test("an enabled proxy without a host refuses to start instead of fetching directly", () => {
    expect(problems({ PROXY__PROXY_ENABLED: "true" })).toEqual(["PROXY__PROXY_HOST", "PROXY__PROXY_PORT"]);
  });

  test("the original's proxy settings and PROXY__PROXY_URL both work", () => {
    const a = loadConfig({
      PROXY__PROXY_ENABLED: "true",
      PROXY__PROXY_HOST: "127.0.0.1",
      PROXY__PROXY_PORT: "1080",
      PROXY__PROXY_USERNAME: "u",
      PROXY__PROXY_PASSWORD: "p",
    });
    expect(a.proxy).toEqual({ type: "socks5", host: "127.0.0.1", port: 1080, username: "u", password: "p" });
    expect(parseProxyUrl("socks5h://al%40ice:p%3Ass@127.0.0.1:9050")).toEqual({
      type: "socks5h",
      host: "127.0.0.1",
      port: 9050,
      username: "al@ice",
      password: "p:ss",
    });
    expect(problems({ PROXY__PROXY_URL: "ftp://x:1" })).toEqual(["PROXY__PROXY_URL"]);
  });

  test("secrets are not echoed in error messages", () => {
    let message = "";
    try {
      loadConfig({ PROXY__PROXY_URL: "ftp://alice:s3cret@127.0.0.1:1" });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toContain("PROXY__PROXY_URL");
    expect(message).not.toContain("s3cret");
    try {
      loadConfig({ TORRENT__ANNOUNCE_URL: "not a url" });
      throw new Error("should have failed");
    } catch (e) {
      expect((e as Error).message).toContain("TORRENT__ANNOUNCE_URL");
    }
  });

  test("URLs are shown with their password and auth token masked, the rest readable", () => {
    expect(maskUrlSecrets("socks5h://alice:s3cret@127.0.0.1:1080")).toBe(
      "socks5h://alice:***@127.0.0.1:1080",
    );
    expect(maskUrlSecrets("libsql://db.example.test?authToken=eyJhbGci&tls=1")).toBe(
      "libsql://db.example.test?authToken=***&tls=1",
    );
    expect(maskUrlSecrets("https://u:p%40ss@db.example.test:8080/x")).toBe(
      "https://u:***@db.example.test:8080/x",
    );
    expect(maskUrlSecrets("file:./data/proxytorrent.db")).toBe("file:./data/proxytorrent.db");
    expect(maskUrlSecrets("socks5://alice@127.0.0.1:1080")).toBe("socks5://alice@127.0.0.1:1080");
  });

  test("a database URL of a scheme libSQL cannot open is a config error naming DATABASE__DATABASE_URL", () => {
    expect(problems({ DATABASE__DATABASE_URL: "postgres://u:p@127.0.0.1/db" })).toEqual([
      "DATABASE__DATABASE_URL",
    ]);
    expect(problems({ DATABASE__DATABASE_URL: "mysql://127.0.0.1/db" })).toEqual(["DATABASE__DATABASE_URL"]);
    for (const ok of [
      "file:/tmp/x.db",
      "libsql://x.example.test",
      "http://127.0.0.1:1",
      "wss://x.example.test",
    ])
      expect(problems({ DATABASE__DATABASE_URL: ok })).toEqual([]);
  });

  test("misspelled settings of our groups are reported with the closest name; others are left alone", () => {
    expect(
      unknownSettings({
        SECURITY__AUTH_ENABLE: "false",
        PROXY__URL: "socks5://127.0.0.1:1",
        SECURITY__NOTHING_LIKE_ANY_SETTING_AT_ALL: "1",
        SECURITY__AUTH_ENABLED: "true",
        PATH: "/usr/bin",
        OTHERAPP__AUTH_ENABLE: "1",
        // the original's names this version ignores on purpose (README, Configuration)
        STORAGE__CONTENT_PATH: "./content",
        CACHE__REDIS_URL: "redis://127.0.0.1",
      }),
    ).toEqual([
      { variable: "SECURITY__AUTH_ENABLE", suggestion: "SECURITY__AUTH_ENABLED" },
      { variable: "PROXY__URL", suggestion: "PROXY__PROXY_URL" },
      { variable: "SECURITY__NOTHING_LIKE_ANY_SETTING_AT_ALL", suggestion: null },
    ]);
  });
});
