/**
 * The Postgres action store: `public.action_records` and its SQL functions
 * (supabase/migrations/20261130000400_idempotent_actions.sql). Every method is one round trip calling one
 * SQL function, so races are decided by the primary key and a row lock inside Postgres. Statistics come
 * from SQL and counters kept in the database, so every instance reads the same figures.
 *
 * @module
 */

// deno-lint-ignore no-import-prefix -- a full specifier, so a function resolves it from its own deno.json
import postgres from "npm:postgres@3.4.9";
import type { ActionMeta } from "./keys.ts";
import {
  type ActionCheck,
  type ActionLease,
  type ActionRecord,
  type ActionStatus,
  checkMs,
  checkThroughGet,
  type ClaimInput,
  type ClaimResult,
  type FindQuery,
  type StoreInfo,
  type StoreStats,
  type TransactionalActionStore,
} from "./store.ts";

/** A postgres.js pool (`npm:postgres`), as `postgres(url)` returns it. */
export type ActionSql = postgres.Sql;
/** A postgres.js transaction, as `sql.begin` hands it to its callback. */
export type ActionTransactionSql = postgres.TransactionSql;

/** Options for {@link PostgresActionStore}. */
export interface PostgresActionStoreOptions {
  /** A pool you already have (the function's own): used as is, and `close()` leaves it open. */
  sql?: ActionSql;
  /** The connection string when no `sql` is given. @default Deno.env SUPABASE_DB_URL */
  url?: string;
  /** Most connections of a pool this store opens. @default 5 */
  max?: number;
}

/** A row of `action_records` (and of the record columns of `action_claim`). */
interface RecordRow {
  action_key: string;
  action_type: string | null;
  target: string | null;
  signal_id: string | null;
  params_hash: string | null;
  status: ActionStatus;
  result: unknown;
  error: string | null;
  attempt_count: number;
  created_at: Date;
  executed_at: Date | null;
  expires_at: Date;
  locked_until: Date | null;
}

interface ClaimRow extends RecordRow {
  outcome: ClaimResult["outcome"];
  lease_token: string | null;
  retry_after_ms: number | null;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * An {@link ActionStore} on Postgres through `npm:postgres`.
 *
 * @example Share the function's pool
 * ```ts
 * const store = new PostgresActionStore({ sql: db() });
 * ```
 */
export class PostgresActionStore implements TransactionalActionStore<ActionTransactionSql> {
  /** Always `postgres`. */
  readonly name = "postgres";
  readonly #sql: ActionSql;
  readonly #owned: boolean;

