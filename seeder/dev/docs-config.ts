/** `npm run docs:config`: rewrite the README's configuration table from SETTINGS (src/config). */
import { readFileSync, writeFileSync } from "node:fs";
import { withSettingsTable } from "../../src/config/readme";

const path = new URL("../../README.md", import.meta.url);
const before = readFileSync(path, "utf8");
const after = withSettingsTable(before);
if (after === before) console.log("README.md: the configuration table is up to date");
else {
  writeFileSync(path, after);
  console.log("README.md: configuration table rewritten from SETTINGS");
}
