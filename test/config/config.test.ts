import { describe, expect, test } from "bun:test";
import { ConfigError, loadConfig, parseProxyUrl } from "../../src/config";

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
});
