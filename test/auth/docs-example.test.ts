/**
 * The curl + openssl example in docs/auth.md really works: the shell function is taken from the
 * document and run (under dash and bash) against the API on a loopback port.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { createApp } from "../../src/api/app";
import { createApiKey } from "../../src/auth/keys";
import { systemClock } from "../../src/clock";
import { silentLogger } from "../../src/log";
import { tempDatabase } from "../support/db";
import { runToEnd } from "../support/run";

// bun 1.4 ignores bunfig.toml's [test] timeout; each test spawns a shell, openssl and curl several times.
setDefaultTimeout(60_000);

let server: ReturnType<typeof Bun.serve>;
let script: string;
let key: string;
let close: () => void;

beforeAll(async () => {
  const doc = await readFile(resolve(import.meta.dir, "../../docs/auth.md"), "utf8");
  const block = /<!-- test: signed-curl[^>]*-->\s*```sh\n([\s\S]*?)```/.exec(doc);
  if (!block) throw new Error("docs/auth.md lost its signed-curl example");
  const t = await tempDatabase();
  script = join(t.dir, "pt_signed.sh");
  await writeFile(script, block[1]!);
  key = (await createApiKey(t.db, { name: "docs", now: Date.now() })).key;
  const app = createApp({
    db: t.db,
    config: t.config,
    clock: systemClock,
    log: silentLogger,
    runtime: "bun",
    startedAt: Date.now(),
    clientIp: (req) => server.requestIP(req)?.address ?? null,
  });
  server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (req) => app.fetch(req) });
  close = () => t.client.close();
});
afterAll(() => {
  server?.stop(true);
  close?.();
});

async function sh(shell: string, command: string, extra: Record<string, string> = {}) {
  const { stdout, stderr, code } = await runToEnd([shell, "-c", `. "${script}"; ${command}`], {
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      PT_URL: `http://127.0.0.1:${server.port}`,
      PT_KEY: key,
      ...extra,
    },
  });
  expect(stderr).toBe("");
  expect(code).toBe(0);
  return stdout;
}

describe.each(["sh", "bash"])("pt_signed under %s", (shell) => {
  test("creates, reads (with a query), and cancels a request", async () => {
    const created = JSON.parse(
      await sh(shell, 'pt_signed POST /v1/requests "$BODY"', { BODY: '{"url":"https://www.example.com/"}' }),
    ) as { id: string; status: string };
    expect(created.status).toBe("queued");
    const status = JSON.parse(await sh(shell, `pt_signed GET /v1/requests/${created.id}`)) as {
      status: string;
    };
    expect(status.status).toBe("queued");
    const withQuery = JSON.parse(await sh(shell, `pt_signed GET '/v1/requests/${created.id}?a=1&b=two'`)) as {
      id: string;
    };
    expect(withQuery.id).toBe(created.id);
    expect(await sh(shell, `pt_signed DELETE /v1/requests/${created.id}`)).toBe("");
    const after = JSON.parse(await sh(shell, `pt_signed GET /v1/requests/${created.id}`)) as {
      status: string;
    };
    expect(after.status).toBe("cancelled");
  });

  test("a wrong key is refused", async () => {
    const wrong = `pt_${"0".repeat(16)}_${"1".repeat(64)}`;
    const out = JSON.parse(await sh(shell, "pt_signed GET /v1/requests/x", { PT_KEY: wrong })) as {
      detail: string;
    };
    expect(out.detail).toBe("Invalid signature: the signature does not verify");
  });
});
