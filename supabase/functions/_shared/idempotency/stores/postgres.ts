/**
 * The Supabase default store: the `idempotency_keys` table and its SQL functions
 * (supabase/migrations/20261123000100_idempotency_keys.sql).
 *
 * Every method is exactly one round trip that calls one SQL function, so races are decided by a unique row
 * and a row lock inside Postgres, never by this code.
 */

import postgres from "npm:postgres@3.4.9";
import { storedResponse, toBeginResult } from "../_begin_rules.ts";
import { IdempotencyError } from "../errors.ts";
import {
  observeDatabaseError,
  preparedStatementsSupported,
  ResilientPostgres,
  withDeadline,
} from "../_postgres_client.ts";
import { isMissingUser } from "../_outage.ts";
import type {
  BeginInput,
  BeginResult,
  IdempotencyStore,
  KeyScope,
  KeyStatus,
  Lease,
  StoredResponse,
} from "../store.ts";

/**
 * A `npm:postgres` (postgres.js 3.4.9) client: a pool, as `postgres(url)` returns it.
 *
 * @example Share your pool with the store
 * ```ts
 * import postgres from "npm:postgres@3.4.9";
 * import { type PostgresClient, PostgresStore } from "./postgres.ts";
 *
 * const sql: PostgresClient = postgres("postgresql://postgres:postgres@127.0.0.1:54322/postgres");
 * const store = new PostgresStore({ sql }); // connects on the first query
 * await store.close(); // leaves `sql` open
 * await sql.end();
 * ```
 */
export type PostgresClient = postgres.Sql;

/**
 * An open transaction of a {@link PostgresClient}, as `sql.begin` hands it to its callback.
 *
 * @example Write two rows atomically
 * ```ts
 * import type { PostgresTransaction } from "./postgres.ts";
 *
 * async function twoRows(tx: PostgresTransaction): Promise<void> {
 *   await tx`insert into public.notifications (message) values ('one')`;
 *   await tx`insert into public.notifications (message) values ('two')`;
 * }
 * console.assert(typeof twoRows === "function");
 * ```
 */
export type PostgresTransaction = postgres.TransactionSql;

/**
 * Options for {@link PostgresStore}.
 *
 * @example Through Supavisor's transaction mode
 * ```ts
 * import { PostgresStore } from "./postgres.ts";
 *
 * // port 6543: prepared statements are switched off by default
 * const store = new PostgresStore({ url: "postgresql://postgres:pw@db.example.com:6543/postgres", max: 5 });
 * await store.close();
 * ```
 */
export interface PostgresStoreOptions {
  /**
   * The connection string; default `Deno.env` `SUPABASE_DB_URL` (set in every hosted Edge Function).
   *
   * @default {Deno.env.get("SUPABASE_DB_URL")}
   */
  url?: string;
  /**
   * A client you already have: used as is (the other options are then unused); `close()` leaves it open.
   *
   * @default {undefined} a pool of its own, opened from `url`
   */
  sql?: PostgresClient;
  /**
   * Most connections in the pool; default 10. Concurrent requests beyond it queue in the client.
   *
   * @default {10}
   */
  max?: number;
  /**
   * Whether to use named prepared statements. Default: `false` when the URL's port is 6543 (Supavisor in
   * transaction mode hands each transaction to any server connection, where a prepared statement is
   * missing), `true` otherwise.
   *
   * @default {preparedStatementsSupported(url)}
   */
  prepare?: boolean;
  /**
   * How long to wait for a new connection before the call fails, in seconds; default 5.
   *
   * @default {5}
   */
  connectTimeoutSeconds?: number;
  /**
   * The longest wait for one store call, in milliseconds, connecting included. Past it the statement is
   * cancelled (its transaction rolls back) and the call rejects, which the wrapper answers with 503 and
   * `Retry-After`. A client-side deadline, so it also holds behind a transaction pooler.
   *
   * @default {Number(Deno.env.get("IDEMPOTENCY_STORE_TIMEOUT_MS") ?? 3000)}
   */
  statementTimeoutMs?: number;
  /**
   * Claim with `idempotency_begin_async`, whose transaction commits with `synchronous_commit = off`. Safe
   * only when the run completes the record in a synchronously committed transaction of the same database
   * (the transactional mode does): that commit flushes the claim too. Not for `withIdempotency`.
   *
   * @default {false}
   */
  asyncClaim?: boolean;
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

/** SQLSTATE `lock_not_available`: a `lock_timeout` fired. */
const LOCK_NOT_AVAILABLE = "55P03";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * An {@link IdempotencyStore} on Postgres through `npm:postgres`.
 *
 * @example The default store, explicitly
 * ```ts
 * import { withIdempotency } from "../middleware.ts";
 * import { PostgresStore } from "./postgres.ts";
 *
 * const store = new PostgresStore({ url: "postgresql://postgres:postgres@127.0.0.1:54322/postgres" });
 * const handler = withIdempotency(() => new Response("ok"), { functionName: "charge", store });
 * console.assert(typeof handler === "function");
 * await store.close();
 * ```
 */
export class PostgresStore implements IdempotencyStore {
  /** Always `postgres`. */
  readonly name = "postgres";
  readonly #sql: postgres.Sql;
  /** Only a pool this store opened is ended by `close()`. */
  readonly #ownsClient: boolean;
  /** The pool this store opened, recycled on connection failures (see _postgres_client.ts). */
  readonly #pool: ResilientPostgres | undefined;
  readonly #timeoutMs: number;
  readonly #asyncClaim: boolean;

