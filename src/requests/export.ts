/**
 * A caller's whole (filtered) history as one streamed download: CSV, NDJSON or a JSON array.
 *
 * Memory stays constant whatever the row count: the stream pulls one keyset page of
 * EXPORT_BATCH requests from the database only when the client has taken the previous one (a
 * ReadableStream's `pull` runs on demand), so at most a batch or two is held at any time. Only
 * web APIs (ReadableStream, TextEncoder): the same code runs on Bun and on the Worker.
 *
 * CSV and its escaping are written here rather than taken from a library: RFC 4180 quoting is a few
 * lines, and the CSV libraries at hand either need Node's stream/Buffer (not on Workers) or bring a
 * parser we do not need.
 */
import type { ListPosition, RequestView } from "./service";

export type ExportFormat = "csv" | "ndjson" | "json";

/** Requests read per database round trip. */
export const EXPORT_BATCH = 500;

export const EXPORT_CONTENT_TYPES: Record<ExportFormat, string> = {
  csv: "text/csv; charset=utf-8; header=present",
  ndjson: "application/x-ndjson",
  json: "application/json",
};

/**
 * One CSV field (RFC 4180): quoted when it holds a quote, comma, CR or LF, with quotes doubled;
 * null is an empty field. A text starting with `=`, `+`, `-`, `@`, tab or CR gets a leading `'`
 * so that a spreadsheet opening the file shows it instead of evaluating it as a formula (CSV
 * injection: a URL or origin error message is chosen by whoever controls the origin).
 */
export function csvField(value: unknown): string {
  if (value === null || value === undefined) return "";
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  // A nested object (the scan verdict) as its JSON, not "[object Object]".
  let s = typeof value === "object" ? JSON.stringify(value) : String(value);
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

const csvLine = (fields: unknown[]) => `${fields.map(csvField).join(",")}\r\n`;

/**
 * The export as a byte stream. `page(after)` returns up to EXPORT_BATCH requests older than
 * `after` (newest first); `body` turns one into what the status route shows, whose keys (in
 * order) are the CSV columns. A failing read ends the stream with an error (the client sees a cut
 * download, never a well-formed file missing rows) after `onError` has logged it.
 */
export function exportStream<B extends Record<string, unknown>>(opts: {
  format: ExportFormat;
  columns: readonly (keyof B & string)[];
  page: (after: ListPosition | undefined) => Promise<RequestView[]>;
  body: (r: RequestView) => B;
  onError: (e: unknown) => void;
}): ReadableStream<Uint8Array> {
  const { format, columns, page, body } = opts;
  const encoder = new TextEncoder();
  let after: ListPosition | undefined;
  let count = 0;
  let started = false;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const rows = await page(after);
        let out = "";
        if (!started) {
          started = true;
          if (format === "csv") out += csvLine([...columns]);
          else if (format === "json") out += "[";
        }
        for (const r of rows) {
          const b = body(r);
          if (format === "csv") out += csvLine(columns.map((c) => b[c]));
          else if (format === "ndjson") out += `${JSON.stringify(b)}\n`;
          else out += `${count ? "," : ""}\n${JSON.stringify(b)}`;
          count++;
        }
        const last = rows.at(-1);
        if (rows.length < EXPORT_BATCH || !last) {
          if (format === "json") out += count ? "\n]\n" : "]\n";
          if (out) controller.enqueue(encoder.encode(out));
          controller.close();
          return;
        }
        after = { createdAt: last.createdAt, id: last.id };
        controller.enqueue(encoder.encode(out));
      } catch (e) {
        opts.onError(e);
        controller.error(e);
      }
    },
  });
}

/** `proxytorrent-requests-2026-11-29.csv`: the UTC date of the download. */
export function exportFilename(format: ExportFormat, now: number): string {
  return `proxytorrent-requests-${new Date(now).toISOString().slice(0, 10)}.${format}`;
}
