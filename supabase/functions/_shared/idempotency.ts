/**
 * Idempotency for Supabase Edge Functions: the one module a function imports.
 *
 * A client sends `Idempotency-Key`; the first request runs, every retry gets the first response back with
 * `X-Idempotency-Replay: true`, concurrent duplicates never both run, and no user sees another's response.
 *
 * What is here: {@link withIdempotency} and its options; direct calls for code that manages keys itself
 * ({@link createIdempotencyKey}, {@link storeIdempotencyResult}, ...); the stores ({@link PostgresStore}, the
 * default, and {@link MemoryStore}) and their contract; who the caller is (JWTs); the one error family.
 * Backends and helpers with heavier dependencies have their own import path: the Redis store is
 * `./idempotency/redis.ts`, JWT verification is `./idempotency/jwt.ts`.
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
export type { LatencyHistogram, MetricsRecorder } from "./idempotency/metrics.ts";
export {
  checkIdempotency,
  cleanupExpiredKeys,
  createIdempotencyKey,
  markIdempotencyFailed,
  storeIdempotencyResult,
  type StoreOption,
} from "./idempotency/api.ts";
export { generateIdempotencyKey, getIdempotencyKey, isValidIdempotencyKey } from "./idempotency/key.ts";
export { type FingerprintInput, requestFingerprint } from "./idempotency/fingerprint.ts";
export { BODY_OMITTED_HEADER, corsHeaders, REPLAY_HEADER, withCorsHeaders } from "./idempotency/headers.ts";
export {
  type Caller,
  createJwtCallerResolver,
  createJwtUserResolver,
  type GetUserId,
  type JwtUserResolverOptions,
} from "./idempotency/auth.ts";
export { JwtError } from "./idempotency/jwt.ts";
export {
  type ErrorCode,
  ErrorCodes,
  errorResponse,
  IdempotencyError,
  type IdempotencyErrorOptions,
} from "./idempotency/errors.ts";
export type {
  BeginInput,
  BeginResult,
  BodyEncoding,
  IdempotencyStore,
  KeyScope,
  KeyStatus,
  Lease,
  StoredResponse,
} from "./idempotency/store.ts";
export { MemoryStore, type MemoryStoreOptions } from "./idempotency/stores/memory.ts";
export {
  type PostgresClient,
  PostgresStore,
  type PostgresStoreOptions,
  type PostgresTransaction,
  preparedStatementsSupported,
} from "./idempotency/stores/postgres.ts";
export { closeSharedPool, openPool, type PoolOptions, sharedPool } from "./idempotency/pool.ts";
export {
  type TransactionalHandler,
  type TransactionalHooks,
  type TransactionalOptions,
  type TransactionCaller,
  type TransactionContext,
  withIdempotentTransaction,
} from "./idempotency/transactional.ts";
export { stepKeyOf } from "./idempotency/steps.ts";
