/**
 * The seeds' free functions, each a call on the default manager ({@link defaultActions}), which
 * `configure` and the `IDEMPOTENCY_*` variables set up.
 *
 * @module
 */

import { defaultActions } from "./default.ts";
import type { ActionIdentity, ActionMeta } from "./keys.ts";
import type {
  CheckResult,
  ExecuteOptions,
  ExecuteOutcome,
  ExplicitAction,
  IdempotencyStats,
  KeyFilter,
  StartRequestResult,
} from "./manager.ts";
import type { ActionRecord, StoreInfo } from "./store.ts";

/**
 * Runs `executor` once per action key, on the default manager.
 *
 * @param action The action's identity, or an explicit key.
 * @param executor The side effect (its result is stored as JSON).
 * @param options Per-call options, or a TTL in ms.
 * @returns The result and whether it was replayed.
 * @throws The executor's error; `IdempotencyError` `ACTION_IN_PROGRESS`, `ACTION_FAILED`, `INVALID_ACTION`.
 * @example Once per signal
 * ```ts
 * await executeWithIdempotency({ signalId: "s-1", actionType: "create_task", target: "trello", params: {} }, createCard);
 * ```
 */
export async function executeWithIdempotency<T>(
  action: ActionIdentity | ExplicitAction,
  executor: () => T | Promise<T>,
  options?: ExecuteOptions | number,
): Promise<ExecuteOutcome<T>> {
  return await (await defaultActions()).executeWithIdempotency(action, executor, options);
}

/**
 * Whether an action completed. See `ActionIdempotency.checkExecuted`.
 *
 * @param key The action key.
 * @returns The check result.
 * @example
 * ```ts
 * if ((await checkExecuted(key)).executed) return;
 * ```
 */
export async function checkExecuted(key: string): Promise<CheckResult> {
  return await (await defaultActions()).checkExecuted(key);
}

/**
 * Records that an action ran; the first record wins. See `ActionIdempotency.markExecuted`.
 *
 * @returns `true` when this call recorded it.
 * @example
 * ```ts
 * await markExecuted(key, { cardId: "c-1" }, 12 * 60 * 60 * 1000);
 * ```
 */
export async function markExecuted(
  key: string,
  result: unknown,
  ttl?: number,
  metadata?: Partial<ActionMeta>,
): Promise<boolean> {
  return await (await defaultActions()).markExecuted(key, result, ttl, metadata);
}

/**
 * Claims a tool call. See `ActionIdempotency.startRequest`.
 *
 * @returns Whether to run the tool, or the recorded response.
 * @example
 * ```ts
 * const { isNewRequest, existingResponse } = await startRequest("fs_write", input);
 * ```
 */
export async function startRequest(
  toolName: string,
  input: unknown,
  options?: { key?: string; ttl?: number },
): Promise<StartRequestResult> {
  return await (await defaultActions()).startRequest(toolName, input, options);
}

/**
 * Records a tool call's response. See `ActionIdempotency.recordSuccess`.
 *
 * @returns `false` when no lease is held for it here.
 * @example
 * ```ts
 * await recordSuccess("fs_write", input, { ok: true });
 * ```
 */
export async function recordSuccess(
  toolName: string,
  input: unknown,
  response: unknown,
  options?: { key?: string },
): Promise<boolean> {
  return await (await defaultActions()).recordSuccess(toolName, input, response, options);
}

/**
 * Records a tool call's failure. See `ActionIdempotency.recordFailure`.
 *
 * @returns `false` when no lease is held for it here.
 * @example
 * ```ts
 * await recordFailure("fs_write", input, error);
 * ```
 */
export async function recordFailure(
  toolName: string,
  input: unknown,
  error: unknown,
  options?: { key?: string },
): Promise<boolean> {
  return await (await defaultActions()).recordFailure(toolName, input, error, options);
}

/**
 * The record of one action.
 *
 * @param key The action key.
 * @returns The live record, or `null`.
 * @example
 * ```ts
 * (await getIdempotencyRecord(key))?.attemptCount;
 * ```
 */
export async function getIdempotencyRecord(key: string): Promise<ActionRecord | null> {
  return await (await defaultActions()).getIdempotencyRecord(key);
}

