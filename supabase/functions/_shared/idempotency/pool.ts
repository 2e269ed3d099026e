/**
 * The one Postgres pool of an isolate: the default {@link PostgresStore} and the functions' own queries
 * (`_shared/db.ts`) both use it, so an instance opens one set of connections, not two.
 */

import postgres from "postgres";
import { preparedStatementsSupported } from "./stores/postgres.ts";

/** The shared pool's connection options, from `SUPABASE_DB_URL`. */
export interface PoolOptions {
  /** The connection string. @default `Deno.env` `SUPABASE_DB_URL` */
  url?: string;
  /** Most connections. @default 10 */
  max?: number;
  /** Named prepared statements. @default {@link preparedStatementsSupported} of the URL */
  prepare?: boolean;
  /** Seconds to wait for a new connection. @default 5 */
  connectTimeoutSeconds?: number;
}

/**
 * Opens a pool with the settings the toolkit expects (no notices, idle connections closed after 30 s).
 *
 * @param options The connection settings.
 * @returns A new pool; the caller ends it.
 * @throws {Error} when no URL is given and `SUPABASE_DB_URL` is unset.
 * @example Open a pool
 * ```ts
 * const sql = openPool({ url: "postgresql://postgres:postgres@127.0.0.1:54322/postgres", max: 4 });
 * await sql.end();
 * ```
 */
export function openPool(options: PoolOptions = {}): postgres.Sql {
  const url = options.url ?? Deno.env.get("SUPABASE_DB_URL");
  if (!url) throw new Error("SUPABASE_DB_URL is not set: the functions cannot reach their database");
  return postgres(url, {
    max: options.max ?? 10,
    prepare: options.prepare ?? preparedStatementsSupported(url),
    connect_timeout: options.connectTimeoutSeconds ?? 5,
    idle_timeout: 30,
    onnotice: () => {},
    connection: { application_name: "edge-function" },
  });
}

/** The explicit default instance: opened by the first caller that needs it. */
let shared: postgres.Sql | undefined;

/**
 * The isolate's shared pool on `SUPABASE_DB_URL`, opened on first use.
 *
 * @returns The pool; never end it directly, call {@link closeSharedPool}.
 * @throws {Error} when `SUPABASE_DB_URL` is unset.
 * @example Query through the shared pool
 * ```ts
 * const [row] = await sharedPool()`select 1 as one`;
 * ```
 */
export function sharedPool(): postgres.Sql {
  shared ??= openPool();
  return shared;
}

/**
 * Ends the shared pool if it was opened; a later {@link sharedPool} call opens a new one.
 *
 * @returns When the pool's connections are closed.
 * @example At shutdown
 * ```ts
 * await closeSharedPool();
 * ```
 */
export async function closeSharedPool(): Promise<void> {
  const sql = shared;
  shared = undefined;
  if (sql) await sql.end({ timeout: 5 });
}
