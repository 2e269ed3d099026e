/**
 * `withIdempotentTransaction`: exactly-once for the work itself when its side effects live in the same
 * Postgres. The handler runs inside a transaction it is given, and the stored response is written by
 * `idempotency_complete` inside that same transaction: the rows and the completed record commit together or
 * not at all. The completion checks the lease token (fencing): if another request took the key over, it
 * returns false and the transaction rolls back, so two runs can never both commit.
 *
 * Work with effects outside the database uses named steps (`ctx.step`), recorded with the key as each
 * completes, so a retry skips them and reuses their results.
 */

import type postgres from "npm:postgres@3.4.9";
import { type Caller, callerFromUserId, createJwtCallerResolver } from "./auth.ts";
import { toStoredResponse } from "./_codec.ts";
import { bearerToken, decodeJwtClaimsUnverified } from "./jwt.ts";
import { IdempotencyError } from "./errors.ts";
import { getIdempotencyKey } from "./key.ts";
import { isLeasePair, splitLease } from "./keyless.ts";
import type { IdempotentHandler } from "./middleware.ts";
import {
  type Claim,
  type ClaimedRun,
  createPipeline,
  errorOutcome,
  firstResponse,
  freshRequest,
  type HandlerOutcome,
  isStorable,
  leaseLost,
  type LeaseState,
  log,
  type Pipeline,
  type ReadRequest,
  releaseKey,
  runHandler,
  type RunMode,
  startRenewal,
} from "./_pipeline.ts";
import { type IdempotencyOptions, resolveOptions } from "./options.ts";
import { sharedPool } from "./pool.ts";
import { transactionFailure } from "./_postgres_client.ts";
import type { BeginInput, BeginResult, Lease, StoredResponse } from "./store.ts";
import { type PostgresClient, PostgresStore, type PostgresTransaction } from "./stores/postgres.ts";
import { stepKeyOf } from "./steps.ts";

/**
 * The verified caller a transactional handler gets: no second JWT check in the function.
 *
 * @example Whose rows to write
 * ```ts
 * import type { TransactionCaller } from "./transactional.ts";
 *
 * const owner = (caller: TransactionCaller) => caller.kind === "user" ? caller.userId : null;
 * console.assert(owner({ kind: "service", userId: null, role: "service_role" }) === null);
 * ```
 */
export interface TransactionCaller {
  /** `user` (a JWT with `sub`), `service` (the service_role key) or `anonymous`. */
  readonly kind: Caller["kind"];
  /** The user's id (the JWT `sub`); `null` for the service and anonymous callers. */
  readonly userId: string | null;
  /** The JWT's `role` claim (`authenticated`, `service_role`, `anon`); `null` without a token. */
  readonly role: string | null;
}

/**
 * What a transactional handler runs with.
 *
 * @example Write through the transaction, call out through a step
 * ```ts
 * import type { TransactionContext } from "./transactional.ts";
 *
 * async function work(_req: Request, { tx, caller, step }: TransactionContext): Promise<Response> {
 *   const receipt = await step("charge", (stepKey) => Promise.resolve({ id: `charge-${stepKey}` }));
 *   await tx`insert into public.notifications (user_id, message) values (${caller.userId}, ${receipt.id})`;
 *   return Response.json(receipt, { status: 201 });
 * }
 * console.assert(typeof work === "function");
 * ```
 */
export interface TransactionContext {
  /** The open transaction: every write through it commits together with the stored response, or not at all. */
  readonly tx: PostgresTransaction;
  /** The verified caller. */
  readonly caller: TransactionCaller;
  /** The request's idempotency key, or `null` for a call without one (then nothing is stored). */
  readonly key: string | null;
  /** 1 for the first run of a key; more for a retry after a failure, a crash or a takeover. */
  readonly attempt: number;
  /**
   * Runs a named step at most once per key: its result is recorded (durably, outside `tx`) as soon as it
   * returns, and a later attempt gets the recorded result without running it again. `run` receives a key
   * derived from the idempotency key and the step name, to pass to the external service so that a call
   * made just before a crash is deduplicated there too. The result must be JSON.
   *
   * @param name The step's name, unique within the handler.
   * @param run The step's work; receives the derived key for the external service.
   * @returns The step's result: `run`'s, or the one recorded by an earlier attempt.
   */
  step<T>(name: string, run: (stepKey: string) => Promise<T>): Promise<T>;
}