  /**
   * Uses the pool given, or opens one (postgres.js connects on the first query).
   *
   * @param options A pool, or where to open one.
   * @throws {Error} when neither `sql`, `url` nor `SUPABASE_DB_URL` is given.
   */
  constructor(options: PostgresActionStoreOptions = {}) {
    if (options.sql) {
      this.#sql = options.sql;
      this.#owned = false;
      return;
    }
    const url = options.url ?? Deno.env.get("SUPABASE_DB_URL");
    if (!url) {
      throw new Error("PostgresActionStore needs a database URL: pass { url } or set SUPABASE_DB_URL");
    }
    this.#sql = postgres(url, {
      max: options.max ?? 5,
      prepare: new URL(url).port !== "6543",
      connect_timeout: 5,
      onnotice: () => {},
      connection: { application_name: "action-store" },
    });
    this.#owned = true;
  }

  /** `action_claim`. */
  claim(input: ClaimInput): Promise<ClaimResult> {
    return this.#run("claim", async () => {
      checkMs("ttlMs", input.ttlMs);
      checkMs("leaseMs", input.leaseMs);
      const m: ActionMeta = input.meta;
      const [row] = await this.#sql<ClaimRow[]>`
        select * from public.action_claim(
          ${input.key}::text, ${m.actionType}::text, ${m.target}::text, ${m.signalId}::text,
          ${m.paramsHash}::text, ${Math.ceil(input.ttlMs)}::integer, ${Math.ceil(input.leaseMs)}::integer,
          ${input.retryFailed}::boolean)`;
      if (!row) throw new Error("action_claim returned no row");
      switch (row.outcome) {
        case "started":
          return {
            outcome: "started",
            lease: { key: input.key, token: String(row.lease_token) },
            attempt: row.attempt_count,
          };
        case "in_progress":
          return { outcome: "in_progress", record: toRecord(row), retryAfterMs: row.retry_after_ms ?? 1000 };
        case "completed":
        case "failed":
          return { outcome: row.outcome, record: toRecord(row) };
        default:
          throw new Error(`action_claim returned an unknown outcome: ${row.outcome}`);
      }
    });
  }

  /** `action_complete`. */
  complete(lease: ActionLease, resultJson: string): Promise<boolean> {
    if (!UUID.test(lease.token)) return Promise.resolve(false);
    return this.#bool(
      "complete",
      this.#sql`
      select public.action_complete(${lease.key}::text, ${lease.token}::uuid, ${resultJson}::text::jsonb) as ok`,
    );
  }

  /**
   * Runs `work` in one transaction with the record's completion, the record's row locked throughout (so
   * no one takes the lease over while it runs; a concurrent claim waits for the commit).
   */
  async completeInTransaction(
    lease: ActionLease,
    work: (tx: ActionTransactionSql) => Promise<string>,
  ): Promise<boolean> {
    if (!UUID.test(lease.token)) return false;
    const failure: { error?: unknown } = {};
    try {
      return await this.#sql.begin(async (tx) => {
        const [held] = await tx`
          select 1 as ok from public.action_records r
          where r.action_key = ${lease.key}::text and r.lease_token = ${lease.token}::uuid
            and r.status = 'processing'
          for update`;
        if (!held) return false;
        let json: string;
        try {
          json = await work(tx);
        } catch (error) {
          failure.error = error;
          throw error;
        }
        const [row] = await tx<{ ok: boolean }[]>`
          select public.action_complete(${lease.key}::text, ${lease.token}::uuid, ${json}::text::jsonb) as ok`;
        return row?.ok === true;
      });
    } catch (error) {
      if ("error" in failure) throw failure.error; // the work's own error, after the rollback
      const message = error instanceof Error ? error.message : String(error);
      throw new Error(`postgres action store: completeInTransaction failed: ${message}`, { cause: error });
    }
  }

  /** `action_fail`. */
  fail(lease: ActionLease, error: string): Promise<boolean> {
    if (!UUID.test(lease.token)) return Promise.resolve(false);
    return this.#bool(
      "fail",
      this.#sql`
      select public.action_fail(${lease.key}::text, ${lease.token}::uuid, ${error}::text) as ok`,
    );
  }

  /** `action_extend`. */
  extend(lease: ActionLease, leaseMs: number): Promise<boolean> {
    if (!UUID.test(lease.token)) return Promise.resolve(false);
    return this.#bool(
      "extend",
      this.#sql`
      select public.action_extend(${lease.key}::text, ${lease.token}::uuid, ${
        Math.ceil(leaseMs)
      }::integer) as ok`,
    );
  }

  /** `action_get`. */
  get(key: string, count = false): Promise<ActionRecord | null> {
    return this.#run("get", async () => {
      const [row] = await this.#sql<
        RecordRow[]
      >`select * from public.action_get(${key}::text, ${count}::boolean)`;
      return row ? toRecord(row) : null;
    });
  }

  /** `get(key, true)`: one round trip either way. */
  check(key: string): Promise<ActionCheck | null> {
    return checkThroughGet(this, key);
  }

  /** `action_delete`. */
  delete(key: string): Promise<boolean> {
    return this.#bool("delete", this.#sql`select public.action_delete(${key}::text) as ok`);
  }

  /** `action_clear_all` (service role only). */
  clear(): Promise<number> {
    return this.#number("clear", this.#sql`select public.action_clear_all() as n`);
  }

  /** `action_stats`: counts from the table, counters summed over their shards. */
  stats(): Promise<StoreStats> {
    return this.#run("stats", async () => {
      const [row] = await this.#sql<Record<string, string>[]>`select * from public.action_stats()`;
      const n = (name: string) => Number(row?.[name] ?? 0);
      return {
        totalCached: n("total"),
        byStatus: { processing: n("processing"), completed: n("completed"), failed: n("failed") },
        cacheHits: n("hits"),
        cacheMisses: n("misses"),
        duplicatesPrevented: n("duplicates_prevented"),
        expiredCleaned: n("expired_cleaned"),
        evicted: 0,
      };
    });
  }

  /** `action_reset_stats`. */
  resetStats(): Promise<void> {
    return this.#run("resetStats", async () => {
      await this.#sql`select public.action_reset_stats()`;
    });
  }

  /** `action_cache_info`; no capacity (the table is bounded by TTL and cleanup). */
  info(): Promise<StoreInfo> {
    return this.#run("info", async () => {
      const [row] = await this.#sql<
        {
          current_size: string;
          oldest_entry: Date | null;
          newest_entry: Date | null;
          approximate_bytes: string;
        }[]
      >`select * from public.action_cache_info()`;
      return {
        currentSize: Number(row?.current_size ?? 0),
        maxSize: null,
        utilizationPercent: null,
        oldestEntry: row?.oldest_entry ?? null,
        newestEntry: row?.newest_entry ?? null,
        approximateBytes: Number(row?.approximate_bytes ?? 0),
      };
    });
  }

  /** `action_find`. */
  find(query: FindQuery): Promise<ActionRecord[]> {
    return this.#run("find", async () => {
      const rows = await this.#sql<RecordRow[]>`
        select * from public.action_find(
          ${query.actionType ?? null}::text, ${query.target ?? null}::text, ${query.signalId ?? null}::text,
          ${query.status ?? null}::text, ${
        query.expiresBefore ?? null
      }::timestamptz, ${query.limit}::integer)`;
      return rows.map(toRecord);
    });
  }

  /** `action_cleanup_expired`. */
  cleanupExpired(): Promise<number> {
    return this.#number("cleanupExpired", this.#sql`select public.action_cleanup_expired() as n`);
  }

  /** Ends a pool this store opened. */
  async close(): Promise<void> {
    if (this.#owned) await this.#sql.end({ timeout: 5 });
  }

  #bool(method: string, query: Promise<{ ok: boolean }[]>): Promise<boolean> {
    return this.#run(method, async () => (await query)[0]?.ok === true);
  }

  #number(method: string, query: Promise<{ n: string }[]>): Promise<number> {
    return this.#run(method, async () => Number((await query)[0]?.n ?? 0));
  }

  /** Names this store and the method in any error, so logs say what was unreachable. */
  async #run<T>(method: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      if (error instanceof RangeError) throw error;
      const message = error instanceof Error ? error.message : String(error);
      throw new Error(`postgres action store: ${method} failed: ${message}`, { cause: error });
    }
  }
}

function toRecord(row: RecordRow): ActionRecord {
  return {
    key: row.action_key,
    actionType: row.action_type,
    target: row.target,
    signalId: row.signal_id,
    paramsHash: row.params_hash,
    status: row.status,
    result: row.status === "completed" ? row.result : null,
    error: row.error,
    attemptCount: row.attempt_count,
    createdAt: row.created_at,
    executedAt: row.executed_at,
    expiresAt: row.expires_at,
    leaseExpiresAt: row.status === "processing" ? row.locked_until : null,
  };
}
