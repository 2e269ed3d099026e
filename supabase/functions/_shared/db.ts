/**
 * The edge functions' connection to their own tables: the isolate's one `npm:postgres` pool on
 * `SUPABASE_DB_URL` (which Supabase sets in every deployed function), shared with the default idempotency
 * store.
 */

import postgres from "postgres";
import { closeSharedPool, preparedStatementsSupported, sharedPool } from "./idempotency.ts";

/** A `npm:postgres` client (a pool; `sql.begin` runs one transaction on one connection). */
export type Sql = postgres.Sql;

/** An open transaction of `npm:postgres`, as the idempotency wrapper hands it to a handler. */
export type Tx = postgres.TransactionSql;

/**
 * `value` as a jsonb parameter, serialised exactly once. (A `JSON.stringify`-ed string cast with `::jsonb`
 * would be serialised again by the driver, storing a JSON string instead of the object.)
 */
export function jsonb(sql: Pick<Sql | Tx, "json">, value: unknown): postgres.Parameter {
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
  return postgres(url, {
    max: options.max ?? 5,
    prepare: options.prepare ?? preparedStatementsSupported(url),
    connect_timeout: options.connectTimeoutSeconds ?? 5,
    idle_timeout: 30,
    onnotice: () => {},
  });
}

/** The isolate's shared pool (the default idempotency store's too), created on first use. */
export function db(): Sql {
  return sharedPool();
}

/** Ends the shared pool if it was opened (a later {@link db} call opens a new one). */
export function closeDb(): Promise<void> {
  return closeSharedPool();
}