/**
 * Deletes one record so the action may run again (not while it runs).
 *
 * @returns Whether one was deleted.
 * @example
 * ```ts
 * await clearIdempotencyKey(key);
 * ```
 */
export async function clearIdempotencyKey(key: string): Promise<boolean> {
  return await (await defaultActions()).clearIdempotencyKey(key);
}

/**
 * Deletes every record not under a live lease (on Postgres: service role only).
 *
 * @returns How many went.
 * @example
 * ```ts
 * await clearAllCache();
 * ```
 */
export async function clearAllCache(): Promise<number> {
  return await (await defaultActions()).clearAllCache();
}

/**
 * The statistics.
 *
 * @returns Counters, per-state counts and the hit rate.
 * @example
 * ```ts
 * (await getIdempotencyStats()).duplicatesPrevented;
 * ```
 */
export async function getIdempotencyStats(): Promise<IdempotencyStats> {
  return await (await defaultActions()).getIdempotencyStats();
}

/**
 * Sets the counters to zero.
 *
 * @returns When done.
 * @example
 * ```ts
 * await resetStats();
 * ```
 */
export async function resetStats(): Promise<void> {
  await (await defaultActions()).resetStats();
}

/**
 * Size figures of the store.
 *
 * @returns Entries, capacity, utilization, oldest and newest, approximate bytes.
 * @example
 * ```ts
 * (await getCacheInfo()).utilizationPercent;
 * ```
 */
export async function getCacheInfo(): Promise<StoreInfo> {
  return await (await defaultActions()).getCacheInfo();
}

/**
 * Keys of one action type.
 *
 * @returns Keys of live records of `actionType`.
 * @example
 * ```ts
 * await findKeysByActionType("create_task");
 * ```
 */
export async function findKeysByActionType(actionType: string, limit?: number): Promise<string[]> {
  return await (await defaultActions()).findKeysByActionType(actionType, limit);
}

/**
 * Keys of one target.
 *
 * @returns Keys of live records of `target`.
 * @example
 * ```ts
 * await findKeysByTarget("slack");
 * ```
 */
export async function findKeysByTarget(target: string, limit?: number): Promise<string[]> {
  return await (await defaultActions()).findKeysByTarget(target, limit);
}

/**
 * Keys of one signal.
 *
 * @returns Keys of live records of `signalId`.
 * @example
 * ```ts
 * await findKeysBySignalId("signal-123");
 * ```
 */
export async function findKeysBySignalId(signalId: string, limit?: number): Promise<string[]> {
  return await (await defaultActions()).findKeysBySignalId(signalId, limit);
}

/**
 * Records about to expire.
 *
 * @param withinMs The window. @default 3600000
 * @returns Live records that expire within it.
 * @example
 * ```ts
 * await getExpiringSoon(30 * 60 * 1000);
 * ```
 */
export async function getExpiringSoon(withinMs?: number, limit?: number): Promise<ActionRecord[]> {
  return await (await defaultActions()).getExpiringSoon(withinMs, limit);
}

/**
 * Keys of live records, filtered.
 *
 * @returns Keys of live records matching `filter`.
 * @example
 * ```ts
 * await getCachedKeys({ target: "trello" });
 * await getCachedKeys((record) => record.attemptCount > 1);
 * ```
 */
export async function getCachedKeys(filter?: KeyFilter, limit?: number): Promise<string[]> {
  return await (await defaultActions()).getCachedKeys(filter, limit);
}

/**
 * Deletes expired records now.
 *
 * @returns How many went.
 * @example
 * ```ts
 * await cleanupExpired();
 * ```
 */
export async function cleanupExpired(): Promise<number> {
  return await (await defaultActions()).cleanupExpired();
}

/**
 * Starts the cleanup timer (it never keeps the process alive).
 *
 * @param intervalMs @default config.cleanupInterval
 * @returns When started.
 * @example
 * ```ts
 * await startAutoCleanup(10 * 60 * 1000);
 * ```
 */
export async function startAutoCleanup(intervalMs?: number): Promise<void> {
  (await defaultActions()).startAutoCleanup(intervalMs);
}

/**
 * Stops the cleanup timer.
 *
 * @returns When stopped.
 * @example
 * ```ts
 * await stopAutoCleanup();
 * ```
 */
export async function stopAutoCleanup(): Promise<void> {
  (await defaultActions()).stopAutoCleanup();
}
