/**
 * Helpers for the statements drizzle's builders cannot express (INSERT … SELECT with a condition,
 * a read that must bypass drizzle). Each names its table and columns through the schema, never by
 * string, so renaming a column fails `tsc` instead of a query at run time.
 */

import { type SQL, type SQLWrapper, sql } from "drizzle-orm";
import type { BatchItem } from "drizzle-orm/batch";
import { type AnySQLiteColumn, SQLiteAsyncDialect, type SQLiteTable } from "drizzle-orm/sqlite-core";
import type { Database } from ".";

const dialect = new SQLiteAsyncDialect();

/**
 * The text of a statement built once and run often through the libSQL client (placeholders
 * written as `?` in the template). Values must not be interpolated: they would be lost.
 */
export function sqlText(query: SQL): string {
  const q = dialect.sqlToQuery(query);
  if (q.params.length) throw new Error("sqlText: write placeholders as ?, not as interpolated values");
  return q.sql;
}

/** A statement with values, as text and parameters for the libSQL client (reads that bypass drizzle's row mapping). */
export const sqlQuery = (query: SQL) => dialect.sqlToQuery(query);

/** `excluded.<column>` in an upsert's SET: the value the INSERT tried to write. */
export const excluded = (column: AnySQLiteColumn): SQL => sql`excluded.${sql.identifier(column.name)}`;

/**
 * `INSERT INTO table (columns) SELECT values <rest>`: every value is paired with its column by
 * name (the columns a plain INSERT requires are required here too). A value is a column or SQL
 * expression over the `rest` (FROM … WHERE …), or a plain value bound as a parameter.
 */
export function insertSelect<T extends SQLiteTable>(
  db: Database,
  table: T,
  values: { [K in keyof T["$inferInsert"]]: T["$inferInsert"][K] | SQLWrapper },
  rest: SQL,
) {
  const columns = table as unknown as Record<string, AnySQLiteColumn>;
  const entries = Object.entries(values as Record<string, unknown>);
  const names = entries.map(([key]) => sql.identifier(columns[key]!.name));
  const exprs = entries.map(([, v]) => sql`${v}`);
  return db.run(sql`INSERT INTO ${table} (${sql.join(names, sql`, `)})
    SELECT ${sql.join(exprs, sql`, `)} ${rest}`);
}

/**
 * Run `before` and then `last` in one batch (one transaction) and return what `last` returned:
 * the status change whose outcome the caller needs comes last, after the rows it must not exist
 * without (outbox rows, log lines).
 */
export async function batchLast<L extends BatchItem<"sqlite">>(
  db: Database,
  before: BatchItem<"sqlite">[],
  last: L,
): Promise<L["_"]["result"]> {
  const results = await db.batch([...before, last] as unknown as [
    BatchItem<"sqlite">,
    ...BatchItem<"sqlite">[],
  ]);
  return results.at(-1) as L["_"]["result"];
}