  /**
   * Opens no connection yet (postgres.js connects on the first query); throws when no URL is known.
   *
   * @param options Where the database is, or a client to reuse.
   * @throws {Error} when neither `url`, `sql` nor `SUPABASE_DB_URL` is given.
   */
  constructor(options: PostgresStoreOptions = {}) {
    this.#timeoutMs = options.statementTimeoutMs ?? storeTimeoutFromEnv();
    this.#asyncClaim = options.asyncClaim ?? false;
    if (options.sql) {
      this.#sql = options.sql;
      this.#ownsClient = false;
      this.#pool = undefined;
      return;
    }
    const url = options.url ?? Deno.env.get("SUPABASE_DB_URL");
    if (!url) {
      throw new Error("PostgresStore needs a database URL: pass { url } or set SUPABASE_DB_URL");
    }
    this.#pool = new ResilientPostgres(url, {
      max: options.max ?? 10,
      prepare: options.prepare ?? preparedStatementsSupported(url),
      connectTimeoutSeconds: options.connectTimeoutSeconds ?? 5,
      applicationName: "idempotency-store",
    });
    this.#sql = this.#pool.sql;
    this.#ownsClient = true;
  }

  /**
   * Claims a key through `idempotency_begin`, which applies the begin rules (docs/guide.md).
   *
   * @param input The key, its scope and request fingerprint, and the durations.
   * @returns The outcome the begin rules give.
   * @throws {RangeError} rule invalid-durations; another error when the store cannot be reached.
   */
  begin(input: BeginInput): Promise<BeginResult> {
    return this.#run("begin", async () => {
      const { key, userId, functionName, fingerprint, ttlSeconds, lockTimeoutSeconds } = input;
      const [row] = await this.#bounded(
        this.#asyncClaim
          ? this.#sql<BeginRow[]>`
        select * from public.idempotency_begin_async(
          ${key}::text, ${userId}::uuid, ${functionName}::text, ${fingerprint}::text,
          ${ttlSeconds}::integer, ${lockTimeoutSeconds}::integer
        )`
          : this.#sql<BeginRow[]>`
        select * from public.idempotency_begin(
          ${key}::text, ${userId}::uuid, ${functionName}::text, ${fingerprint}::text,
          ${ttlSeconds}::integer, ${lockTimeoutSeconds}::integer
        )`,
        (rows) => this.#releaseLateClaim(rows),
      );
      if (!row) throw new Error("idempotency_begin returned no row");
      return beginRowResult(row);
    });
  }

  /**
   * Claims a key through `idempotency_begin` as a statement of the open transaction `tx`, so the claim
   * commits or rolls back with the caller's work (the transactional mode's in-transaction claim). Bounded by
   * the same deadline as every store call: past it the statement is cancelled, which aborts `tx`, so a claim
   * granted late cannot outlive it and needs no release. A `lock_timeout` of `tx` that fires first (SQLSTATE
   * 55P03: another transaction holds the key's row, a duplicate still running) is `REQUEST_IN_PROGRESS`.
   *
   * @param tx An open transaction of this store's pool.
   * @param input The key, its scope and request fingerprint, and the durations.
   * @returns The outcome the begin rules give.
   * @throws {IdempotencyError} `USER_NOT_FOUND` when the caller's user is gone; `REQUEST_IN_PROGRESS` on a
   * lock timeout; another error when the store cannot be reached in time.
   */
  beginInTransaction(tx: PostgresTransaction, input: BeginInput): Promise<BeginResult> {
    return this.#run("begin", async () => {
      let rows: BeginRow[];
      try {
        rows = await this.#bounded(tx<BeginRow[]>`
        select * from public.idempotency_begin(
          ${input.key}::text, ${input.userId}::uuid, ${input.functionName}::text, ${input.fingerprint}::text,
          ${input.ttlSeconds}::integer, ${input.lockTimeoutSeconds}::integer
        )`);
      } catch (error) {
        if ((error as { code?: unknown })?.code !== LOCK_NOT_AVAILABLE) throw error;
        throw new IdempotencyError(
          "REQUEST_IN_PROGRESS",
          "A request with this idempotency key is still running",
          {
            retryAfterSeconds: 1,
            cause: error,
          },
        );
      }
      const [row] = rows;
      if (!row) throw new Error("idempotency_begin returned no row");
      return beginRowResult(row);
    });
  }

  /**
   * Stores the response through `idempotency_complete`.
   *
   * @param lease What `begin` returned with `started`.
   * @param response The response to keep.
   * @returns `false` when the lease is no longer the caller's (nothing was written).
   */
  complete(lease: Lease, response: StoredResponse): Promise<boolean> {
    if (!isUuidLease(lease)) return Promise.resolve(false);
    return this.#run("complete", async () => {
      const [row] = await this.#bounded(this.#sql<{ ok: boolean }[]>`
        select public.idempotency_complete(
          ${lease.recordId}::uuid, ${lease.leaseToken}::uuid, ${response.status}::integer,
          ${response.body}::bytea, ${response.encoding}::text, ${this.#sql.json(response.headers)}::jsonb
        ) as ok`);
      return row?.ok === true;
    });
  }

  /**
   * Releases the key through `idempotency_fail`.
   *
   * @param lease What `begin` returned with `started`.
   * @param error The failure, kept for operators (never replayed).
   * @returns `false` when the lease is no longer the caller's.
   */
  fail(lease: Lease, error: { message: string; status?: number }): Promise<boolean> {
    if (!isUuidLease(lease)) return Promise.resolve(false);
    return this.#run("fail", async () => {
      const [row] = await this.#bounded(this.#sql<{ ok: boolean }[]>`
        select public.idempotency_fail(
          ${lease.recordId}::uuid, ${lease.leaseToken}::uuid, ${error.message}::text,
          ${error.status ?? null}::integer
        ) as ok`);
      return row?.ok === true;
    });
  }

  /**
   * Renews the lease through `idempotency_extend_lease`.
   *
   * @param lease What `begin` returned with `started`.
   * @param lockTimeoutSeconds The new lease length, from now.
   * @returns `false` when the lease is no longer the caller's.
   */
  extendLease(lease: Lease, lockTimeoutSeconds: number): Promise<boolean> {
    if (!isUuidLease(lease)) return Promise.resolve(false);
    return this.#run("extendLease", async () => {
      const [row] = await this.#bounded(this.#sql<{ ok: boolean }[]>`
        select public.idempotency_extend_lease(
          ${lease.recordId}::uuid, ${lease.leaseToken}::uuid, ${lockTimeoutSeconds}::integer
        ) as ok`);
      return row?.ok === true;
    });
  }

  /**
   * Reads the table directly rather than `get_idempotency_status`: that function filters by `auth.uid()`,
   * which is empty on the service-role connection an Edge Function holds. The key is found through the
   * digest its unique index holds, then key and user are compared exactly.
   *
   * @param scope The key and its user.
   * @returns The key's state, or `null` when there is none (or it expired).
   */
  status(scope: KeyScope): Promise<KeyStatus | null> {
    return this.#run("status", async () => {
      const [row] = await this.#bounded(this.#sql<StatusRow[]>`
        select idempotency_key, function_name, status, status_code, attempt_count, replay_count,
          created_at, completed_at, expires_at
        from public.idempotency_keys
        where public.idempotency_key_digest(user_id, idempotency_key)
            = public.idempotency_key_digest(${scope.userId}::uuid, ${scope.key}::text)
          and idempotency_key = ${scope.key}::text
          and user_id is not distinct from ${scope.userId}::uuid
          and expires_at > now()`);
      return row ? toKeyStatus(row) : null;
    });
  }

  /**
   * Deletes expired rows through `cleanup_expired_idempotency_keys` (default batch 10000).
   *
   * @param options `batchSize`: the most records deleted per batch.
   * @returns How many records were deleted.
   */
  cleanup(options: { batchSize?: number } = {}): Promise<number> {
    return this.#run("cleanup", async () => {
      const [row] = await this.#sql<{ deleted: string }[]>`
        select public.cleanup_expired_idempotency_keys(${options.batchSize ?? 10_000}::integer) as deleted`;
      return Number(row?.deleted ?? 0);
    });
  }

  /** Ends the pool once its queries are done, unless the client was passed in. */
  async close(): Promise<void> {
    if (this.#ownsClient) await this.#pool?.end(5);
  }

  /** `query` bounded by the store's deadline (cleanup is not: it is a batch job with its own limits). */
  #bounded<T extends postgres.Row[]>(
    query: postgres.PendingQuery<T>,
    onLateResult?: (rows: T) => void,
  ): Promise<postgres.RowList<T>> {
    return withDeadline(query, this.#timeoutMs, onLateResult);
  }

  /**
   * A claim that the server granted after the caller had given up (and answered 503) has no worker: release
   * it at once, so a retry runs instead of waiting for the lease to expire.
   */
  #releaseLateClaim(rows: BeginRow[]): void {
    const row = rows[0];
    if (row?.outcome !== "started" || !row.lease_token) return;
    const lease = { recordId: row.record_id, leaseToken: row.lease_token };
    this.fail(lease, { message: "claim confirmed after the store deadline; released unused" }).catch(
      () => {},
    );
  }

  /**
   * Runs one call, naming this store and the method in any error so logs say what was unreachable. A
   * foreign-key violation on `user_id` is the caller's user gone from `auth.users` (deleted while its token
   * lives): a 401 of its own, never an outage.
   */
  async #run<T>(method: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      if (error instanceof IdempotencyError) throw error;
      // recycles this store's pool, or a shared one passed in as `sql`
      observeDatabaseError(error);
      if (isMissingUser(error)) {
        throw new IdempotencyError("USER_NOT_FOUND", "The signed-in user no longer exists", { cause: error });
      }
      const message = error instanceof Error ? error.message : String(error);
      throw new Error(`postgres store: ${method} failed: ${message}`, { cause: error });
    }
  }
}

/**
 * The outcome a row of `idempotency_begin` (or `idempotency_begin_async`) stands for.
 *
 * @param row One row of the function.
 * @returns The typed outcome, as the begin rules name it.
 * @throws {Error} on an unknown outcome.
 */
export function beginRowResult(row: BeginRow): BeginResult {
  return toBeginResult({
    outcome: row.outcome,
    recordId: row.record_id,
    leaseToken: row.lease_token,
    attempt: row.attempt_count,
    replayCount: row.replay_count,
    retryAfterSeconds: row.retry_after_seconds,
    // postgres.js hands out a Buffer that may share a pooled slab: copy into a plain Uint8Array of its own.
    response: () =>
      storedResponse(
        row.status_code,
        row.response_headers,
        row.response ? new Uint8Array(row.response) : new Uint8Array(0),
        row.response_encoding,
      ),
  });
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

/** `IDEMPOTENCY_STORE_TIMEOUT_MS` when it is a positive integer, else 3000. */
function storeTimeoutFromEnv(): number {
  const value = Number(Deno.env.get("IDEMPOTENCY_STORE_TIMEOUT_MS"));
  return Number.isInteger(value) && value > 0 ? value : 3000;
}
