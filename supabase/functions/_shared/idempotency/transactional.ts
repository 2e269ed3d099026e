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
import { buildResponse, fromStoredResponse, toStoredResponse } from "./_codec.ts";
import { bearerToken, decodeJwtClaimsUnverified } from "./jwt.ts";
import { errorResponse, IdempotencyError } from "./errors.ts";
import { requestFingerprint } from "./fingerprint.ts";
import { corsHeaders, REPLAY_HEADER, withCorsHeaders } from "./headers.ts";
import { getIdempotencyKey } from "./key.ts";
import { type IdempotencyOptions, type ResolvedIdempotencyOptions, resolveOptions } from "./options.ts";
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
 * Options of {@link withIdempotentTransaction}: those of `withIdempotency` but `store`, and these.
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
   * Longest a run's lease is renewed, in seconds: a run still going after this is presumed hung (a driver that
   * lost its connection without an error), its lease runs out and a retry can take the key over (fencing keeps
   * the hung run from committing). Supabase ends a request after 150 s anyway.
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

/** What the handler answered, body read. */
interface Outcome {
  status: number;
  headers: Headers;
  body: Uint8Array;
  error?: unknown;
}

interface Ctx {
  readonly handler: TransactionalHandler;
  readonly options: ResolvedIdempotencyOptions;
  readonly claim: "separate" | "in-transaction";
  readonly statementTimeoutMs: number;
  readonly lockWaitMs: number;
  readonly maxRunMs: number;
  readonly hooks: TransactionalHooks;
  readonly sql: () => PostgresClient;
  readonly getCaller: (req: Request) => Promise<TransactionCaller>;
}

const TRANSIENT_CLIENT_ERRORS = new Set([408, 409, 425, 429]);

/**
 * Wraps a handler whose side effects live in this Postgres: each keyed request runs once, its rows and its
 * stored response commit in one transaction, and retries replay the stored response.
 *
 * @param handler Does its writes through `ctx.tx`; gets the verified caller in `ctx.caller`.
 * @param options As for `withIdempotency` (without `store`), plus the pool, the claim design and timeouts.
 * @returns A `Deno.serve` handler.
 * @throws {TypeError | RangeError} at wrap time when `options` are invalid.
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
): (req: Request) => Promise<Response> {
  const { sql, claim, statementTimeoutMs, lockWaitMs, maxRunSeconds, hooks, ...rest } = options;
  const resolved = resolveOptions(rest);
  const ctx: Ctx = {
    handler,
    options: resolved,
    claim: claim ?? "separate",
    statementTimeoutMs: statementTimeoutMs ?? 10_000,
    lockWaitMs: lockWaitMs ?? 5_000,
    maxRunMs: (maxRunSeconds ?? 150) * 1000,
    hooks: hooks ?? {},
    sql: () => sql ?? sharedPool(),
    getCaller: callerResolver(resolved),
  };
  for (const [name, value] of Object.entries({ statementTimeoutMs, lockWaitMs, maxRunSeconds })) {
    if (value !== undefined && (!Number.isInteger(value) || value < 1)) {
      throw new RangeError(`${name} must be an integer of at least 1, got ${value}`);
    }
  }
  if (ctx.claim !== "separate" && ctx.claim !== "in-transaction") {
    throw new TypeError(`claim must be "separate" or "in-transaction", got ${ctx.claim}`);
  }
  return async (req) => {
    if (resolved.cors && req.method === "OPTIONS") {
      return new Response(null, { status: 204, headers: corsHeaders });
    }
    let response: Response;
    try {
      response = await route(ctx, req);
    } catch (error) {
      response = errorResponse(asIdempotencyError(ctx, error));
    }
    return resolved.cors ? withCorsHeaders(response) : response;
  };
}

/** The verified caller with its role; a custom `getUserId` gives no role. */
function callerResolver(options: ResolvedIdempotencyOptions): (req: Request) => Promise<TransactionCaller> {
  if (options.getUserId) {
    const resolve = callerFromUserId(options.getUserId);
    return async (req) => ({ ...flatten(await resolve(req)), role: null });
  }
  const resolve = createJwtCallerResolver(
    options.jwtSecret === undefined ? {} : { jwtSecret: options.jwtSecret },
  );
  return async (req) => {
    const caller = await resolve(req); // verifies the signature (when the secret is known) and the expiry
    const token = bearerToken(req);
    const role = token === null ? null : decodeJwtClaimsUnverified(token).role;
    return { ...flatten(caller), role: typeof role === "string" ? role : null };
  };
}

