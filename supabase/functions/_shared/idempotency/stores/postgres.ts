/**
 * The Supabase default store: the `idempotency_keys` table and its SQL functions
 * (supabase/migrations/20261123000100_idempotency_keys.sql).
 *
 * Every method is exactly one round trip that calls one SQL function, so races are decided by a unique row
 * and a row lock inside Postgres, never by this code.
 */

import postgres from "postgres";
import type {
  BeginInput,
  BeginResult,
  IdempotencyStore,
  KeyScope,
  KeyStatus,
  Lease,
  StoredResponse,
} from "../store.ts";

/** Options for {@link PostgresStore}. */
export interface PostgresStoreOptions {
  /** The connection string; default `Deno.env` `SUPABASE_DB_URL` (set in every hosted Edge Function). */
  url?: string;
  /** A client you already have: used as is (the other options are then unused); `close()` leaves it open. */
  sql?: postgres.Sql;
  /** Most connections in the pool; default 10. Concurrent requests beyond it queue in the client. */
  max?: number;
  /**
   * Whether to use named prepared statements. Default: `false` when the URL's port is 6543 (Supavisor in
   * transaction mode hands each transaction to any server connection, where a prepared statement is
   * missing), `true` otherwise.
   */
  prepare?: boolean;
  /** How long to wait for a new connection before the call fails, in seconds; default 5. */
  connectTimeoutSeconds?: number;
}

/** One row of `idempotency_begin` (and of `idempotency_begin_async`, which returns the same). */
export interface BeginRow {
  outcome: string;
  record_id: string;
  lease_token: string | null;
  status_code: number | null;
  response: Uint8Array | null;
  response_encoding: string | null;
  response_headers: Record<string, string> | null;
  retry_after_seconds: number | null;
  attempt_count: number;
  replay_count: number;
}

/** One row of the `status` select. */
interface StatusRow {
  idempotency_key: string;
  function_name: string;
  status: KeyStatus["status"];
  status_code: number | null;
  attempt_count: number;
  replay_count: number;
  created_at: Date;
  completed_at: Date | null;
  expires_at: Date;
}

/** Supavisor's transaction-mode port: a prepared statement may be missing on the next server connection. */
const TRANSACTION_POOLER_PORT = "6543";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** An {@link IdempotencyStore} on Postgres through `npm:postgres`. */
export class PostgresStore implements IdempotencyStore {
  /** Always `postgres`. */
  readonly name = "postgres";
  readonly #sql: postgres.Sql;
  /** Only a pool this store opened is ended by `close()`. */
  readonly #ownsClient: boolean;

