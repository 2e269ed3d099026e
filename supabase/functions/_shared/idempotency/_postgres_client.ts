/**
 * A `npm:postgres` client that survives database restarts, crashes and killed backends.
 *
 * Why this exists: postgres.js 3.4.9 (porsager/postgres issues 1066, 1154, 1208; denoland/deno issue 34667)
 * defers small writes behind `setImmediate(nextWrite)`. When the server closes the socket first, two things
 * go wrong inside the driver's private `Connection` closure, where no caller can reach:
 *
 * 1. `nextWrite` runs with `socket === null` and throws `TypeError: Cannot read properties of null (reading
 *    'write')` from the immediate callback, outside every promise: the process (or the Supabase isolate, with
 *    every request in it) exits.
 * 2. The close handler clears the pending immediate without resetting its handle, so that `Connection` never
 *    schedules a write again: its next startup message stays buffered, it hangs until `connect_timeout`, and
 *    a query queued on it may wait for ever. (This is where the 5.4 s recovery after a restart came from,
 *    together with the driver's backoff, which grows with every failed connection and never resets.)
 *
 * The remedy here changes nothing in the installed package (`supabase functions deploy` fetches it from the
 * registry itself, so a patched `node_modules` would not ship) and copies no code from the proposed fixes:
 *
 * - A process-wide guard on Deno's global `error` event cancels exactly this error (a `TypeError` with that
 *   message thrown by a function named `nextWrite` in postgres' `connection.js`) with `preventDefault()`,
 *   and recycles every pool made here. Any other uncaught error still ends the process as before.
 * - The same guard, on the `unhandledrejection` event, cancels a socket error that Deno's node layer raises
 *   from inside its own socket code (`write EPIPE`, `read ECONNRESET`, `connect ECONNREFUSED`, a write
 *   after FIN) on a socket that nobody listens to any more, and a driver connection error
 *   (`CONNECTION_DESTROYED`, ...) on a promise the driver made itself; in both, the error was created with
 *   no frame outside the runtime and the driver. That is the same defect seen from the other side:
 *   the driver's close handler removes every listener, including `error`, while a write is still in flight;
 *   Deno then emits `error` on a socket without a listener, which throws in a promise and ends the process.
 *   No caller could handle such an error: the driver already saw the socket close and failed its queries.
 * - Recycling: {@link ResilientPostgres} hands out one stable `sql` function that forwards to the current
 *   `postgres()` pool. On a sign of a poisoned connection (the guard firing, a connection-level error, a
 *   call past its deadline) it starts a new pool for the next queries and ends the old one with a grace
 *   period, which destroys its connections and rejects whatever still waits on them. No query is left
 *   hanging longer than that grace period, and the poisoned `Connection` objects are dropped.
 * - A fixed short reconnect backoff (50-100 ms) instead of the driver's growing one.
 * - {@link withDeadline} bounds a single query on the client side and sends the server a cancel request;
 *   unlike a `statement_timeout` startup parameter, this works through a transaction pooler (pgbouncer,
 *   Supavisor's port 6543), which rejects or ignores startup parameters.
 *
 * Proven by tests/faults/restart_test.ts (20+ restarts and backend kills during bursts of HTTP requests).
 */

// deno-lint-ignore no-import-prefix -- functions pin npm packages by full specifier (deploy convention)
import postgres from "npm:postgres@3.4.9";
import { IdempotencyError } from "./errors.ts";
import { isStoreOutage, sqlState } from "./_outage.ts";

/** Options for {@link ResilientPostgres}: a subset of postgres.js's own. */
export interface ResilientPostgresOptions {
  /**
   * Most connections in the pool.
   * @default 10
   */
  max?: number;
  /**
   * Named prepared statements (off behind a transaction pooler).
   * @default true
   */
  prepare?: boolean;
  /**
   * Seconds to wait for a new connection.
   * @default 5
   */
  connectTimeoutSeconds?: number;
  /**
   * Seconds an idle connection is kept; `0` keeps it.
   * @default 0
   */
  idleTimeoutSeconds?: number;
  /**
   * `application_name` of the connections, as `pg_stat_activity` shows it.
   * @default "supabase-edge-function"
   */
  applicationName?: string;
  /**
   * Seconds the old pool's queries may still finish after a recycle before its connections are destroyed.
   * @default 5
   */
  recycleGraceSeconds?: number;
}