/**
 * A handler that does its database work through `ctx.tx`.
 *
 * @example A handler
 * ```ts
 * import type { TransactionalHandler } from "./transactional.ts";
 *
 * const handler: TransactionalHandler = (_req, { attempt }) => Response.json({ attempt });
 * console.assert(typeof handler === "function");
 * ```
 */
export type TransactionalHandler = (req: Request, ctx: TransactionContext) => Response | Promise<Response>;

/**
 * Test-only seam: named points of a keyed run (the crash harness kills the process at one of them).
 *
 * @example Log each point
 * ```ts
 * import type { TransactionalHooks } from "./transactional.ts";
 *
 * const hooks: TransactionalHooks = { afterCommit: () => console.log("committed, not answered yet") };
 * console.assert(hooks.afterClaim === undefined);
 * ```
 */
export interface TransactionalHooks {
  /** The key is claimed (committed), the handler has not started. */
  afterClaim?: () => void | Promise<void>;
  /** The handler returned; its writes are not committed yet. */
  afterHandler?: () => void | Promise<void>;
  /** The handler's transaction (rows and stored response) committed; the client has no answer yet. */
  afterCommit?: () => void | Promise<void>;
  /** A step's result was recorded. */
  afterStep?: (name: string) => void | Promise<void>;
}

/**
 * Options of {@link withIdempotentTransaction}: those of `withIdempotency` but `store`, and these. Every
 * option of `withIdempotency` has the same meaning here (one request pipeline serves both). An option that
 * cannot apply to the chosen `claim` design is refused at wrap time with a `TypeError`, never ignored:
 * `lockWaitMs` with `"separate"`; with `"in-transaction"`, `keyless` (its pair of records is claimed apart
 * from the work), `onInFlight: "reject"` and `waitTimeoutMs` (a duplicate always waits on the first run's
 * row, up to `lockWaitMs`), `renewLease` and `maxRunSeconds` (no lease to renew before the commit). `store`
 * is refused too: the keys live in the database of `sql`.
 *
 * @example Claim inside the transaction for a short, database-only handler
 * ```ts
 * import type { TransactionalOptions } from "./transactional.ts";
 *
 * const options: TransactionalOptions = { functionName: "process-document", claim: "in-transaction" };
 * console.assert(options.claim === "in-transaction");
 * ```
 */
export interface TransactionalOptions extends Omit<IdempotencyOptions, "store"> {
  /**
   * The pool the transaction and the key records use.
   *
   * @default {sharedPool()} the isolate's shared pool (pool.ts)
   */
  sql?: PostgresClient;
  /**
   * Where the key is claimed. `"separate"`: its own round trip before the transaction, committed with
   * `synchronous_commit = off` (see `idempotency_begin_async`); duplicates get 409 at once, leases renew, and
   * steps are available. `"in-transaction"`: the claim is the transaction's first statement, so a duplicate
   * blocks on the row until the first commits and then replays, bounded by `lockWaitMs`; for short,
   * database-only handlers (no steps, no external calls).
   *
   * @default {"separate"}
   */
  claim?: "separate" | "in-transaction";
  /**
   * Longest a statement of the handler's transaction may run, in ms (`statement_timeout`).
   *
   * @default {10000}
   */
  statementTimeoutMs?: number;
  /**
   * `"in-transaction"` only: longest a duplicate waits for the first run's row, in ms.
   *
   * @default {5000}
   */
  lockWaitMs?: number;
  /**
   * `"separate"` only: longest a run's lease is renewed, in seconds: a run still going after this is presumed
   * hung (a driver that lost its connection without an error), its lease runs out and a retry can take the
   * key over (fencing keeps the hung run from committing). Supabase ends a request after 150 s anyway.
   *
   * @default {150}
   */
  maxRunSeconds?: number;
  /**
   * Test-only hooks at named points.
   *
   * @default {{}}
   */
  hooks?: TransactionalHooks;
}

