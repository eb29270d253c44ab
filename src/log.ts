/**
 * Structured logger: JSON lines by default (MONITORING__JSON_LOGS), readable text otherwise.
 * Child loggers carry context (request id, job id) into every line. Runs on Workers and Bun.
 */
export type Level = "DEBUG" | "INFO" | "WARNING" | "ERROR";
const ORDER: Record<Level, number> = { DEBUG: 10, INFO: 20, WARNING: 30, ERROR: 40 };
export type Fields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  child(fields: Fields): Logger;
}

/**
 * Control characters (C0, DEL, C1) and the Unicode line/paragraph separators, written as escapes so
 * that no logged value (a request path decoded from `%0A`, a header echoed in an error, …) can end a
 * line early and forge another one. Line-splitting tools treat U+2028/U+2029 as breaks too.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
const SHORT: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

function escapeControl(s: string): string {
  return s.replace(CONTROL, (c) => SHORT[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

export function createLogger(
  opts: { level?: Level; json?: boolean; write?: (line: string) => void } = {},
  context: Fields = {},
): Logger {
  const min = ORDER[opts.level ?? "INFO"];
  const json = opts.json ?? true;
  const write = opts.write ?? ((line: string) => console.log(line));
  const emit = (level: Level, msg: string, fields?: Fields) => {
    if (ORDER[level] < min) return;
    const rec = { time: new Date().toISOString(), level, msg, ...context, ...fields };
    // JSON.stringify already escapes C0 controls; the rest are valid JSON but escaped anyway.
    if (json) write(escapeControl(JSON.stringify(rec)));
    else {
      const extra = Object.entries({ ...context, ...fields })
        .map(
          ([k, v]) =>
            `${escapeControl(k)}=${escapeControl(typeof v === "string" ? v : String(JSON.stringify(v)))}`,
        )
        .join(" ");
      write(`${rec.time} ${level.padEnd(7)} ${escapeControl(msg)}${extra ? ` ${extra}` : ""}`);
    }
  };
  return {
    debug: (m, f) => emit("DEBUG", m, f),
    info: (m, f) => emit("INFO", m, f),
    warn: (m, f) => emit("WARNING", m, f),
    error: (m, f) => emit("ERROR", m, f),
    child: (fields) => createLogger(opts, { ...context, ...fields }),
  };
}

export const silentLogger: Logger = createLogger({ write: () => {} });