/** Supavisor's transaction-mode port: a prepared statement may be missing on the next server connection. */
const TRANSACTION_POOLER_PORT = "6543";

/**
 * Whether named prepared statements are safe on `url`: not on Supavisor's transaction-mode port 6543, and
 * not when the URL says `prepare=false` (postgres.js's own URL option, never sent to the server: mark any
 * other transaction pooler's URL with it, e.g. a local pgbouncer's). Anything else: yes.
 *
 * @param url A Postgres connection string.
 * @returns `false` when the next transaction may run on a server connection that lacks the statement.
 * @example Open a pool that fits the pooler
 * ```ts
 * import { preparedStatementsSupported } from "./pool.ts";
 *
 * console.assert(!preparedStatementsSupported("postgresql://u:p@db.example.com:6543/postgres"));
 * console.assert(!preparedStatementsSupported("postgresql://u:p@127.0.0.1:54329/postgres?prepare=false"));
 * console.assert(preparedStatementsSupported("postgresql://u:p@db.example.com:5432/postgres"));
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

/** A query of a deadline that passed: the client gave up waiting (and asked the server to cancel it). */
export class QueryTimeoutError extends Error {
  /** Stable code, so that the outage classifier and logs can tell it apart. */
  readonly code = "QUERY_TIMEOUT";

  /**
   * @param ms the deadline that passed, in milliseconds.
   */
  constructor(ms: number) {
    super(`no answer from the database within ${ms} ms; the query was cancelled`);
    this.name = "QueryTimeoutError";
  }
}

/** Socket errors with no listener left, raised inside Deno's node layer: see the module comment. */
const ORPHAN_SOCKET_ERRORS = new Set([
  "EPIPE",
  "ECONNRESET",
  "ECONNREFUSED",
  "ETIMEDOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_DESTROYED",
  "CONNECTION_ENDED",
  "CONNECT_TIMEOUT",
]);

/**
 * Whether `error` is a socket or connection error (`EPIPE`, `ECONNRESET`, `ECONNREFUSED`, `ETIMEDOUT`, the
 * driver's `CONNECTION_*`) created with no frame outside the runtime and postgres.js's own sources: an
 * `error` event on a socket whose listeners the driver already removed, or a promise the driver made and
 * nobody can await. Only the frames where the error was created count: the driver appends the origin of
 * the first query it failed (application frames) to an error it then hands to other promises as well.
 */
export function isOrphanSocketError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code !== "string" || !ORPHAN_SOCKET_ERRORS.has(code)) return false;
  const frames = (error.stack ?? "").split("\n").filter((line) => /^\s+at /.test(line));
  const origin = frames.findIndex((line) => /\bcachedError\b/.test(line));
  const created = origin < 0 ? frames : frames.slice(0, origin);
  return created.length > 0 &&
    created.every((line) =>
      /\(?ext:/.test(line) || line.includes("(<anonymous>)") ||
      /postgres@[^/]+\/node_modules\/postgres\/src\//.test(line)
    );
}

/** The error postgres.js 3.4.9 throws from its deferred write after the socket closed. */
export function isNextWriteDefect(error: unknown): boolean {
  return error instanceof TypeError &&
    error.message === "Cannot read properties of null (reading 'write')" &&
    /\bnextWrite\b[^\n]*postgres[^\n]*connection\.js/.test(error.stack ?? "");
}

/** Driver error codes (not SQLSTATEs) that mean the connection, not the statement, failed. */
const CONNECTION_FAILURES = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "QUERY_TIMEOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
]);

/** Whether `error` (or its cause) says the connection failed, so the pool may be poisoned. */
export function isConnectionFailure(error: unknown): boolean {
  for (let e = error, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && CONNECTION_FAILURES.has(code)) return true;
  }
  return false;
}