/** Thrown inside the transaction to roll it back; never escapes this module. */
class Rollback extends Error {
  constructor(readonly reason: "not-stored" | "lease-lost") {
    super(reason);
  }
}

const isRollback = (error: unknown): boolean => error instanceof Rollback;

/** The transactional settings, defaults filled in. */
interface Settings {
  readonly claim: "separate" | "in-transaction";
  readonly statementTimeoutMs: number;
  readonly lockWaitMs: number;
  readonly maxRunMs: number;
  readonly hooks: TransactionalHooks;
  readonly sql: () => PostgresClient;
  /** Whether the caller's role comes from the bearer JWT (not with a custom `getUserId`). */
  readonly jwtRoles: boolean;
}

/**
 * Wraps a handler whose side effects live in this Postgres: each keyed request runs once, its rows and its
 * stored response commit in one transaction, and retries replay the stored response. The request pipeline
 * is `withIdempotency`'s (CORS, keys and keyless keys, rollout, caller rules, `onInFlight`, the 409 hint,
 * `onStoreError`, metrics); only the run differs.
 *
 * @param handler Does its writes through `ctx.tx`; gets the verified caller in `ctx.caller`.
 * @param options As for `withIdempotency` (without `store`), plus the pool, the claim design and timeouts.
 * @returns A `Deno.serve` handler, with live `metrics`.
 * @throws {TypeError | RangeError} at wrap time when `options` are invalid, or name an option that does not
 * apply to the chosen claim design (see {@link TransactionalOptions}).
 * @example Insert a row exactly once per key
 * ```ts
 * import { withIdempotentTransaction } from "./transactional.ts";
 *
 * const handler = withIdempotentTransaction(async (req, { tx, caller }) => {
 *   const { title } = await req.json();
 *   const [doc] = await tx`insert into public.documents (user_id, title, content, content_sha256, word_count)
 *     values (${caller.userId}, ${title}, '', '', 0) returning id`;
 *   return Response.json(doc, { status: 201 });
 * }, { functionName: "process-document" });
 * ```
 */
export function withIdempotentTransaction(
  handler: TransactionalHandler,
  options: TransactionalOptions,
): IdempotentHandler {
  const { sql, claim, statementTimeoutMs, lockWaitMs, maxRunSeconds, hooks, ...rest } = options;
  if ((rest as IdempotencyOptions).store !== undefined) {
    throw new TypeError(
      "store does not apply to withIdempotentTransaction: the keys live in the database of `sql`",
    );
  }
  const resolved = resolveOptions(rest);
  for (const [name, value] of Object.entries({ statementTimeoutMs, lockWaitMs, maxRunSeconds })) {
    if (value !== undefined && (!Number.isInteger(value) || value < 1)) {
      throw new RangeError(`${name} must be an integer of at least 1, got ${value}`);
    }
  }
  const design = claim ?? "separate";
  if (design !== "separate" && design !== "in-transaction") {
    throw new TypeError(`claim must be "separate" or "in-transaction", got ${design}`);
  }
  const inapplicable = design === "separate" ? { lockWaitMs } : {
    keyless: rest.keyless || undefined,
    onInFlight: rest.onInFlight === "reject" ? rest.onInFlight : undefined,
    waitTimeoutMs: rest.waitTimeoutMs,
    renewLease: rest.renewLease,
    maxRunSeconds,
  };
  for (const [name, value] of Object.entries(inapplicable)) {
    if (value !== undefined) {
      throw new TypeError(`${name} does not apply to claim: "${design}" (see TransactionalOptions)`);
    }
  }
  const settings: Settings = {
    claim: design,
    statementTimeoutMs: statementTimeoutMs ?? 10_000,
    lockWaitMs: lockWaitMs ?? 5_000,
    maxRunMs: (maxRunSeconds ?? 150) * 1000,
    hooks: hooks ?? {},
    sql: () => sql ?? sharedPool(),
    jwtRoles: resolved.getUserId === undefined,
  };
  const getCaller = resolved.getUserId
    ? callerFromUserId(resolved.getUserId)
    : createJwtCallerResolver(resolved.jwtSecret === undefined ? {} : { jwtSecret: resolved.jwtSecret });
  return createPipeline(transactionMode(handler, settings), resolved, getCaller);
}

