/**
 * The action API over any {@link ActionStore}: `executeWithIdempotency` and the seeds' lower-level pairs,
 * records, statistics, queries and cleanup. Exactly-once comes from the store's atomic claim, a lease that
 * is renewed while the executor runs, and a lease token checked on every finish.
 *
 * @module
 */

import { IdempotencyError } from "../errors.ts";
import {
  type ActionConfig,
  DEFAULT_ACTION_CONFIG,
  type InProgressChoice,
  resolveActionConfig,
} from "./config.ts";
import {
  type ActionIdentity,
  type ActionMeta,
  checkActionKey,
  generateActionKey,
  metaFromKey,
  toolKey,
} from "./keys.ts";
import type {
  ActionCheck,
  ActionLease,
  ActionRecord,
  ActionStatus,
  ActionStore,
  StoreInfo,
  StoreStats,
  TransactionalActionStore,
} from "./store.ts";

/** An action named by an explicit key instead of its identity. */
export interface ExplicitAction {
  /** The key, 1-512 characters. */
  key: string;
  /** Metadata for queries; parts the key does not say stay `null`. */
  meta?: Partial<ActionMeta>;
}

/** Per-call options of {@link ActionIdempotency.executeWithIdempotency}. */
export interface ExecuteOptions {
  /** This call's TTL in ms, over the per-action and default TTL. */
  ttl?: number;
  /** What to do while another call runs the same action. @default config.onInProgress ("wait") */
  onInProgress?: InProgressChoice;
  /** Longest wait for another call's result, in ms. @default config.waitTimeoutMs (60000) */
  waitTimeoutMs?: number;
  /** Whether a recorded failure is retried. @default config.retryFailed (true) */
  retryFailed?: boolean;
  /** Lease length in ms, renewed every third of it while the executor runs. @default config.leaseMs (30000) */
  leaseMs?: number;
}

/** What `executeWithIdempotency` returns. */
export interface ExecuteOutcome<T> {
  /** The action key. */
  key: string;
  /** The executor's result: this call's, or the recorded one (as JSON, parsed). */
  result: T;
  /** `true` when the executor did not run in this call and the recorded result was returned. */
  replayed: boolean;
  /** The attempt that produced the result. */
  attempt: number;
}

/** What `checkExecuted` returns (the seeds' shape). */
export interface CheckResult {
  /** Whether a completed record exists. */
  executed: boolean;
  /** The recorded result, when executed. */
  cachedResult?: unknown;
  /** When it completed. */
  executedAt?: Date | undefined;
  /** The key checked. */
  idempotencyKey: string;
  /** Ms until the record expires. */
  ttl?: number;
  /** The record's status, when there is one. */
  status?: ActionStatus;
}

/** What `startRequest` returns (WeatherVane's shape). */
export interface StartRequestResult {
  /** `true`: run the tool, then `recordSuccess` or `recordFailure`. */
  isNewRequest: boolean;
  /** The recorded response of a completed earlier call. */
  existingResponse?: unknown;
  /** `true` when another call runs it right now. */
  inProgress?: boolean;
  /** The key used. */
  key: string;
}

/** `getIdempotencyStats`: the store's figures plus the hit rate. */
export interface IdempotencyStats extends StoreStats {
  /** `cacheHits / (cacheHits + cacheMisses)` in percent; 0 before any lookup. */
  hitRate: number;
}

/** Filter for `getCachedKeys`: an object (pushed down to the store) or a predicate over records. */
export type KeyFilter =
  | { actionType?: string; target?: string; signalId?: string; status?: ActionStatus }
  | ((record: ActionRecord) => boolean);

/** Options of {@link ActionIdempotency}. */
export interface ActionIdempotencyOptions extends Partial<ActionConfig> {
  /** Where records live. */
  store: ActionStore;
}

const DEFAULT_LIMIT = 1000;
const MAX_POLL_MS = 250;

