/**
 * The edge functions' connection to their own tables: one `npm:postgres` pool on `SUPABASE_DB_URL`, which
 * Supabase sets in every deployed function.
 */

import postgres from "npm:postgres@3.4.9";
import { preparedStatementsSupported } from "./idempotency.ts";
import { ResilientPostgres } from "./idempotency/_postgres_client.ts";

/** A `npm:postgres` client (a pool; `sql.begin` runs one transaction on one connection). */
export type Sql = postgres.Sql;

/**
 * `value` as a jsonb parameter, serialised exactly once. (A `JSON.stringify`-ed string cast with `::jsonb`
 * would be serialised again by the driver, storing a JSON string instead of the object.)
 */
export function jsonb(sql: Pick<Sql, "json">, value: unknown): postgres.Parameter {
  return sql.json(value as postgres.JSONValue);
}

/** Options for {@link createSql}. */
export interface SqlOptions {
  /** The connection string; default `Deno.env` `SUPABASE_DB_URL`. */
  url?: string;
  /** Most connections in the pool; default 5 (a function instance runs few transactions at once). */
  max?: number;
  /** Named prepared statements; default `false` on port 6543 (Supavisor's transaction mode), else `true`. */
  prepare?: boolean;
  /** Seconds to wait for a new connection before a query fails; default 5. */
  connectTimeoutSeconds?: number;
}

/** Opens a new pool; the caller owns it and ends it with `sql.end()`. */
export function createSql(options: SqlOptions = {}): Sql {
  const url = options.url ?? Deno.env.get("SUPABASE_DB_URL");
  if (!url) throw new Error("SUPABASE_DB_URL is not set: the functions cannot reach their database");
  // Survives database restarts and postgres.js 3.4.9's write-after-close defect (see _postgres_client.ts).
  return new ResilientPostgres(url, {
    max: options.max ?? 5,
    prepare: options.prepare ?? preparedStatementsSupported(url),
    connectTimeoutSeconds: options.connectTimeoutSeconds ?? 5,
    idleTimeoutSeconds: 30,
  }).sql;
}

let defaultSql: Sql | undefined;

/** The functions' shared pool, created on first use from `SUPABASE_DB_URL`. */
export function db(): Sql {
  defaultSql ??= createSql();
  return defaultSql;
}

/** Ends the shared pool if it was opened (a later {@link db} call opens a new one). */
export async function closeDb(): Promise<void> {
  const sql = defaultSql;
  defaultSql = undefined;
  if (sql) await sql.end({ timeout: 5 });
}
