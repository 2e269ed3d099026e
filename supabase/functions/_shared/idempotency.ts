/**
 * Idempotency for Supabase Edge Functions: the one module a function imports.
 *
 * ```ts
 * import { withIdempotency } from "../_shared/idempotency.ts";
 *
 * Deno.serve(withIdempotency(handler, { functionName: "process-document" }));
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
  type ResolvedIdempotencyOptions,
  resolveOptions,
} from "./idempotency/options.ts";
export {
  checkIdempotency,
  cleanupExpiredKeys,
  createIdempotencyKey,
  markIdempotencyFailed,
  storeIdempotencyResult,
  type StoreOption,
} from "./idempotency/api.ts";
export {
  generateIdempotencyKey,
  getIdempotencyKey,
  IDEMPOTENCY_KEY_HEADERS,
  isValidIdempotencyKey,
} from "./idempotency/key.ts";
export { canonicalJson, type FingerprintInput, requestFingerprint } from "./idempotency/fingerprint.ts";
export {
  BODY_OMITTED_HEADER,
  corsHeaders,
  isReplayableHeader,
  REPLAY_HEADER,
  replayableHeaders,
  UNSAFE_RESPONSE_HEADERS,
  withCorsHeaders,
} from "./idempotency/headers.ts";
export {
  buildResponse,
  decodeBody,
  encodeBody,
  type EncodedBody,
  type EncodeOptions,
  fromStoredResponse,
  gunzip,
  gzip,
  type StoreResponseOptions,
  toStoredResponse,
} from "./idempotency/codec.ts";
export {
  bearerToken,
  type Caller,
  callerFromUserId,
  createJwtCallerResolver,
  createJwtUserResolver,
  decodeJwtClaimsUnverified,
  type GetUserId,
  type JwtClaims,
  type JwtUserResolverOptions,
  verifyHs256Jwt,
} from "./idempotency/auth.ts";
export { type ErrorCode, ErrorCodes, errorResponse, IdempotencyError } from "./idempotency/errors.ts";
export type {
  BeginInput,
  BeginResult,
  IdempotencyStore,
  KeyScope,
  KeyStatus,
  Lease,
  StoredResponse,
} from "./idempotency/store.ts";
export { MemoryStore, type MemoryStoreOptions } from "./idempotency/stores/memory.ts";
export {
  PostgresStore,
  type PostgresStoreOptions,
  preparedStatementsSupported,
} from "./idempotency/stores/postgres.ts";
export {
  type RedisScriptClient,
  type RedisScriptOptions,
  RedisStore,
  type RedisStoreOptions,
} from "./idempotency/stores/redis.ts";
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
