/**
 * The one Postgres pool of an isolate: the default {@link PostgresStore}, the transactional wrapper and the
 * functions' own queries (`_shared/db.ts`) all use it, so an instance opens one set of connections, not two.
 * It is a {@link ResilientPostgres}: it survives database restarts and postgres.js 3.4.9's write-after-close
 * defect (see _postgres_client.ts).
 *
 * Size: each isolate holds at most `max` connections (default 10). Behind Supavisor (port 6543) these are
 * client connections, which Supavisor multiplexes onto its own server pool; direct connections (port 5432)
 * count against the database's `max_connections`, shared by every isolate, so lower `max` there.
 *
 * A public import path of its own: a function's handler gets its transaction from
 * `withIdempotentTransaction`, so only code that queries outside it (a script, `_shared/db.ts`) needs the pool.
 * The postgres.js client types and the pooler rule live here too.
 *
 * @module
 */

import { preparedStatementsSupported, ResilientPostgres } from "./_postgres_client.ts";
import type { PostgresClient } from "./stores/postgres.ts";

export { preparedStatementsSupported } from "./_postgres_client.ts";
export type { PostgresClient, PostgresTransaction } from "./stores/postgres.ts";

/**
 * The shared pool's connection options, from `SUPABASE_DB_URL`.
 *
 * @example A small pool for a script
 * ```ts
 * import type { PoolOptions } from "./pool.ts";
 *
 * const options: PoolOptions = { max: 2, connectTimeoutSeconds: 2 };
 * console.assert(options.max === 2);
 * ```
 */
export interface PoolOptions {
  /**
   * The connection string.
   *
   * @default {Deno.env.get("SUPABASE_DB_URL")}
   */
  url?: string;
  /**
   * Most connections.
   *
   * @default {10}
   */
  max?: number;
  /**
   * Named prepared statements; off behind a transaction pooler (see `preparedStatementsSupported`).
   *
   * @default {preparedStatementsSupported(url)}
   */
  prepare?: boolean;
  /**
   * Seconds to wait for a new connection.
   *
   * @default {5}
   */
  connectTimeoutSeconds?: number;
}

/**
 * Opens a pool with the settings the toolkit expects (no notices, idle connections closed after 30 s,
 * recycled after a connection failure).
 *
 * @param options The connection settings.
 * @returns A new pool; the caller ends it with `sql.end()`.
 * @throws {Error} when no URL is given and `SUPABASE_DB_URL` is unset.
 * @example Open a pool
 * ```ts
 * import { openPool } from "./pool.ts";
 *
 * const sql = openPool({ url: "postgresql://postgres:postgres@127.0.0.1:54322/postgres", max: 4 });
 * await sql.end();
 * ```
 */
export function openPool(options: PoolOptions = {}): PostgresClient {
  const url = options.url ?? Deno.env.get("SUPABASE_DB_URL");
  if (!url) throw new Error("SUPABASE_DB_URL is not set: the functions cannot reach their database");
  return new ResilientPostgres(url, {
    max: options.max ?? 10,
    prepare: options.prepare ?? preparedStatementsSupported(url),
    connectTimeoutSeconds: options.connectTimeoutSeconds ?? 5,
    idleTimeoutSeconds: 30,
    applicationName: "edge-function",
  }).sql;
}

/** The explicit default instance: opened by the first caller that needs it. */
let shared: PostgresClient | undefined;

/**
 * The isolate's shared pool on `SUPABASE_DB_URL`, opened on first use.
 *
 * @returns The pool; never end it directly, call {@link closeSharedPool}.
 * @throws {Error} when `SUPABASE_DB_URL` is unset.
 * @example Query through the shared pool
 * ```ts
 * import { closeSharedPool, sharedPool } from "./pool.ts";
 *
 * Deno.env.set("SUPABASE_DB_URL", "postgresql://postgres:postgres@127.0.0.1:54322/postgres");
 * const sql = sharedPool();
 * console.assert(sql === sharedPool());
 * await closeSharedPool();
 * ```
 */
export function sharedPool(): PostgresClient {
  shared ??= openPool();
  return shared;
}

/**
 * Ends the shared pool if it was opened; a later {@link sharedPool} call opens a new one.
 *
 * @returns When the pool's connections are closed.
 * @example At shutdown
 * ```ts
 * import { closeSharedPool } from "./pool.ts";
 *
 * await closeSharedPool();
 * ```
 */
export async function closeSharedPool(): Promise<void> {
  const sql = shared;
  shared = undefined;
  if (sql) await sql.end({ timeout: 5 });
}
