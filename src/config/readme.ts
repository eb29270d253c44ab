/**
 * The README's configuration table, written from SETTINGS so the two cannot drift:
 * `npm run docs:config` puts it between the markers, test/config/readme.test.ts fails when the
 * README holds anything else there.
 */
import { IGNORED_ORIGINAL_SETTINGS, SETTINGS } from "./index";

export const SETTINGS_BEGIN =
  "<!-- settings:begin: written by `npm run docs:config` from SETTINGS in src/config/index.ts; edit there -->";
export const SETTINGS_END = "<!-- settings:end -->";

/** The table (one row per setting) and the list of names accepted with no effect, in Markdown. */
export function settingsMarkdown(): string {
  const entries = Object.entries(SETTINGS);
  const rows = entries
    .filter(([, s]) => !s.compat)
    .map(([name, s]) => `| \`${name}\` | ${shownDefault(s)} | ${s.doc.replaceAll("|", "\\|")} |`);
  const ignored = [
    ...entries.filter(([, s]) => s.compat).map(([name]) => name),
    ...IGNORED_ORIGINAL_SETTINGS,
  ];
  const compat = `Accepted for compatibility with no effect: ${ignored.map((n) => `\`${n}\``).join(", ")} (everything lives under \`STORAGE__BASE_PATH\`).`;
  return ["| Variable | Default | Meaning |", "|---|---|---|", ...rows, "", ...wrap(compat, 100)].join("\n");
}

/** `readme` with the text between the markers replaced by settingsMarkdown(). */
export function withSettingsTable(readme: string): string {
  const begin = readme.indexOf(SETTINGS_BEGIN);
  const end = readme.indexOf(SETTINGS_END);
  if (begin < 0 || end < begin)
    throw new Error(`README.md needs the markers ${SETTINGS_BEGIN} and ${SETTINGS_END}, in that order`);
  return `${readme.slice(0, begin)}${SETTINGS_BEGIN}\n${settingsMarkdown()}\n${readme.slice(end)}`;
}

function shownDefault(s: { default: unknown; shown?: string }): string {
  if (s.shown) return s.shown;
  const d = s.default;
  if (d === undefined || (Array.isArray(d) && d.length === 0)) return "–";
  return `\`${Array.isArray(d) ? d.join(",") : String(d)}\``;
}

/** Words into lines of at most `width` characters, like the README's hand-written prose. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  return [...lines, line];
}
