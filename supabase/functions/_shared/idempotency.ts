/**
 * Idempotency for Supabase Edge Functions: the one module a function imports.
 *
 * A client sends `Idempotency-Key`; the first request runs, every retry gets the first response back with
 * `X-Idempotency-Replay: true`, concurrent duplicates never both run, and no user sees another's response.
 *
 * What is here is what a function author uses: {@link withIdempotency} and {@link withIdempotentTransaction}
 * with their options; direct calls for code that manages keys itself ({@link createIdempotencyKey},
 * {@link storeIdempotencyResult}, ...); keys, headers, who the caller is, the one error family, and the two
 * ready stores ({@link PostgresStore}, the default, and {@link MemoryStore}).
 *
 * What only store authors and advanced users need has its own import path, documented and checked as this
 * entry is (see docs/api.md): the store contract `./idempotency/store.ts`; the isolate's Postgres pool
 * `./idempotency/pool.ts`; metrics recorders and the Prometheus text `./idempotency/metrics.ts`; request
 * fingerprints `./idempotency/fingerprint.ts`; step keys `./idempotency/steps.ts`; every response header
 * `./idempotency/headers.ts`. Backends and helpers with heavier dependencies too: the Redis store is
 * `./idempotency/redis.ts`, JWT verification `./idempotency/jwt.ts`.
 *
 * @example Make a function idempotent
 * ```ts
 * import { MemoryStore, withIdempotency } from "./idempotency.ts";
 *
 * // the default store is Postgres (SUPABASE_DB_URL); a MemoryStore keeps this example self-contained
 * const fetch = withIdempotency(
 *   () => Response.json({ charged: true }, { status: 201 }),
 *   { functionName: "charge", store: new MemoryStore(), anonymous: "shared" },
 * );
 * const entry = { fetch } satisfies Deno.ServeDefaultExport; // `export default entry;` in index.ts
 * console.assert(typeof entry.fetch === "function");
 * ```
 *
 * @module
 */

export {
  type Handler,
  type IdempotencyMetrics,
  type IdempotentHandler,
  withIdempotency,
} from "./idempotency/middleware.ts";
export {
  closeDefaultStore,
  DEFAULT_OPTIONS,
  defaultStore,
  type IdempotencyLogger,
  type IdempotencyOptions,
} from "./idempotency/options.ts";
export {
  checkIdempotency,
  cleanupExpiredKeys,
  createIdempotencyKey,
  markIdempotencyFailed,
  replayIdempotencyResult,
  storeIdempotencyResult,
  type StoreOption,
} from "./idempotency/api.ts";
export { generateIdempotencyKey, getIdempotencyKey, isValidIdempotencyKey } from "./idempotency/key.ts";
export { corsHeaders, REPLAY_HEADER, withCorsHeaders } from "./idempotency/headers.ts";
export {
  type Caller,
  createJwtCallerResolver,
  createJwtUserResolver,
  type GetUserId,
  type JwtUserResolverOptions,
} from "./idempotency/auth.ts";
export {
  type ErrorCode,
  ErrorCodes,
  errorResponse,
  IdempotencyError,
  type IdempotencyErrorOptions,
} from "./idempotency/errors.ts";
export { MemoryStore, type MemoryStoreOptions } from "./idempotency/stores/memory.ts";
export { PostgresStore, type PostgresStoreOptions } from "./idempotency/stores/postgres.ts";
export {
  type TransactionalHandler,
  type TransactionalHooks,
  type TransactionalOptions,
  type TransactionCaller,
  type TransactionContext,
  withIdempotentTransaction,
} from "./idempotency/transactional.ts";