  /** Opens no connection yet (postgres.js connects on the first query); throws when no URL is known. */
  constructor(options: PostgresStoreOptions = {}) {
    if (options.sql) {
      this.#sql = options.sql;
      this.#ownsClient = false;
      return;
    }
    const url = options.url ?? Deno.env.get("SUPABASE_DB_URL");
    if (!url) {
      throw new Error("PostgresStore needs a database URL: pass { url } or set SUPABASE_DB_URL");
    }
    this.#sql = postgres(url, {
      max: options.max ?? 10,
      prepare: options.prepare ?? preparedStatementsSupported(url),
      connect_timeout: options.connectTimeoutSeconds ?? 5,
      onnotice: () => {},
      connection: { application_name: "idempotency-store" },
    });
    this.#ownsClient = true;
  }

  /** Claims a key through `idempotency_begin`. */
  begin(input: BeginInput): Promise<BeginResult> {
    return this.#run("begin", async () => {
      const [row] = await this.#sql<BeginRow[]>`
        select * from public.idempotency_begin(
          ${input.key}::text, ${input.userId}::uuid, ${input.functionName}::text, ${input.fingerprint}::text,
          ${input.ttlSeconds}::integer, ${input.lockTimeoutSeconds}::integer
        )`;
      if (!row) throw new Error("idempotency_begin returned no row");
      return toBeginResult(row);
    });
  }

  /** Stores the response through `idempotency_complete`. */
  complete(lease: Lease, response: StoredResponse): Promise<boolean> {
    if (!isUuidLease(lease)) return Promise.resolve(false);
    return this.#run("complete", async () => {
      const [row] = await this.#sql<{ ok: boolean }[]>`
        select public.idempotency_complete(
          ${lease.recordId}::uuid, ${lease.leaseToken}::uuid, ${response.status}::integer,
          ${response.body}::bytea, ${response.encoding}::text, ${this.#sql.json(response.headers)}::jsonb
        ) as ok`;
      return row?.ok === true;
    });
  }

  /** Releases the key through `idempotency_fail`. */
  fail(lease: Lease, error: { message: string; status?: number }): Promise<boolean> {
    if (!isUuidLease(lease)) return Promise.resolve(false);
    return this.#run("fail", async () => {
      const [row] = await this.#sql<{ ok: boolean }[]>`
        select public.idempotency_fail(
          ${lease.recordId}::uuid, ${lease.leaseToken}::uuid, ${error.message}::text,
          ${error.status ?? null}::integer
        ) as ok`;
      return row?.ok === true;
    });
  }

  /** Renews the lease through `idempotency_extend_lease`. */
  extendLease(lease: Lease, lockTimeoutSeconds: number): Promise<boolean> {
    if (!isUuidLease(lease)) return Promise.resolve(false);
    return this.#run("extendLease", async () => {
      const [row] = await this.#sql<{ ok: boolean }[]>`
        select public.idempotency_extend_lease(
          ${lease.recordId}::uuid, ${lease.leaseToken}::uuid, ${lockTimeoutSeconds}::integer
        ) as ok`;
      return row?.ok === true;
    });
  }

  /**
   * Reads the table directly rather than `get_idempotency_status`: that function filters by `auth.uid()`,
   * which is empty on the service-role connection an Edge Function holds.
   */
  status(scope: KeyScope): Promise<KeyStatus | null> {
    return this.#run("status", async () => {
      const [row] = await this.#sql<StatusRow[]>`
        select idempotency_key, function_name, status, status_code, attempt_count, replay_count,
          created_at, completed_at, expires_at
        from public.idempotency_keys
        where idempotency_key = ${scope.key}::text
          and user_id is not distinct from ${scope.userId}::uuid
          and expires_at > now()`;
      return row ? toKeyStatus(row) : null;
    });
  }

  /** Deletes expired rows through `cleanup_expired_idempotency_keys` (default batch 10000). */
  cleanup(options: { batchSize?: number } = {}): Promise<number> {
    return this.#run("cleanup", async () => {
      const [row] = await this.#sql<{ deleted: string }[]>`
        select public.cleanup_expired_idempotency_keys(${options.batchSize ?? 10_000}::integer) as deleted`;
      return Number(row?.deleted ?? 0);
    });
  }

  /** Ends the pool once its queries are done, unless the client was passed in. */
  async close(): Promise<void> {
    if (this.#ownsClient) await this.#sql.end({ timeout: 5 });
  }

  /** Runs one call, naming this store and the method in any error so logs say what was unreachable. */
  async #run<T>(method: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      throw new Error(`postgres store: ${method} failed: ${message}`, { cause: error });
    }
  }
}

/**
 * The outcome a row of `idempotency_begin` stands for.
 *
 * @param row One row of the function.
 * @returns The typed outcome.
 * @throws {Error} on an unknown outcome.
 * @example
 * ```ts
 * const [row] = await sql<BeginRow[]>`select * from public.idempotency_begin(...)`;
 * const result = toBeginResult(row);
 * ```
 */
export function toBeginResult(row: BeginRow): BeginResult {
  const recordId = row.record_id;
  switch (row.outcome) {
    case "started":
      return {
        outcome: "started",
        recordId,
        leaseToken: String(row.lease_token),
        attempt: row.attempt_count,
      };
    case "replay":
      return { outcome: "replay", recordId, response: toStoredResponse(row), replayCount: row.replay_count };
    case "in_progress":
      return { outcome: "in_progress", recordId, retryAfterSeconds: row.retry_after_seconds ?? 1 };
    case "mismatch":
      return { outcome: "mismatch", recordId };
    default:
      throw new Error(`idempotency_begin returned an unknown outcome: ${row.outcome}`);
  }
}

function toStoredResponse(row: BeginRow): StoredResponse {
  return {
    status: Number(row.status_code),
    headers: row.response_headers ?? {},
    // postgres.js hands out a Buffer that may share a pooled slab: copy into a plain Uint8Array of its own.
    body: row.response ? new Uint8Array(row.response) : new Uint8Array(0),
    encoding: row.response_encoding === "gzip" ? "gzip" : "identity",
  };
}

function toKeyStatus(row: StatusRow): KeyStatus {
  return {
    key: row.idempotency_key,
    functionName: row.function_name,
    status: row.status,
    statusCode: row.status_code,
    attemptCount: row.attempt_count,
    replayCount: row.replay_count,
    createdAt: row.created_at,
    completedAt: row.completed_at,
    expiresAt: row.expires_at,
  };
}

/** Every lease this store hands out is two UUIDs; anything else cannot match, and would only raise 22P02. */
function isUuidLease(lease: Lease): boolean {
  return UUID.test(lease.recordId) && UUID.test(lease.leaseToken);
}

/**
 * Whether named prepared statements are safe on `url`: not on Supavisor's transaction-mode port 6543, and
 * not when the URL says `prepare=false` (postgres.js's own URL option, never sent to the server: mark any
 * other transaction pooler's URL with it, e.g. a local pgbouncer's). Anything else: yes.
 *
 * @param url A Postgres connection string.
 * @returns `false` when the next transaction may run on a server connection that lacks the statement.
 * @example
 * ```ts
 * preparedStatementsSupported("postgresql://u:p@127.0.0.1:54329/postgres?prepare=false"); // false
 * ```
 */
export function preparedStatementsSupported(url: string): boolean {
  try {
    const parsed = new URL(url);
    return parsed.port !== TRANSACTION_POOLER_PORT && parsed.searchParams.get("prepare") !== "false";
  } catch {
    return true;
  }
}