/**
 * Whether `error` means the database is unreachable or timed out (a connection failure, an outage SQLSTATE),
 * so the answer is a 503 with `Retry-After`, never a 500.
 *
 * @param error What a query or transaction rejected with.
 * @returns `true` for an outage.
 */
export function isDatabaseOutage(error: unknown): boolean {
  return isConnectionFailure(error) || (sqlState(error) !== null && isStoreOutage(error));
}

/**
 * How a client should see a failed transaction of a function's own work (rolled back, nothing written): an
 * unreachable or timed-out database (a connection failure, an outage SQLSTATE) is `DATABASE_UNAVAILABLE`
 * (503, `Retry-After: 1`), so the client retries; anything else (a constraint, a bug) is `INTERNAL_ERROR`.
 *
 * @param error what the transaction rejected with.
 * @returns the error to answer with.
 * @example A restart mid-transaction
 * ```ts
 * import { transactionFailure } from "./_postgres_client.ts";
 *
 * const closed = Object.assign(new Error("write CONNECTION_CLOSED"), { code: "CONNECTION_CLOSED" });
 * console.assert(transactionFailure(closed).code === "DATABASE_UNAVAILABLE");
 * ```
 */
export function transactionFailure(error: unknown): IdempotencyError {
  if (isDatabaseOutage(error)) {
    return new IdempotencyError("DATABASE_UNAVAILABLE", "The database is unavailable; retry later", {
      retryAfterSeconds: 1,
      cause: error,
    });
  }
  return new IdempotencyError("INTERNAL_ERROR", "The function failed; retry with the same idempotency key", {
    cause: error,
  });
}

/** The pools the defect guard recycles: the guard is process-wide, so what it protects is too. */
const livePools = new Set<ResilientPostgres>();
/** How many times the guard cancelled the driver's crash in this process (the fault test reads it). */
let defectsCaught = 0;
/** How many orphan socket errors (see {@link isOrphanSocketError}) the guard has cancelled. */
let orphanSocketErrors = 0;

/** Cancels the driver's socket defects (either kind, whichever event carries it); recycles the pools. */
function cancelDriverDefect(event: Event, error: unknown): void {
  if (isNextWriteDefect(error)) defectsCaught++;
  else if (isOrphanSocketError(error)) orphanSocketErrors++;
  else return;
  event.preventDefault();
  const reason = isNextWriteDefect(error)
    ? "postgres.js nextWrite on a closed socket"
    : `socket error without a listener: ${error}`;
  // Not now: in a macrotask. `nextWrite` throws from a `setImmediate` callback; Deno (as Node) then keeps the
  // rest of that batch of immediates in a separate "outstanding" list and runs it right after this listener
  // and the pending ticks and microtasks. `clearImmediate` unlinks an immediate from the main list only, so
  // clearing the outstanding list's first one in that window leaves it there, destroyed, and the next run
  // dereferences its missing predecessor: `TypeError: Cannot read properties of undefined (reading
  // '_idleNext')` in `runImmediates`, again on every turn (see `settleUnlessClosed` for the main cause).
  // Ending a pool can clear immediates (`end()` terminates connections, `terminate()` clears a pending
  // write), so it waits until the batch has run.
  setTimeout(() => {
    for (const pool of livePools) pool.recycle(reason);
  }, 0);
}

function onUncaughtError(event: ErrorEvent): void {
  cancelDriverDefect(event, event.error);
}

function onUnhandledRejection(event: PromiseRejectionEvent): void {
  cancelDriverDefect(event, event.reason);
}

/** How many postgres.js `nextWrite` crashes the guard has cancelled in this process. */
export function postgresDefectsCaught(): { nextWrite: number; orphanSocketErrors: number } {
  return { nextWrite: defectsCaught, orphanSocketErrors };
}

/**
 * Installs the guard on the global `error` and `unhandledrejection` events (each {@link ResilientPostgres}
 * does). Safe to call again: `addEventListener` ignores the same listener twice.
 */
export function installPostgresDefectGuard(): void {
  globalThis.addEventListener("error", onUncaughtError);
  globalThis.addEventListener("unhandledrejection", onUnhandledRejection);
}

