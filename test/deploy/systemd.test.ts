/**
 * The systemd unit shipped for seeder nodes (docs/proxytorrent-node.service, shown in the README):
 * systemd's own checker accepts it without a word, and it runs sandboxed as its own user.
 * `systemd-analyze` comes from Debian's `systemd` package (.ci/run installs it).
 */
import { describe, expect, test } from "bun:test";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { tmpDir } from "../support/clients";
import { runToEnd } from "../support/run";
import { ROOT } from "../support/service";

const UNIT = join(ROOT, "docs", "proxytorrent-node.service");

describe("systemd unit of a seeder node", () => {
  test("systemd-analyze verify accepts it with no warning (with the install path pointed at this checkout)", async () => {
    const analyze = Bun.which("systemd-analyze");
    if (!analyze) throw new Error("systemd-analyze is missing: apt-get install systemd (.ci/run does)");
    const dir = await tmpDir("pt-systemd-");
    // verify checks that ExecStart exists: point /opt/proxytorrent at this checkout.
    const unit = (await readFile(UNIT, "utf8")).replaceAll("/opt/proxytorrent", ROOT);
    await writeFile(join(dir, "proxytorrent-seeder.service"), unit);
    const {
      stdout: out,
      stderr: err,
      code,
    } = await runToEnd([analyze, "verify", "./proxytorrent-seeder.service"], {
      cwd: dir,
    });
    // Unknown or misplaced keys are only warnings (exit 0): any output fails the test.
    expect({ code, output: out + err }).toEqual({ code: 0, output: "" });
  });

  test("it runs as its own user, waits for the network it orders itself after, and is sandboxed", async () => {
    const unit = await readFile(UNIT, "utf8");
    const keys = new Map<string, string[]>();
    for (const line of unit.split("\n")) {
      const m = /^([A-Za-z]+)=(.*)$/.exec(line);
      if (m) keys.set(m[1]!, [...(keys.get(m[1]!) ?? []), m[2]!]);
    }
    const one = (k: string) => keys.get(k)?.at(-1);
    expect(one("User")).toBe("proxytorrent");
    expect(one("Wants")).toBe("network-online.target");
    expect(one("After")).toBe("network-online.target");
    expect(one("NoNewPrivileges")).toBe("yes");
    expect(one("ProtectSystem")).toBe("strict");
    expect(one("ProtectHome")).toBe("yes");
    expect(one("PrivateTmp")).toBe("yes");
    expect(one("ReadWritePaths")).toBe("/var/lib/proxytorrent");
    expect(keys.get("Environment")).toContain("STORAGE__BASE_PATH=/var/lib/proxytorrent");
  });

  test("the README shows the same unit, line for line", async () => {
    const readme = await readFile(join(ROOT, "README.md"), "utf8");
    const unit = (await readFile(UNIT, "utf8")).trimEnd();
    const shown = readme
      .split("\n")
      .map((l) => l.replace(/^ {3}/, ""))
      .join("\n");
    expect(shown).toContain(unit);
  });
});
