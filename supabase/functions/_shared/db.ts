/**
 * The edge functions' connection to their own tables: the isolate's one `npm:postgres` pool on
 * `SUPABASE_DB_URL` (which Supabase sets in every deployed function), shared with the default idempotency
 * store and the transactional wrapper (see idempotency/pool.ts).
 */

import type postgres from "npm:postgres@3.4.9";
import { closeSharedPool, openPool, type PoolOptions, sharedPool } from "./idempotency/pool.ts";

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

/** Opens a new pool of its own (tests, scripts); the caller owns it and ends it with `sql.end()`. */
export function createSql(options: PoolOptions = {}): Sql {
  return openPool({ max: 5, ...options });
}

/** The isolate's shared pool (the default idempotency store's too), created on first use. */
export function db(): Sql {
  return sharedPool();
}

/** Ends the shared pool if it was opened (a later {@link db} call opens a new one). */
export function closeDb(): Promise<void> {
  return closeSharedPool();
}