/**
 * Idempotent actions on one store.
 *
 * @example Create a card once per signal
 * ```ts
 * const actions = new ActionIdempotency({ store: new MemoryActionStore() });
 * const { result, replayed } = await actions.executeWithIdempotency(
 *   { signalId: "signal-123", actionType: "create_task", target: "trello", params: { name: "Review" } },
 *   () => createCard({ name: "Review" }),
 * );
 * ```
 */
export class ActionIdempotency {
  /** The store. */
  readonly store: ActionStore;
  #config: ActionConfig;
  /** Leases this instance holds for `startRequest` callers, by key. */
  readonly #leases = new Map<string, ActionLease>();
  #cleanupTimer: ReturnType<typeof setInterval> | undefined;

  /**
   * A manager on `options.store`.
   *
   * @param options The store and any settings (defaults: {@link DEFAULT_ACTION_CONFIG}).
   * @throws {IdempotencyError} `INVALID_CONFIGURATION` for a bad setting.
   */
  constructor(options: ActionIdempotencyOptions) {
    const { store, ...settings } = options;
    this.store = store;
    this.#config = resolveActionConfig(DEFAULT_ACTION_CONFIG, settings);
  }

  /**
   * Changes settings (checked first; nothing changes on error).
   *
   * @param settings The settings to change.
   * @throws {IdempotencyError} `INVALID_CONFIGURATION`.
   */
  configure(settings: Partial<ActionConfig>): void {
    this.#config = resolveActionConfig(this.#config, settings);
  }

  /**
   * The current settings.
   *
   * @returns The settings (frozen).
   */
  getConfig(): ActionConfig {
    return this.#config;
  }

