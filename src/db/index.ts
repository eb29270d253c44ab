import type { Client } from "@libsql/client";
import type { LibSQLDatabase } from "drizzle-orm/libsql";
import { drizzle } from "drizzle-orm/libsql";
import * as schema from "./schema";

export type Database = LibSQLDatabase<typeof schema> & { $client: Client };
export { schema };

/** Wrap a libSQL client (file, Turso, or HTTP) in drizzle; the rest of src/ only sees this. */
export function createDatabase(client: Client, opts: { logSql?: boolean } = {}): Database {
  return drizzle(client, { schema, logger: opts.logSql ?? false });
}