function flatten(caller: Caller): Omit<TransactionCaller, "role"> {
  return { kind: caller.kind, userId: caller.kind === "user" ? caller.userId : null };
}

async function route(ctx: Ctx, req: Request): Promise<Response> {
  const key = getIdempotencyKey(req);
  if (key === null && ctx.options.required) {
    throw new IdempotencyError("KEY_REQUIRED", "This function needs an Idempotency-Key");
  }
  const caller = await ctx.getCaller(req);
  if (key === null || (caller.kind === "anonymous" && ctx.options.anonymous === "bypass")) {
    return await unkeyed(ctx, req, caller);
  }
  if (caller.kind === "anonymous" && ctx.options.anonymous === "reject") {
    throw new IdempotencyError("AUTH_REQUIRED", "An idempotency key needs a signed-in user");
  }
  const body = new Uint8Array(await req.arrayBuffer());
  const input = beginInput(ctx, req, body, key, caller);
  const run = { req, body, caller, key, input };
  return ctx.claim === "separate" ? await separateClaim(ctx, run) : await claimInTransaction(ctx, run);
}

/** No key: the handler still gets a transaction and the caller; nothing is recorded. */
async function unkeyed(ctx: Ctx, req: Request, caller: TransactionCaller): Promise<Response> {
  let outcome: Outcome | undefined;
  try {
    await inTransaction(ctx, async (tx) => {
      outcome = await runHandler(ctx, req, context(tx.guarded, caller, null, 1, noSteps));
      // a refused or failed request leaves nothing behind, as a keyed one does
      if (outcome.status >= 400) throw new Rollback("not-stored");
    });
  } catch (error) {
    if (!(error instanceof Rollback)) throw error;
  }
  return answer(outcome!);
}

interface Run {
  req: Request;
  body: Uint8Array;
  caller: TransactionCaller;
  key: string;
  input: BeginInput;
}

function beginInput(
  ctx: Ctx,
  req: Request,
  body: Uint8Array,
  key: string,
  caller: TransactionCaller,
): BeginInput {
  const { pathname, search } = new URL(req.url);
  const fingerprint = requestFingerprint({
    method: req.method,
    path: pathname + search,
    body,
    contentType: req.headers.get("content-type"),
    caller: caller.kind,
  });
  const { functionName, ttlSeconds, lockTimeoutSeconds } = ctx.options;
  return { key, userId: caller.userId, functionName, fingerprint, ttlSeconds, lockTimeoutSeconds };
}

/**
 * Design (b), the default: claim in its own asynchronously committed transaction, run the handler in a
 * second one that completes the record with the lease token; release with `idempotency_fail` outside.
 */
