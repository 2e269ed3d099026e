/**
 * Idempotent actions beyond HTTP: side effects a function, worker or agent performs (start a job, write a
 * notification, post to Slack), each run once per action key on any store, with the same exactly-once
 * machinery as the middleware (atomic claim, renewed lease, lease token checked on every finish).
 *
 * This entry loads the key helpers, the manager and the in-memory store only. The Postgres and Redis
 * stores have their own entries (`actions_postgres.ts`, `actions_redis.ts`), so a function that does not
 * use them does not load their drivers; the default manager imports them only when configured to.
 *
 * @example Run a follow-up once per event
 * ```ts
 * import { executeWithIdempotency } from "../_shared/actions.ts";
 *
 * const { result, replayed } = await executeWithIdempotency(
 *   { signalId: event.id, actionType: "send_notification", target: "slack", params: { channel: "ops" } },
 *   () => postToSlack("ops", "dataset ready"),
 * );
 * ```
 *
 * @module
 */

export {
  type ActionIdentity,
  type ActionMeta,
  checkActionKey,
  generateActionKey,
  generateIdempotencyKey,
  hashParams,
  MAX_ACTION_KEY_LENGTH,
  metaFromKey,
  paramsAreEquivalent,
  type ParsedActionKey,
  parseIdempotencyKey,
  toolKey,
} from "./idempotency/actions/keys.ts";
export { checkMs, checkThroughGet } from "./idempotency/actions/store.ts";
export type {
  ActionCheck,
  ActionLease,
  ActionRecord,
  ActionStatus,
  ActionStore,
  ClaimInput,
  ClaimResult,
  FindQuery,
  StoreInfo,
  StoreStats,
  TransactionalActionStore,
} from "./idempotency/actions/store.ts";
export {
  ACTION_ENV_VARS,
  type ActionBackend,
  type ActionConfig,
  configFromEnv,
  DEFAULT_ACTION_CONFIG,
  type InProgressChoice,
  resolveActionConfig,
} from "./idempotency/actions/config.ts";
export {
  ActionIdempotency,
  type ActionIdempotencyOptions,
  type CheckResult,
  type ExecuteOptions,
  type ExecuteOutcome,
  type ExplicitAction,
  type IdempotencyStats,
  type KeyFilter,
  type StartRequestResult,
} from "./idempotency/actions/manager.ts";
export { MemoryActionStore, type MemoryActionStoreOptions } from "./idempotency/actions/memory.ts";
export { closeDefaultActions, configure, defaultActions, getConfig } from "./idempotency/actions/default.ts";
export {
  checkExecuted,
  cleanupExpired,
  clearAllCache,
  clearIdempotencyKey,
  executeWithIdempotency,
  findKeysByActionType,
  findKeysBySignalId,
  findKeysByTarget,
  getCachedKeys,
  getCacheInfo,
  getExpiringSoon,
  getIdempotencyRecord,
  getIdempotencyStats,
  markExecuted,
  recordFailure,
  recordSuccess,
  resetStats,
  startAutoCleanup,
  startRequest,
  stopAutoCleanup,
} from "./idempotency/actions/functions.ts";
export { type ErrorCode, ErrorCodes, IdempotencyError } from "./idempotency/errors.ts";