/** The run half of the pipeline: the handler in a transaction that also completes the record. */
function transactionMode(handler: TransactionalHandler, s: Settings): RunMode {
  let claims: { sql: PostgresClient; store: PostgresStore } | undefined;
  // A new store when the pool changed: after closeSharedPool(), sharedPool() opens another, and a store
  // kept on the ended one would fail every claim. The asynchronous claim is safe here: the completion
  // commits synchronously in the same database.
  const store = () => {
    const sql = s.sql();
    if (claims?.sql !== sql) claims = { sql, store: new PostgresStore({ sql, asyncClaim: true }) };
    return claims.store;
  };
  const mode: RunMode = {
    store,
    unprotected: (ctx, req, _info, caller) => unkeyed(ctx, s, handler, req, caller),
    runClaimed: (ctx, run) => runSeparate(ctx, s, handler, run),
  };
  if (s.claim === "in-transaction") {
    mode.claimAndRun = (ctx, input, read) => claimInTransaction(ctx, s, handler, input, read, store());
  }
  return mode;
}

/** The verified caller with its role (from the JWT the pipeline verified); a custom `getUserId` gives none. */
function transactionCaller(caller: Caller, req: Request, s: Settings): TransactionCaller {
  const userId = caller.kind === "user" ? caller.userId : null;
  const token = s.jwtRoles ? bearerToken(req) : null;
  const role = token === null ? null : decodeJwtClaimsUnverified(token).role;
  return { kind: caller.kind, userId, role: typeof role === "string" ? role : null };
}

/**
 * No key (or a bypass, or fail-open): the handler still gets a transaction and the caller; nothing is
 * recorded, and a refused or failed request leaves nothing behind, as a keyed one does.
 */
async function unkeyed(
  ctx: Pipeline,
  s: Settings,
  handler: TransactionalHandler,
  req: Request,
  known?: Caller,
): Promise<Response> {
  const caller = transactionCaller(known ?? await ctx.getCaller(req), req, s);
  let outcome: HandlerOutcome | undefined;
  try {
    await inTransaction(s, async (tx) => {
      outcome = await runHandler(
        ctx,
        () => handler(req, context(tx.guarded, caller, null, 1, noSteps)),
        isRollback,
      );
      if (outcome.status >= 400) throw new Rollback("not-stored");
    });
  } catch (error) {
    if (!(error instanceof Rollback)) outcome = await transactionFailed(ctx, error);
  }
  return firstResponse(outcome!);
}

/**
 * Design (b), the default: the pipeline claimed in its own asynchronously committed transaction; run the
 * handler in a second one that completes the record with the lease token; release with `fail` outside.
 */