async function separateClaim(ctx: Ctx, run: Run): Promise<Response> {
  const store = new PostgresStore({ sql: ctx.sql() });
  let claim: BeginResult;
  try {
    claim = await store.beginAsync(run.input);
    if (claim.outcome === "in_progress" && ctx.options.onInFlight === "wait") {
      claim = await waitFor(ctx, store, run.input);
    }
  } catch (error) {
    throw storeUnavailable(ctx, "begin", error);
  }
  if (claim.outcome !== "started") return await settle(claim);
  await ctx.hooks.afterClaim?.();
  const lease: Lease = { recordId: claim.recordId, leaseToken: claim.leaseToken };
  const steps = await stepRunner(ctx, run, lease, claim.attempt);
  const renewal = startRenewal(ctx, store, lease);
  let outcome: Outcome | undefined;
  let rolledBack: Rollback | undefined;
  try {
    await inTransaction(ctx, async (tx) => {
      outcome = await runHandler(
        ctx,
        run.req,
        context(tx.guarded, run.caller, run.key, claim.attempt, steps),
        run,
      );
      await ctx.hooks.afterHandler?.();
      await renewal.stop();
      if (!isStorable(outcome.status, ctx.options)) throw new Rollback("not-stored");
      if (!(await completeIn(tx, lease, await toStoredResponse(outcome, ctx.options)))) {
        throw new Rollback("lease-lost");
      }
    });
  } catch (error) {
    await renewal.stop();
    if (!(error instanceof Rollback)) {
      // the handler's transaction failed (the database refused the work, or the connection broke)
      ctx.options.logger.error(`[idempotency] ${ctx.options.functionName}: the transaction failed`, error);
      outcome = { ...(await errorOutcome(transactionFailure(error))), error };
    } else rolledBack = error;
  }
  if (rolledBack?.reason === "lease-lost") return leaseLost(ctx);
  if (rolledBack || outcome!.error !== undefined) {
    await release(store, lease, outcome!, ctx);
    return answer(outcome!);
  }
  await ctx.hooks.afterCommit?.();
  return answer(outcome!);
}

/**
 * Design (a): the claim is the transaction's first statement. A duplicate's insert waits on the uncommitted
 * row (up to `lockWaitMs`), then sees the completed record and replays, or claims afresh after a rollback.
 * A crash or a failure rolls the claim back with the work: no record, and the retry runs again.
 */
