import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { SETTINGS_BEGIN, SETTINGS_END, settingsMarkdown, withSettingsTable } from "../../src/config/readme";

const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");

describe("the README's configuration table", () => {
  test("is what `npm run docs:config` writes from SETTINGS (run it after changing a setting)", () => {
    const between = readme.slice(
      readme.indexOf(SETTINGS_BEGIN) + SETTINGS_BEGIN.length + 1,
      readme.indexOf(SETTINGS_END),
    );
    expect(readme).toContain(SETTINGS_BEGIN);
    expect(between).toBe(`${settingsMarkdown()}\n`);
    expect(withSettingsTable(readme)).toBe(readme);
  });

  test("has one row per setting, and names the ones accepted with no effect below it", () => {
    const md = settingsMarkdown();
    expect(md).toContain("| `FETCHER__CONNECT_TIMEOUT` | `10` | Seconds to establish a connection. |");
    expect(md).toContain("| `DATABASE__DATABASE_URL` | `file:$STORAGE__BASE_PATH/proxytorrent.db` |");
    expect(md).not.toContain("| `DEBUG` |");
    expect(md).toMatch(/Accepted for compatibility with no effect: `DEBUG`, `TORRENT__ENCRYPTION_ENABLED`,/);
    expect(md).toContain("`CACHE__REDIS_URL`");
  });
});