async function runSeparate(
  ctx: Pipeline,
  s: Settings,
  handler: TransactionalHandler,
  { lease, attempt, read, input }: ClaimedRun,
): Promise<Response> {
  await s.hooks.afterClaim?.();
  const caller = transactionCaller(read.caller, read.req, s);
  const key = getIdempotencyKey(read.req); // null for a keyless claim
  const state: LeaseState = { lost: false };
  const steps = stepRunner(s, input, lease, attempt);
  const renewal = startRenewal(ctx, lease, state, s.maxRunMs);
  let outcome: HandlerOutcome | undefined;
  let rolledBack: Rollback | undefined;
  try {
    await inTransaction(s, async (tx) => {
      const handlerCtx = context(tx.guarded, caller, key, attempt, steps);
      outcome = await runHandler(ctx, () => handler(freshRequest(read), handlerCtx), isRollback);
      await s.hooks.afterHandler?.();
      await renewal.stop();
      if (!isStorable(outcome.status, ctx.options)) throw new Rollback("not-stored");
      if (!(await completeIn(tx, lease, await toStoredResponse(outcome, ctx.options)))) {
        throw new Rollback("lease-lost");
      }
    });
  } catch (error) {
    await renewal.stop();
    if (error instanceof Rollback) rolledBack = error;
    else outcome = await transactionFailed(ctx, error);
  }
  if (rolledBack?.reason === "lease-lost") return fenced(ctx, state);
  if (rolledBack || outcome!.error !== undefined) {
    await releaseKey(ctx, lease, outcome!, state);
    return firstResponse(outcome!);
  }
  await s.hooks.afterCommit?.();
  return firstResponse(outcome!);
}

/**
 * Design (a): the claim is the transaction's first statement. A duplicate's insert waits on the uncommitted
 * row (up to `lockWaitMs`, then 409), then sees the completed record and replays, or claims afresh after a
 * rollback. A crash or a failure rolls the claim back with the work: no record, and the retry runs again.
 */
async function claimInTransaction(
  ctx: Pipeline,
  s: Settings,
  handler: TransactionalHandler,
  input: BeginInput,
  read: ReadRequest,
  store: PostgresStore,
): Promise<Claim | Response> {
  let claim: BeginResult | undefined;
  let outcome: HandlerOutcome | undefined;
  let finished: (() => void) | undefined;
  try {
    await inTransaction(s, async (tx) => {
      const claimStart = performance.now();
      // the store's deadline, SQLSTATE classification and USER_NOT_FOUND apply to this claim too
      claim = await store.beginInTransaction(tx.raw, input);
      ctx.recorder?.observe(ctx.options.functionName, "claim", (performance.now() - claimStart) / 1000);
      if (claim.outcome !== "started") return;
      ctx.metrics.started++;
      finished = ctx.timing.start(claim.recordId);
      await s.hooks.afterClaim?.();
      const caller = transactionCaller(read.caller, read.req, s);
      const handlerCtx = context(tx.guarded, caller, input.key, claim.attempt, stepsNeedSeparateClaim);
      outcome = await runHandler(ctx, () => handler(freshRequest(read), handlerCtx), isRollback);
      await s.hooks.afterHandler?.();
      if (!isStorable(outcome.status, ctx.options)) throw new Rollback("not-stored");
      const lease = { recordId: claim.recordId, leaseToken: claim.leaseToken };
      if (!(await completeIn(tx, lease, await toStoredResponse(outcome, ctx.options)))) {
        throw new Rollback("lease-lost");
      }
    });
  } catch (error) {
    finished?.();
    if (error instanceof Rollback) {
      if (error.reason === "lease-lost") return fenced(ctx, { lost: false });
      ctx.metrics.failed++; // rolled back with the claim: the retry runs again
      return firstResponse(outcome!);
    }
    if (claim === undefined && error instanceof IdempotencyError && error.code === "REQUEST_IN_PROGRESS") {
      // waited lockWaitMs for the first run's row: an in-flight duplicate, answered with the pipeline's hint
      return { outcome: "in_progress", recordId: "", retryAfterSeconds: ctx.options.lockTimeoutSeconds };
    }
    if (claim?.outcome !== "started") throw error; // the claim failed: the pipeline applies onStoreError
    ctx.metrics.failed++;
    return firstResponse(await transactionFailed(ctx, error));
  }
  finished?.();
  if (claim!.outcome !== "started") return claim!;
  await s.hooks.afterCommit?.();
  return firstResponse(outcome!);
}