async function claimInTransaction(ctx: Ctx, run: Run): Promise<Response> {
  let result: { claim: BeginResult; outcome?: Outcome } | undefined;
  try {
    await inTransaction(ctx, async (tx) => {
      const claim = await new PostgresStore({ sql: ctx.sql() }).beginInTransaction(tx.raw, run.input);
      result = { claim };
      if (claim.outcome !== "started") return;
      await ctx.hooks.afterClaim?.();
      const outcome = await runHandler(
        ctx,
        run.req,
        context(tx.guarded, run.caller, run.key, claim.attempt, stepsNeedSeparateClaim),
        run,
      );
      result.outcome = outcome;
      await ctx.hooks.afterHandler?.();
      if (!isStorable(outcome.status, ctx.options)) throw new Rollback("not-stored");
      const lease = { recordId: claim.recordId, leaseToken: claim.leaseToken };
      if (!(await completeIn(tx, lease, await toStoredResponse(outcome, ctx.options)))) {
        throw new Rollback("lease-lost");
      }
    });
  } catch (error) {
    if (error instanceof Rollback) return answer(result!.outcome!);
    if (result?.claim.outcome !== "started") throw storeUnavailable(ctx, "begin", error);
    ctx.options.logger.error(`[idempotency] ${ctx.options.functionName}: the transaction failed`, error);
    return answer(await errorOutcome(transactionFailure(error)));
  }
  if (result!.claim.outcome !== "started") return await settle(result!.claim);
  await ctx.hooks.afterCommit?.();
  return answer(result!.outcome!);
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
async function inTransaction(ctx: Ctx, fn: (tx: Transaction) => Promise<void>): Promise<void> {
  const marker = crypto.randomUUID();
  const ms = `${ctx.statementTimeoutMs}ms`;
  // an in-transaction claim waits on a duplicate's row for at most lockWaitMs
  const lockMs = ctx.claim === "in-transaction" ? `${ctx.lockWaitMs}ms` : ms;
  let open = true;
  try {
    await ctx.sql().begin(async (raw) => {
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
        // the driver's code for a closed connection, so the function answers it as an outage (503)
        const message = "the transaction has ended (its connection closed): statement refused";
        throw Object.assign(new Error(message), { code: "CONNECTION_CLOSED" });
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

/** Loads the steps a previous attempt recorded, and records each new one as soon as it returns. */
async function stepRunner(
  ctx: Ctx,
  run: Run,
  lease: Lease,
  attempt: number,
): Promise<TransactionContext["step"]> {
  const sql = ctx.sql();
  const done = new Map<string, unknown>();
  if (attempt > 1) {
    const rows = await sql<{ step_name: string; result: unknown }[]>`
      select step_name, result from public.idempotency_steps where record_id = ${lease.recordId}::uuid`;
    for (const row of rows) done.set(row.step_name, row.result);
  }
  return async <T>(name: string, work: (stepKey: string) => Promise<T>): Promise<T> => {
    if (done.has(name)) return done.get(name) as T;
    const result = await work(stepKeyOf(run.input, name));
    const [row] = await sql<{ ok: boolean }[]>`
      select public.idempotency_record_step(${lease.recordId}::uuid, ${lease.leaseToken}::uuid, ${name}::text,
        ${sql.json((result ?? null) as postgres.JSONValue)}::jsonb) as ok`;
    if (row?.ok !== true) throw new Rollback("lease-lost");
    done.set(name, result);
    await ctx.hooks.afterStep?.(name);
    return result;
  };
}

async function runHandler(
  ctx: Ctx,
  req: Request,
  handlerCtx: TransactionContext,
  run?: Run,
): Promise<Outcome> {
  const fresh = run
    ? new Request(req.url, { method: req.method, headers: req.headers, body: bodyOf(req, run.body) })
    : req;
  try {
    const response = await ctx.handler(fresh, handlerCtx);
    return {
      status: response.status,
      headers: new Headers(response.headers),
      body: new Uint8Array(await response.arrayBuffer()),
    };
  } catch (error) {
    if (error instanceof Rollback) throw error;
    ctx.options.logger.error(
      `[idempotency] ${ctx.options.functionName}: the handler threw; rolled back`,
      error,
    );
    return { ...(await errorOutcome(internalError())), error };
  }
}

function bodyOf(req: Request, body: Uint8Array): BodyInit | null {
  return req.method === "GET" || req.method === "HEAD" ? null : body.slice();
}

async function errorOutcome(error: IdempotencyError): Promise<Outcome> {
  const response = errorResponse(error);
  return {
    status: response.status,
    headers: response.headers,
    body: new Uint8Array(await response.arrayBuffer()),
  };
}

function answer(outcome: Outcome): Response {
  const headers = new Headers(outcome.headers);
  headers.delete("content-length");
  headers.set(REPLAY_HEADER, "false");
  return buildResponse(outcome.status, headers, outcome.body);
}

function isStorable(status: number, options: ResolvedIdempotencyOptions): boolean {
  if (status < 400) return true;
  return status < 500 && options.storeClientErrors && !TRANSIENT_CLIENT_ERRORS.has(status);
}

/** Another request took the key over and its result stands: this one's writes were rolled back. */
function leaseLost(ctx: Ctx): never {
  ctx.options.logger.warn(
    `[idempotency] ${ctx.options.functionName}: lease lost: another request took the key over; rolled back`,
  );
  throw new IdempotencyError(
    "REQUEST_IN_PROGRESS",
    "Another request with this idempotency key took it over",
    {
      retryAfterSeconds: 1,
    },
  );
}

async function release(store: PostgresStore, lease: Lease, outcome: Outcome, ctx: Ctx): Promise<void> {
  const message = outcome.error === undefined ? `HTTP ${outcome.status}` : errorMessage(outcome.error);
  try {
    await store.fail(lease, { message, status: outcome.status });
  } catch (error) {
    // the lease runs out by itself: the key is retried after lockTimeoutSeconds
    ctx.options.logger.error(`[idempotency] ${ctx.options.functionName}: store fail failed`, error);
  }
}

async function settle(claim: BeginResult): Promise<Response> {
  switch (claim.outcome) {
    case "replay": {
      const response = await fromStoredResponse(claim.response);
      response.headers.set(REPLAY_HEADER, "true");
      return response;
    }
    case "in_progress":
      throw new IdempotencyError(
        "REQUEST_IN_PROGRESS",
        "A request with this idempotency key is still running",
        {
          retryAfterSeconds: claim.retryAfterSeconds,
        },
      );
    case "mismatch":
      throw new IdempotencyError(
        "KEY_REUSED_WITH_DIFFERENT_REQUEST",
        "This idempotency key was already used with a different request (method, path or body)",
      );
    case "started":
      throw new Error("unreachable: a started claim is run, not settled");
  }
}

/** Polls the claim with doubling pauses while another request holds the key (`onInFlight: "wait"`). */
async function waitFor(ctx: Ctx, store: PostgresStore, input: BeginInput): Promise<BeginResult> {
  const deadline = Date.now() + ctx.options.waitTimeoutMs;
  let pause = 25;
  let result = await store.beginAsync(input);
  while (result.outcome === "in_progress" && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, Math.min(pause, Math.max(deadline - Date.now(), 0))));
    pause = Math.min(pause * 2, 1000);
    result = await store.beginAsync(input);
  }
  return result;
}

/** Renews the lease while the handler runs (outside its transaction, on the pool), for at most maxRunMs. */
function startRenewal(ctx: Ctx, store: PostgresStore, lease: Lease): { stop(): Promise<void> } {
  if (!ctx.options.renewLease) return { stop: () => Promise.resolve() };
  const until = Date.now() + ctx.maxRunMs;
  let pending: Promise<unknown> = Promise.resolve();
  const timer = setInterval(() => {
    if (Date.now() > until) {
      clearInterval(timer);
      ctx.options.logger.warn(
        `[idempotency] ${ctx.options.functionName}: still running after maxRunSeconds; the lease is no longer renewed`,
      );
      return;
    }
    pending = pending.then(() => store.extendLease(lease, ctx.options.lockTimeoutSeconds)).catch(() => false);
  }, ctx.options.lockTimeoutSeconds * 500);
  return {
    stop: () => {
      clearInterval(timer);
      return pending.then(() => undefined);
    },
  };
}

/**
 * `idempotency_complete` inside the handler's transaction: the fence (the lease token) and, through the
 * marker, proof that this statement runs in the transaction that did the work.
 */
async function completeIn(tx: Transaction, lease: Lease, response: StoredResponse): Promise<boolean> {
  const { raw } = tx;
  await tx.settled;
  const [row] = await raw<{ ok: boolean }[]>`
    select case when current_setting('idempotency.transaction', true) = ${tx.marker}::text
      then public.idempotency_complete(
        ${lease.recordId}::uuid, ${lease.leaseToken}::uuid, ${response.status}::integer,
        ${response.body}::bytea, ${response.encoding}::text, ${raw.json(response.headers)}::jsonb
      ) else false end as ok`;
  return row?.ok === true;
}

function storeUnavailable(ctx: Ctx, method: string, error: unknown): IdempotencyError {
  if (error instanceof IdempotencyError) return error;
  ctx.options.logger.error(`[idempotency] ${ctx.options.functionName}: store ${method} failed`, error);
  return new IdempotencyError("STORE_UNAVAILABLE", "The idempotency store is unavailable; retry later", {
    retryAfterSeconds: 1,
  });
}

function asIdempotencyError(ctx: Ctx, error: unknown): IdempotencyError {
  if (error instanceof IdempotencyError) return error;
  ctx.options.logger.error(`[idempotency] ${ctx.options.functionName}: the request failed`, error);
  return internalError();
}

function internalError(): IdempotencyError {
  return new IdempotencyError("INTERNAL_ERROR", "The function failed; retry with the same idempotency key");
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}