  /**
   * Runs `executor` once per action key. A repeat returns the recorded result with `replayed: true`; a
   * concurrent repeat waits for the first result (or throws `ACTION_IN_PROGRESS`, as chosen); a failure is
   * recorded with its error and attempt count and the next call retries it (unless `retryFailed: false`).
   *
   * @param action The action's identity, or an explicit key.
   * @param executor The side effect; its result must be JSON-serialisable (it is stored as JSON).
   * @param options Per-call options, or a TTL in ms (the seeds' third argument).
   * @returns The result and whether it was replayed.
   * @throws The executor's own error (after recording it); {@link IdempotencyError} `ACTION_IN_PROGRESS`,
   * `ACTION_FAILED`, `INVALID_ACTION`; a store error when the store is unreachable.
   */
  executeWithIdempotency<T>(
    action: ActionIdentity | ExplicitAction,
    executor: () => T | Promise<T>,
    options: ExecuteOptions | number = {},
  ): Promise<ExecuteOutcome<T>> {
    const opts: ExecuteOptions = typeof options === "number" ? { ttl: options } : options;
    return this.#execute(
      action,
      opts,
      executor,
      (lease, attempt, leaseMs) => this.#run(lease, attempt, leaseMs, executor),
    );
  }

  /**
   * Like {@link executeWithIdempotency}, but `work` runs inside the store's own transaction, which also
   * records the result: the side effects and the record commit together or not at all, so even a process
   * killed mid-action never leaves work done but unrecorded (which a retry would repeat). The record's row
   * stays locked meanwhile: a concurrent duplicate waits for the commit. Postgres only.
   *
   * @param action The action's identity, or an explicit key.
   * @param work The side effect, given the transaction (for Postgres: a `postgres.js` `TransactionSql`).
   * @param options Per-call options.
   * @returns The result and whether it was replayed.
   * @throws {TypeError} when the store has no transactions; otherwise as {@link executeWithIdempotency}.
   * `enabled: false` does not apply here: the work needs the transaction the store opens.
   * @example Insert a row exactly once
   * ```ts
   * await actions.executeInTransaction<{ id: string }, postgres.TransactionSql>(action, async (tx) => {
   *   const [row] = await tx`insert into public.notifications ${tx(values)} returning id`;
   *   return row;
   * });
   * ```
   */
  executeInTransaction<T, Tx = unknown>(
    action: ActionIdentity | ExplicitAction,
    work: (tx: Tx) => Promise<T>,
    options: ExecuteOptions = {},
  ): Promise<ExecuteOutcome<T>> {
    const store = this.store as Partial<TransactionalActionStore<Tx>>;
    const completeInTransaction = store.completeInTransaction?.bind(store);
    if (!completeInTransaction) {
      return Promise.reject(
        new TypeError(`the ${this.store.name} action store cannot run work in its transaction`),
      );
    }
    return this.#execute(action, options, undefined, async (lease, attempt) => {
      let result: T | undefined;
      let recorded: boolean;
      try {
        recorded = await completeInTransaction(lease, async (tx) => {
          result = await work(tx);
          return toJson(result);
        });
      } catch (error) {
        await this.store.fail(lease, errorMessage(error)).catch(() => {});
        throw error;
      }
      if (!recorded) throw inProgressError(lease.key, 1000); // taken over before it began: nothing was written
      return { key: lease.key, result: result as T, replayed: false, attempt };
    });
  }

  async #execute<T>(
    action: ActionIdentity | ExplicitAction,
    opts: ExecuteOptions,
    bare: (() => T | Promise<T>) | undefined,
    run: (lease: ActionLease, attempt: number, leaseMs: number) => Promise<ExecuteOutcome<T>>,
  ): Promise<ExecuteOutcome<T>> {
    const { key, meta } = identify(action);
    const config = this.#config;
    if (!config.enabled && bare) return { key, result: await bare(), replayed: false, attempt: 1 };
    const ttlMs = this.#ttl(meta.actionType, opts.ttl);
    const leaseMs = opts.leaseMs ?? config.leaseMs;
    const retryFailed = opts.retryFailed ?? config.retryFailed;
    const onInProgress = opts.onInProgress ?? config.onInProgress;
    const deadline = Date.now() + (opts.waitTimeoutMs ?? config.waitTimeoutMs);

    for (;;) {
      const claim = await this.store.claim({ key, meta, ttlMs, leaseMs, retryFailed });
      switch (claim.outcome) {
        case "started":
          return await run(claim.lease, claim.attempt, leaseMs);
        case "completed":
          return {
            key,
            result: claim.record.result as T,
            replayed: true,
            attempt: claim.record.attemptCount,
          };
        case "failed":
          throw failedError(claim.record);
        case "in_progress": {
          if (onInProgress === "error" || Date.now() >= deadline) {
            throw inProgressError(key, claim.retryAfterMs);
          }
          const done = await this.#waitFor(key, deadline, claim.retryAfterMs);
          if (done) return { key, result: done.result as T, replayed: true, attempt: done.attemptCount };
          // failed, expired, deleted or its lease ran out: claim again (which may run it here)
        }
      }
    }
  }

  /**
   * The key an action runs under (its action key, or its explicit key).
   *
   * @param action The action's identity, or an explicit key.
   * @returns The key.
   * @throws {IdempotencyError} `INVALID_ACTION`.
   */
  keyOf(action: ActionIdentity | ExplicitAction): string {
    return identify(action).key;
  }

  /**
   * Whether an action completed, without claiming it (counts a hit or a miss).
   *
   * @param key The action key.
   * @returns The seeds' check result.
   */
  async checkExecuted(key: string): Promise<CheckResult> {
    // a read: an odd key simply finds nothing, so it is not validated on this hot path
    const check = await this.store.check(key);
    if (!check) return { executed: false, idempotencyKey: key };
    if (check.status !== "completed") {
      return { executed: false, idempotencyKey: key, status: check.status, ttl: check.ttlMs };
    }
    return new CompletedCheck(key, check);
  }

  /**
   * Records that an action ran, with its result. The first record wins: `false` when the action is
   * already recorded as completed or is running under someone's lease.
   *
   * @param key The action key.
   * @param result The result (JSON).
   * @param ttl TTL in ms. @default the per-action or default TTL
   * @param metadata Metadata for queries (for keys that do not say it).
   * @returns `true` when this call recorded it.
   */
  async markExecuted(
    key: string,
    result: unknown,
    ttl?: number,
    metadata?: Partial<ActionMeta>,
  ): Promise<boolean> {
    const { meta } = identify({ key, ...(metadata ? { meta: metadata } : {}) });
    const ttlMs = this.#ttl(meta.actionType, ttl);
    const claim = await this.store.claim({
      key,
      meta,
      ttlMs,
      leaseMs: this.#config.leaseMs,
      retryFailed: true,
    });
    if (claim.outcome !== "started") return false;
    return await this.store.complete(claim.lease, toJson(result));
  }

  /**
   * WeatherVane's first step: claims the tool call `toolName(input)` (or `options.key`).
   *
   * @param toolName The tool.
   * @param input Its input.
   * @param options An explicit key and a TTL in ms.
   * @returns Whether to run the tool, or the recorded response.
   */
  async startRequest(
    toolName: string,
    input: unknown,
    options: { key?: string; ttl?: number } = {},
  ): Promise<StartRequestResult> {
    const key = options.key === undefined ? toolKey(toolName, input) : checkActionKey(options.key);
    const meta = { ...metaFromKey(key), actionType: toolName };
    const claim = await this.store.claim({
      key,
      meta,
      ttlMs: this.#ttl(toolName, options.ttl),
      leaseMs: this.#config.leaseMs,
      retryFailed: true,
    });
    switch (claim.outcome) {
      case "started":
        this.#leases.set(key, claim.lease);
        return { isNewRequest: true, key };
      case "completed":
        return { isNewRequest: false, existingResponse: claim.record.result, key };
      default:
        return { isNewRequest: false, inProgress: true, key };
    }
  }

  /**
   * Records the tool's response for the lease `startRequest` took in this instance.
   *
   * @returns `false` when this instance holds no lease for it, or the lease was taken over.
   */
  async recordSuccess(
    toolName: string,
    input: unknown,
    response: unknown,
    options: { key?: string } = {},
  ): Promise<boolean> {
    const lease = this.#takeLease(options.key ?? toolKey(toolName, input));
    return lease ? await this.store.complete(lease, toJson(response)) : false;
  }

  /**
   * Records the tool's failure so a retry runs again.
   *
   * @returns `false` when this instance holds no lease for it, or the lease was taken over.
   */
  async recordFailure(
    toolName: string,
    input: unknown,
    error: unknown,
    options: { key?: string } = {},
  ): Promise<boolean> {
    const lease = this.#takeLease(options.key ?? toolKey(toolName, input));
    return lease ? await this.store.fail(lease, errorMessage(error)) : false;
  }

  /**
   * The record of one action.
   *
   * @param key The action key.
   * @returns The live record, or `null`.
   */
  getIdempotencyRecord(key: string): Promise<ActionRecord | null> {
    return this.store.get(checkActionKey(key));
  }

  /** Deletes one record so the action may run again (not while it runs). @returns whether one was deleted */
  clearIdempotencyKey(key: string): Promise<boolean> {
    return this.store.delete(checkActionKey(key));
  }

  /** Deletes every record not under a live lease (on Postgres: service role only). @returns how many */
  clearAllCache(): Promise<number> {
    return this.store.clear();
  }

  /**
   * The statistics (on Postgres and Redis, of every instance).
   *
   * @returns Counters, per-state counts and the hit rate.
   */
  async getIdempotencyStats(): Promise<IdempotencyStats> {
    const stats = await this.store.stats();
    const lookups = stats.cacheHits + stats.cacheMisses;
    return { ...stats, hitRate: lookups === 0 ? 0 : (stats.cacheHits / lookups) * 100 };
  }

  /** Sets the counters to zero (on Postgres and Redis, for every instance). */
  resetStats(): Promise<void> {
    return this.store.resetStats();
  }

  /**
   * Size figures of the store.
   *
   * @returns Entries, capacity, utilization, oldest and newest, approximate bytes.
   */
  getCacheInfo(): Promise<StoreInfo> {
    return this.store.info();
  }

  /**
   * Keys of one action type (indexed on Postgres and Redis).
   *
   * @param actionType The action type.
   * @param limit Most keys returned. @default 1000
   * @returns Keys of live records, oldest first.
   */
  async findKeysByActionType(actionType: string, limit = DEFAULT_LIMIT): Promise<string[]> {
    return keysOf(await this.store.find({ actionType, limit }));
  }

  /**
   * Keys of one target (indexed on Postgres and Redis).
   *
   * @param target The target.
   * @param limit Most keys returned. @default 1000
   * @returns Keys of live records, oldest first.
   */
  async findKeysByTarget(target: string, limit = DEFAULT_LIMIT): Promise<string[]> {
    return keysOf(await this.store.find({ target, limit }));
  }

  /**
   * Keys of one signal (indexed on Postgres and Redis).
   *
   * @param signalId The signal id.
   * @param limit Most keys returned. @default 1000
   * @returns Keys of live records, oldest first.
   */
  async findKeysBySignalId(signalId: string, limit = DEFAULT_LIMIT): Promise<string[]> {
    return keysOf(await this.store.find({ signalId, limit }));
  }

  /**
   * Records about to expire.
   *
   * @param withinMs The window. @default 3600000 (1 hour)
   * @param limit Most records returned. @default 1000
   * @returns Live records that expire within `withinMs`.
   */
  getExpiringSoon(withinMs = 60 * 60 * 1000, limit = DEFAULT_LIMIT): Promise<ActionRecord[]> {
    return this.store.find({ expiresBefore: new Date(Date.now() + withinMs), limit });
  }

  /**
   * Keys of live records, filtered.
   *
   * @param filter Fields to match (indexed on Postgres), or a predicate applied to up to `limit` records.
   * @param limit Most keys returned. @default 1000
   * @returns Keys of live records, oldest first.
   */
  async getCachedKeys(filter: KeyFilter = {}, limit = DEFAULT_LIMIT): Promise<string[]> {
    if (typeof filter === "function") return keysOf((await this.store.find({ limit })).filter(filter));
    return keysOf(await this.store.find({ ...filter, limit }));
  }

  /** Deletes expired records now. @returns how many */
  cleanupExpired(): Promise<number> {
    return this.store.cleanupExpired();
  }

  /**
   * Runs `cleanupExpired` every `intervalMs`, on a timer that never keeps the process alive.
   *
   * @param intervalMs @default config.cleanupInterval
   */
  startAutoCleanup(intervalMs = this.#config.cleanupInterval): void {
    this.stopAutoCleanup();
    const timer = setInterval(() => {
      this.store.cleanupExpired().catch((error) =>
        console.warn("action cleanup failed:", errorMessage(error))
      );
    }, intervalMs);
    Deno.unrefTimer(timer);
    this.#cleanupTimer = timer;
  }

  /** Stops the timer of {@link startAutoCleanup}. */
  stopAutoCleanup(): void {
    if (this.#cleanupTimer !== undefined) clearInterval(this.#cleanupTimer);
    this.#cleanupTimer = undefined;
  }

  /** Whether the auto-cleanup timer runs. */
  get autoCleanupRunning(): boolean {
    return this.#cleanupTimer !== undefined;
  }

  /** Stops the timer and closes the store. */
  async close(): Promise<void> {
    this.stopAutoCleanup();
    await this.store.close();
  }

  /** Runs the executor under the lease, renewing it every third of its length, and records the outcome. */
  async #run<T>(
    lease: ActionLease,
    attempt: number,
    leaseMs: number,
    executor: () => T | Promise<T>,
  ): Promise<ExecuteOutcome<T>> {
    const renew = setInterval(() => {
      this.store.extend(lease, leaseMs).catch(() => {}); // a missed renewal only shortens the lease
    }, Math.max(250, Math.floor(leaseMs / 3)));
    Deno.unrefTimer(renew);
    let result: T;
    try {
      result = await executor();
    } catch (error) {
      clearInterval(renew);
      await this.store.fail(lease, errorMessage(error)).catch(() => {}); // the lease ends on its own anyway
      throw error;
    }
    clearInterval(renew);
    let json: string;
    try {
      json = toJson(result);
    } catch (error) {
      await this.store.fail(lease, `the result is not JSON: ${errorMessage(error)}`);
      throw error;
    }
    if (!(await this.store.complete(lease, json))) {
      console.warn(`action ${lease.key}: the lease was taken over before the result was recorded`);
    }
    return { key: lease.key, result, replayed: false, attempt };
  }

  /** Polls until the record completes (its record), or it can be claimed again (`null`). */
  async #waitFor(key: string, deadline: number, retryAfterMs: number): Promise<ActionRecord | null> {
    let pause = 5;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) throw inProgressError(key, retryAfterMs);
      await sleep(Math.min(pause, left));
      pause = Math.min(pause * 2, MAX_POLL_MS);
      const record = await this.store.get(key);
      if (!record) return null;
      if (record.status === "completed") return record;
      if (record.status === "failed") return null;
      if (record.leaseExpiresAt && record.leaseExpiresAt.getTime() <= Date.now()) return null;
    }
  }

  /** The call's TTL, else the action type's, else the default. */
  #ttl(actionType: string | null, override: number | undefined): number {
    const config = this.#config;
    return override ?? (actionType === null ? undefined : config.actionTTLs[actionType]) ?? config.defaultTTL;
  }

  #takeLease(key: string): ActionLease | undefined {
    const lease = this.#leases.get(key);
    this.#leases.delete(key);
    return lease;
  }
}