/**
 * The callback's outcome for postgres.js's `begin`, unless `begin` settled first (`state.settled`), which it
 * does before its callback only when the transaction's connection closed: then the outcome never comes.
 *
 * Why: once its callback settles, postgres.js writes `commit`, or `rollback` after a failure, on the
 * transaction's connection, even after that connection's socket closed (a restart, a killed backend). Such
 * a write is the one `nextWrite` defers with `setImmediate` and then throws from on the null socket (see the
 * module comment); and when that throw is cancelled while other connections close in the same turn, their
 * close handler's `clearImmediate` reaches an immediate of the interrupted batch that Deno's (and Node's)
 * timer list no longer links, and the runtime's next `runImmediates` dereferences a missing neighbour:
 * `TypeError: Cannot read properties of undefined (reading '_idleNext')`, thrown again on every turn, which
 * ended the process. The transaction is gone with its session anyway, and `begin` has already rejected
 * (postgres.js races the callback against the connection's close), so withholding the outcome loses
 * nothing: the driver never writes to the dead connection, and its pending scope is garbage-collected. A
 * failure waits one macrotask first, long enough for a close that caused it to settle `begin`.
 */
async function settleUnlessClosed(outcome: unknown, state: { settled: boolean }): Promise<unknown> {
  try {
    // postgres.js runs an array of queries as their `Promise.all`
    const result = await (Array.isArray(outcome) ? Promise.all(outcome) : outcome);
    if (state.settled) return await new Promise<never>(() => {});
    return result;
  } catch (error) {
    await new Promise((resolve) => setTimeout(resolve, 0));
    if (state.settled) return await new Promise<never>(() => {});
    throw error;
  }
}

/** A reconnect delay in seconds: short and jittered, whatever the driver's failure count. */
function reconnectBackoff(): number {
  return 0.05 + Math.random() * 0.05;
}

/**
 * A postgres.js pool that replaces itself when its connections may be poisoned; see the module comment.
 *
 * @example Share one pool between a store and a function
 * ```ts
 * const url = Deno.env.get("SUPABASE_DB_URL") ?? "postgresql://postgres:postgres@127.0.0.1:54322/postgres";
 * const pool = new ResilientPostgres(url);
 * const [row] = await withDeadline(pool.sql`select 1 as one`, 3000);
 * await pool.end();
 * ```
 */
export class ResilientPostgres {
  /** Forwards every call and property to the current pool; stable across recycles. */
  readonly sql: postgres.Sql;
  /** How many times this pool was replaced. */
  recycles = 0;
  readonly #url: string;
  readonly #options: ResilientPostgresOptions;
  #current: postgres.Sql;
  #lastRecycle = 0;

  /**
   * Opens no connection yet: postgres.js connects on the first query.
   *
   * @param url the connection string.
   * @param options pool settings.
   */
  constructor(url: string, options: ResilientPostgresOptions = {}) {
    this.#url = url;
    this.#options = options;
    this.#current = this.#open();
    const current = () => this.#current;
    this.sql = new Proxy(function () {} as unknown as postgres.Sql, {
      apply: (_target, _this, args) => (current() as unknown as (...a: unknown[]) => unknown)(...args),
      get: (_target, property) => {
        const pool = current();
        const value = Reflect.get(pool, property);
        if (typeof value !== "function") return value;
        if (property === "end") return (options?: { timeout?: number }) => this.end(options?.timeout ?? 5);
        if (property !== "begin") return value.bind(pool);
        return (...args: unknown[]) => {
          const state = { settled: false };
          const callback = args.at(-1) as (tx: postgres.TransactionSql) => unknown;
          const begin = (value as (...a: unknown[]) => Promise<unknown>).apply(pool, [
            ...args.slice(0, -1),
            (tx: postgres.TransactionSql) => settleUnlessClosed(callback(tx), state),
          ]);
          // A transaction that fails on its connection tells us the pools may be poisoned, as a store call does.
          return begin.then(
            (result) => (state.settled = true, result),
            (error: unknown) => {
              state.settled = true;
              throw this.observe(error);
            },
          );
        };
      },
    });
    installPostgresDefectGuard();
    livePools.add(this);
  }