/**
 * The work's transaction failed outside the handler (at its start, the completion or the commit): nothing
 * committed. An outage (the connection broke, the server restarts) is a 503 `DATABASE_UNAVAILABLE` with
 * `Retry-After`; anything else is a 500 (see `transactionFailure`).
 */
async function transactionFailed(ctx: Pipeline, error: unknown): Promise<HandlerOutcome> {
  const answer = transactionFailure(error);
  const outage = answer.code === "DATABASE_UNAVAILABLE";
  log(ctx, "error", `the transaction failed${outage ? " (the database is unavailable)" : ""}`, error);
  return { ...(await errorOutcome(answer)), error };
}

/** Another request took the key over and its result stands: this one's writes were rolled back. */
function fenced(ctx: Pipeline, state: LeaseState): never {
  leaseLost(ctx, state, "complete");
  throw new IdempotencyError(
    "REQUEST_IN_PROGRESS",
    "Another request with this idempotency key took it over",
    {
      retryAfterSeconds: 1,
    },
  );
}

/** One transaction of the handler: the raw transaction, the handler's guarded view of it, and its marker. */
interface Transaction {
  /** For the wrapper's own statements. */
  readonly raw: postgres.TransactionSql;
  /** What the handler gets: refuses every statement once the transaction has ended (see below). */
  readonly guarded: postgres.TransactionSql;
  /** A random value set transaction-locally at the start; the completion checks it. */
  readonly marker: string;
  /** Resolves when the transaction's settings (timeouts, marker) are in place. */
  readonly settled: Promise<void>;
}

/**
 * Runs `fn` in a transaction of the pool with statement and lock timeouts, an idle limit (a stalled handler
 * cannot hold its locks forever) and a transaction-local marker, all set by one statement.
 *
 * Why the marker and the guard: when the server closes the connection mid-transaction (a restart), postgres.js
 * rejects `begin` but the callback keeps running, and its later statements can reach the same client
 * connection once the pool reconnects it, on a new session in autocommit. A completion sent that way would
 * commit a record whose rows were rolled back. So the completion only writes where the marker is set (in
 * this very transaction), and the handler's statements are refused as soon as the transaction has ended.
 */
async function inTransaction(s: Settings, fn: (tx: Transaction) => Promise<void>): Promise<void> {
  const marker = crypto.randomUUID();
  const ms = `${s.statementTimeoutMs}ms`;
  // an in-transaction claim waits on a duplicate's row for at most lockWaitMs
  const lockMs = s.claim === "in-transaction" ? `${s.lockWaitMs}ms` : ms;
  let open = true;
  try {
    await s.sql().begin(async (raw) => {
      // sent at once and not awaited: it travels in the same round trip as the handler's first statement
      // (postgres.js pipelines on the transaction's connection); a failure aborts the transaction, so the
      // handler's statements fail too, and it is awaited before anything commits
      const settings = raw`select set_config('statement_timeout', ${ms}, true),
        set_config('idle_in_transaction_session_timeout', ${ms}, true), set_config('lock_timeout', ${lockMs}, true),
        set_config('idempotency.transaction', ${marker}, true)`.execute();
      settings.catch(() => {});
      await fn({ raw, guarded: guard(raw, () => open), marker, settled: settings.then(() => undefined) });
      await settings;
    });
  } finally {
    open = false;
  }
}

