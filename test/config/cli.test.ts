/**
 * What the real command line says about the configuration: `proxytorrent config` masks secrets
 * inside URLs, misspelled settings are reported (in `config` and in the service's log), and a
 * database that cannot be used is named with its cause by every command that opens it.
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { join } from "node:path";
import { startHranaServer } from "../../seeder/dev/hrana/server";
import { freePort, tmpDir } from "../support/clients";
import { runToEnd } from "../support/run";
import { CLI, ROOT, Service } from "../support/service";

setDefaultTimeout(60_000);

const services: Service[] = [];
afterAll(async () => {
  for (const s of services) await s.stop();
});

async function cli(args: string[], env: Record<string, string>) {
  const { stdout, stderr, code } = await runToEnd([CLI, ...args], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: process.env.HOME ?? "/tmp",
      STORAGE__BASE_PATH: await tmpDir("pt-cli-config-"),
      HOST: "127.0.0.1",
      PORT: String(await freePort()),
      TORRENT__LISTEN_PORT: String(await freePort()),
      ...env,
    },
  });
  return { stdout, stderr, code, all: stdout + stderr };
}

describe("proxytorrent config", () => {
  test("masks the password of PROXY__PROXY_URL and the credentials of DATABASE__DATABASE_URL, keeping the rest", async () => {
    const r = await cli(["config"], {
      PROXY__PROXY_URL: "socks5h://alice:s3cret-proxy@127.0.0.1:1080",
      DATABASE__DATABASE_URL: "http://bob:s3cret-db@127.0.0.1:9/?authToken=s3cret-token",
    });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("PROXY__PROXY_URL=socks5h://alice:***@127.0.0.1:1080");
    expect(r.stdout).toContain("DATABASE__DATABASE_URL=http://bob:***@127.0.0.1:9/?authToken=***");
    expect(r.all).not.toContain("s3cret");
  });

  test("warns about a misspelled setting with the closest known name", async () => {
    const r = await cli(["config"], { SECURITY__AUTH_ENABLE: "false", STORAGE__CONTENT_PATH: "./x" });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(
      "unknown setting SECURITY__AUTH_ENABLE is ignored; did you mean SECURITY__AUTH_ENABLED?",
    );
    // a name of the original that is accepted on purpose is not reported
    expect(r.stderr).not.toContain("STORAGE__CONTENT_PATH");
  });
});

describe("unknown settings at start-up", () => {
  test("`serve` logs the misspelled setting and the name it probably meant", async () => {
    const s = await Service.start({ env: { SECURITY__AUTH_ENABLE: "false" } });
    services.push(s);
    expect(s.output).toContain(
      "unknown setting SECURITY__AUTH_ENABLE is ignored; did you mean SECURITY__AUTH_ENABLED?",
    );
    // and auth stays on, as the warning says
    expect((await fetch(`${s.url}/v1/requests/x`)).status).toBe(401);
  });
});

describe("a database that cannot be used", () => {
  test("serve, api, seeder and migrate name the URL (without its password) and say the connection was refused", async () => {
    // a loopback port nobody listens on
    const url = `http://alice:s3cret@127.0.0.1:${await freePort()}/`;
    for (const command of ["serve", "api", "seeder", "migrate"]) {
      const r = await cli([command], {
        DATABASE__DATABASE_URL: url,
        NODE__HTTP_PORT: String(await freePort()),
      });
      expect({ command, code: r.code }).toEqual({ command, code: 1 });
      expect(r.all).toContain(`DATABASE__DATABASE_URL=${url.replace("s3cret", "***")}`);
      expect(r.all).toContain("connection refused");
      expect(r.all).not.toContain("Failed query");
      expect(r.all).not.toContain("s3cret");
      // one line, not a stack trace (besides the start-up line naming the library patches)
      const lines = r.all.trim().split("\n");
      expect(lines.filter((l) => !l.startsWith("{") || JSON.parse(l).msg !== "library patches")).toHaveLength(
        1,
      );
    }
  });

  test("a wrong DATABASE__AUTH_TOKEN is reported as an authentication failure", async () => {
    const db = await startHranaServer({
      file: join(await tmpDir("pt-cli-auth-"), "x.db"),
      port: 0,
      authToken: "right-token",
    });
    try {
      const r = await cli(["migrate"], {
        DATABASE__DATABASE_URL: db.url,
        DATABASE__AUTH_TOKEN: "wrong-token",
      });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`DATABASE__DATABASE_URL=${db.url}`);
      expect(r.stderr).toContain("authentication failed (check DATABASE__AUTH_TOKEN)");
      const ok = await cli(["migrate"], {
        DATABASE__DATABASE_URL: db.url,
        DATABASE__AUTH_TOKEN: "right-token",
      });
      expect(ok.code).toBe(0);
    } finally {
      await db.stop();
    }
  });

  test("a postgres:// URL is a configuration error naming DATABASE__DATABASE_URL", async () => {
    for (const command of ["serve", "migrate"]) {
      const r = await cli([command], { DATABASE__DATABASE_URL: "postgres://u:p@127.0.0.1:5432/db" });
      expect(r.code).toBe(2);
      expect(r.stderr).toContain("DATABASE__DATABASE_URL: unsupported scheme postgres:");
    }
  });
});