  #open(): postgres.Sql {
    return postgres(this.#url, {
      max: this.#options.max ?? 10,
      prepare: this.#options.prepare ?? true,
      connect_timeout: this.#options.connectTimeoutSeconds ?? 5,
      idle_timeout: this.#options.idleTimeoutSeconds ?? 0,
      backoff: reconnectBackoff,
      onnotice: () => {},
      connection: { application_name: this.#options.applicationName ?? "supabase-edge-function" },
    });
  }

  /**
   * Sends the next queries to a fresh pool and ends the old one after the grace period. At most one recycle
   * per 100 ms: one failure of many queries at once replaces the pool once.
   *
   * @param reason why, for the log.
   */
  recycle(reason: string): void {
    const now = performance.now();
    if (!livePools.has(this) || now - this.#lastRecycle < 100) return;
    this.#lastRecycle = now;
    this.recycles++;
    const old = this.#current;
    this.#current = this.#open();
    console.warn(`[postgres] replacing the connection pool: ${reason}`);
    old.end({ timeout: this.#options.recycleGraceSeconds ?? 5 }).catch(() => {});
  }

  /**
   * Recycles every pool of this process when `error` is a connection failure; returns `error` so a caller
   * can rethrow it.
   *
   * @param error what a query rejected with.
   * @returns the same error.
   */
  observe(error: unknown): unknown {
    return observeDatabaseError(error);
  }

  /**
   * Ends the current pool once its queries are done (at most `timeoutSeconds`).
   *
   * @param timeoutSeconds the longest wait before connections are destroyed.
   */
  async end(timeoutSeconds = 5): Promise<void> {
    livePools.delete(this);
    await this.#current.end({ timeout: timeoutSeconds });
  }
}

/**
 * Recycles every live pool when `error` is a connection failure: every pool of this process talks to the same
 * server, so what closed one's connections closed the others'. For callers that hold only a pool's `sql`.
 *
 * @param error what a query rejected with.
 * @returns the same error.
 */
export function observeDatabaseError(error: unknown): unknown {
  if (isConnectionFailure(error)) {
    const reason = `connection failure: ${error instanceof Error ? error.message : String(error)}`;
    for (const pool of livePools) pool.recycle(reason);
  }
  return error;
}

/**
 * Waits for `query` at most `ms` milliseconds. Past that, it asks the server to cancel the statement (which
 * rolls its transaction back, so nothing is half-written) and rejects with {@link QueryTimeoutError}. If the
 * query still succeeds after the deadline (the cancel came too late), `onLateResult` gets its result so the
 * caller can undo it.
 *
 * @param query a pending postgres.js query (not yet awaited): it has the driver's `cancel`.
 * @param ms the deadline in milliseconds.
 * @param onLateResult called with a result that arrived after the deadline.
 * @returns the query's result.
 * @throws {QueryTimeoutError} when the deadline passes first; or what the query rejects with.
 */
export function withDeadline<T>(
  query: PromiseLike<T> & { cancel(): unknown },
  ms: number,
  onLateResult?: (result: T) => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let late = false;
    const timer = setTimeout(() => {
      late = true;
      cancelQuietly(query);
      reject(new QueryTimeoutError(ms));
    }, ms);
    query.then(
      (result) => {
        clearTimeout(timer);
        if (late) onLateResult?.(result);
        else resolve(result);
      },
      (error) => {
        clearTimeout(timer);
        if (!late) reject(error);
      },
    );
  });
}

/**
 * `query.cancel()` drops the promise of its cancel request, so a cancel that cannot reach the server (the
 * very case a deadline is for) becomes an unhandled rejection, which ends a Deno process. postgres.js 3.4.9
 * keeps the cancel function on the query as `canceller`; calling it ourselves keeps that promise.
 */
function cancelQuietly(query: object): void {
  const q = query as { canceller?: ((query: object) => Promise<void>) | null };
  const canceller = q.canceller;
  if (typeof canceller !== "function") return;
  q.canceller = null;
  canceller(query).catch(() => {});
}