/** `tx`, refusing new statements once `isOpen()` is false. */
function guard(tx: postgres.TransactionSql, isOpen: () => boolean): postgres.TransactionSql {
  return new Proxy(tx, {
    apply(target, self, args) {
      if (!isOpen()) {
        // a connection failure to whoever classifies it (the function's 503, the pipeline's outage)
        const error = new Error("the transaction has ended (its connection closed): statement refused");
        throw Object.assign(error, { code: "CONNECTION_CLOSED" });
      }
      return Reflect.apply(target, self, args);
    },
  });
}

function context(
  tx: postgres.TransactionSql,
  caller: TransactionCaller,
  key: string | null,
  attempt: number,
  step: TransactionContext["step"],
): TransactionContext {
  return { tx, caller, key, attempt, step };
}

/** Without a key nothing is recorded: a step just runs, with a key of its own for the external service. */
const noSteps: TransactionContext["step"] = (name, run) => run(`${name}-${crypto.randomUUID()}`);

/** A step needs a committed record to hang on, which an in-transaction claim does not have until the end. */
const stepsNeedSeparateClaim: TransactionContext["step"] = () =>
  Promise.reject(new TypeError('ctx.step needs claim: "separate" (the default)'));

/**
 * Records each step as soon as it returns. The steps a previous attempt recorded are read at the first step
 * call, inside the handler: a retry of a handler without steps costs no query, and a database failure there
 * is answered as any failure of the handler's work (503 for an outage), not as an unexplained 500.
 */
function stepRunner(
  s: Settings,
  input: BeginInput,
  claimed: Lease,
  attempt: number,
): TransactionContext["step"] {
  // a keyless claim holds two records (keyless.ts): its steps hang on the first
  const [lease = claimed] = leasesOf(claimed);
  const sql = s.sql();
  let recorded: Promise<Map<string, unknown>> | undefined;
  const load = async () => {
    const done = new Map<string, unknown>();
    if (attempt === 1) return done;
    const rows = await sql<{ step_name: string; result: unknown }[]>`
      select step_name, result from public.idempotency_steps where record_id = ${lease.recordId}::uuid`;
    for (const row of rows) done.set(row.step_name, row.result);
    return done;
  };
  return async <T>(name: string, work: (stepKey: string) => Promise<T>): Promise<T> => {
    const done = await (recorded ??= load());
    if (done.has(name)) return done.get(name) as T;
    const result = await work(stepKeyOf(input, name));
    const [row] = await sql<{ ok: boolean }[]>`
      select public.idempotency_record_step(${lease.recordId}::uuid, ${lease.leaseToken}::uuid, ${name}::text,
        ${sql.json((result ?? null) as postgres.JSONValue)}::jsonb) as ok`;
    if (row?.ok !== true) throw new Rollback("lease-lost");
    done.set(name, result);
    await s.hooks.afterStep?.(name);
    return result;
  };
}

/**
 * `idempotency_complete` inside the handler's transaction: the fence (the lease token) and, through the
 * marker, proof that this statement runs in the transaction that did the work.
 */
async function completeIn(tx: Transaction, claimed: Lease, response: StoredResponse): Promise<boolean> {
  await tx.settled;
  for (const lease of leasesOf(claimed)) {
    if (!(await completeOne(tx, lease, response))) return false;
  }
  return true;
}

async function completeOne(tx: Transaction, lease: Lease, response: StoredResponse): Promise<boolean> {
  const { raw } = tx;
  const [row] = await raw<{ ok: boolean }[]>`
    select case when current_setting('idempotency.transaction', true) = ${tx.marker}::text
      then public.idempotency_complete(
        ${lease.recordId}::uuid, ${lease.leaseToken}::uuid, ${response.status}::integer,
        ${response.body}::bytea, ${response.encoding}::text, ${raw.json(response.headers)}::jsonb
      ) else false end as ok`;
  return row?.ok === true;
}

/** The records a claim holds: one, or a keyless claim's pair (both completed in the same transaction). */
function leasesOf(lease: Lease): Lease[] {
  return isLeasePair(lease) ? splitLease(lease) : [lease];
}
