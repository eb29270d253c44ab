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
    if (json) write(JSON.stringify(rec));
    else {
      const extra = Object.entries({ ...context, ...fields })
        .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
        .join(" ");
      write(`${rec.time} ${level.padEnd(7)} ${msg}${extra ? ` ${extra}` : ""}`);
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