/**
 * A completed check. A class rather than a literal so that the result is parsed only when read (a getter
 * in an object literal costs more than the whole check); `toJSON` shows it like a plain object.
 */
class CompletedCheck implements CheckResult {
  readonly executed = true;
  readonly status = "completed" as const;
  readonly #check: ActionCheck;

  constructor(readonly idempotencyKey: string, check: ActionCheck) {
    this.#check = check;
  }

  /** Ms until the record expires. */
  get ttl(): number {
    return this.#check.ttlMs;
  }

  /** When it completed. */
  get executedAt(): Date | undefined {
    const ms = this.#check.executedAtMs;
    return ms === null ? undefined : new Date(ms);
  }

  /** The recorded result, parsed on each read (so a caller cannot change what a later read returns). */
  get cachedResult(): unknown {
    return this.#check.result;
  }

  /** The plain form, as `JSON.stringify` and logs should show it. */
  toJSON(): CheckResult {
    const executedAt = this.executedAt;
    return {
      executed: true,
      idempotencyKey: this.idempotencyKey,
      status: "completed",
      ttl: this.ttl,
      cachedResult: this.cachedResult,
      ...(executedAt ? { executedAt } : {}),
    };
  }
}

/** The key and metadata of an action: derived from its identity, or an explicit key with its metadata. */
function identify(action: ActionIdentity | ExplicitAction): { key: string; meta: ActionMeta } {
  if ("key" in action && typeof action.key === "string") {
    const key = checkActionKey(action.key);
    return { key, meta: { ...metaFromKey(key), ...definedOnly(action.meta ?? {}) } };
  }
  const identity = action as ActionIdentity;
  const key = generateActionKey(identity);
  return { key, meta: metaFromKey(key) };
}

function definedOnly(meta: Partial<ActionMeta>): Partial<ActionMeta> {
  return Object.fromEntries(Object.entries(meta).filter(([, v]) => v !== undefined)) as Partial<ActionMeta>;
}

/** JSON text of a result; `undefined` is stored as `null`. */
function toJson(value: unknown): string {
  return JSON.stringify(value) ?? "null";
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

function keysOf(records: ActionRecord[]): string[] {
  return records.map((record) => record.key);
}

function inProgressError(key: string, retryAfterMs: number): IdempotencyError {
  return new IdempotencyError("ACTION_IN_PROGRESS", `action ${key} is running in another call`, {
    retryAfterSeconds: Math.max(1, Math.ceil(retryAfterMs / 1000)),
  });
}

function failedError(record: ActionRecord): IdempotencyError {
  return new IdempotencyError(
    "ACTION_FAILED",
    `action ${record.key} failed on attempt ${record.attemptCount}: ${record.error ?? "unknown error"}`,
  );
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
