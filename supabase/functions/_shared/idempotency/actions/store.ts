/**
 * The contract every action store implements (memory, Redis, Postgres). Each method is one atomic step,
 * decided inside the store (a single-threaded map, a Lua script, a locked row), so the manager never
 * reads-then-writes. Results travel as JSON text and come back parsed, the same on every store.
 *
 * @module
 */

import type { ActionMeta } from "./keys.ts";

/** Where an action record is in its life. */
export type ActionStatus = "processing" | "completed" | "failed";

/** One action record, as every store returns it. */
export interface ActionRecord extends ActionMeta {
  /** The action key. */
  key: string;
  /** Where the action is. */
  status: ActionStatus;
  /** The executor's result (JSON), or `null` until completed. */
  result: unknown;
  /** The last attempt's error message, while `failed`. */
  error: string | null;
  /** Attempts started so far (1 for the first run). */
  attemptCount: number;
  /** When the record was created (its first attempt started). */
  createdAt: Date;
  /** When the action completed or its last attempt failed; `null` while processing. */
  executedAt: Date | null;
  /** When the record stops counting: a later call runs the action again. */
  expiresAt: Date;
  /** When the running attempt's lease ends; `null` unless processing. */
  leaseExpiresAt: Date | null;
}

/** What {@link ActionStore.check} reads: enough to say whether an action ran, without a whole record. */
export interface ActionCheck {
  /** Where the action is. */
  status: ActionStatus;
  /** The recorded result (JSON, parsed when read), or `null` unless completed. */
  readonly result: unknown;
  /** When it completed or failed, in epoch ms; `null` while processing. */
  executedAtMs: number | null;
  /** Ms until the record expires. */
  ttlMs: number;
}

/** Everything {@link ActionStore.claim} needs. */
export interface ClaimInput {
  /** The action key. */
  key: string;
  /** Metadata stored with a new record (queries use it). */
  meta: ActionMeta;
  /** How long the record counts, in ms (at least 1000). */
  ttlMs: number;
  /** How long a claim holds before another caller may take it over, in ms (at least 1000). */
  leaseMs: number;
  /** Whether a failed record is claimed again (`started`), or reported (`failed`). */
  retryFailed: boolean;
}

/** The proof of ownership that `complete`, `fail` and `extend` check. */
export interface ActionLease {
  /** The action key. */
  key: string;
  /** The token `claim` returned; a taken-over lease no longer matches. */
  token: string;
}

/** The one outcome of a claim. */
export type ClaimResult =
  /** The caller owns the action: run it, then `complete` or `fail` with this lease. */
  | { outcome: "started"; lease: ActionLease; attempt: number }
  /** Done before: the recorded result. */
  | { outcome: "completed"; record: ActionRecord }
  /** Another caller holds a live lease, which ends in `retryAfterMs`. */
  | { outcome: "in_progress"; record: ActionRecord; retryAfterMs: number }
  /** The last attempt failed and `retryFailed` was `false`. */
  | { outcome: "failed"; record: ActionRecord };

/** Counters and per-state counts. On Postgres and Redis they are shared by every instance. */
export interface StoreStats {
  /** Live records (not expired). */
  totalCached: number;
  /** Live records per state. */
  byStatus: Record<ActionStatus, number>;
  /** Claims and checks answered by a completed record. */
  cacheHits: number;
  /** Claims that started an attempt, and checks that found nothing completed. */
  cacheMisses: number;
  /** Claims that did not run the action because it was done or running. */
  duplicatesPrevented: number;
  /** Expired records removed by cleanup. */
  expiredCleaned: number;
  /** Records removed to respect the capacity (memory only; 0 elsewhere). */
  evicted: number;
}

/** Size figures. */
export interface StoreInfo {
  /** Records held, expired ones not yet cleaned included. */
  currentSize: number;
  /** The capacity, or `null` when the store has none (Redis, Postgres). */
  maxSize: number | null;
  /** `currentSize / maxSize` in percent, or `null` without a capacity. */
  utilizationPercent: number | null;
  /** When the oldest record was created. */
  oldestEntry: Date | null;
  /** When the newest record was created. */
  newestEntry: Date | null;
  /** Approximate bytes used (memory: an estimate; Redis: MEMORY USAGE sampled; Postgres: relation size). */
  approximateBytes: number;
}

/** A query over live records; the given fields must all match. */
export interface FindQuery {
  /** Records of this action type. */
  actionType?: string;
  /** Records of this target. */
  target?: string;
  /** Records of this signal. */
  signalId?: string;
  /** Records in this state. */
  status?: ActionStatus;
  /** Records that expire before this time (and have not expired). */
  expiresBefore?: Date;
  /** Most records returned, oldest first. */
  limit: number;
}

/** A pluggable action store. */
export interface ActionStore {
  /** `memory`, `redis` or `postgres`. */
  readonly name: string;
  /**
   * Claims the action atomically: exactly one concurrent caller gets `started`.
   *
   * @throws {RangeError} for a ttl or lease below 1000 ms.
   */
  claim(input: ClaimInput): Promise<ClaimResult>;
  /** Records the result; `false` when the lease is no longer the caller's (nothing is written). */
  complete(lease: ActionLease, resultJson: string): Promise<boolean>;
  /** Records the failure so a retry may run; `false` when the lease is no longer the caller's. */
  fail(lease: ActionLease, error: string): Promise<boolean>;
  /** Renews a running lease for `leaseMs`; `false` when it is no longer the caller's. */
  extend(lease: ActionLease, leaseMs: number): Promise<boolean>;
  /** The live record of `key`, or `null`; `count` adds a hit (completed) or a miss to the counters. */
  get(key: string, count?: boolean): Promise<ActionRecord | null>;
  /** The repeat check: like `get(key, true)` but only what `checkExecuted` needs (the hot path in memory). */
  check(key: string): Promise<ActionCheck | null>;
  /** Deletes a record unless a worker holds a live lease on it; `true` when one was deleted. */
  delete(key: string): Promise<boolean>;
  /** Deletes every record except those under a live lease; returns how many went. */
  clear(): Promise<number>;
  /** The counters and per-state counts. */
  stats(): Promise<StoreStats>;
  /** Sets the counters to zero. */
  resetStats(): Promise<void>;
  /** Size figures. */
  info(): Promise<StoreInfo>;
  /** Live records matching `query`, oldest first. */
  find(query: FindQuery): Promise<ActionRecord[]>;
  /** Deletes expired records (never one under a live lease); returns how many went. */
  cleanupExpired(): Promise<number>;
  /** Releases connections. */
  close(): Promise<void>;
}

/** A store that can run an action's work inside the transaction that records its result (Postgres). */
export interface TransactionalActionStore<Tx> extends ActionStore {
  /**
   * Locks the record while `lease` is current, runs `work`, and records the JSON it returns in the same
   * transaction; `false` (and nothing written) when the lease is no longer the caller's. A throw from
   * `work` rolls everything back and is rethrown as is.
   */
  completeInTransaction(lease: ActionLease, work: (tx: Tx) => Promise<string>): Promise<boolean>;
}

/**
 * {@link ActionStore.check} through `get`, for stores where the round trip dominates anyway.
 *
 * @param store The store.
 * @param key The action key.
 * @returns The check, or `null`.
 */
export async function checkThroughGet(store: ActionStore, key: string): Promise<ActionCheck | null> {
  const record = await store.get(key, true);
  if (!record) return null;
  return {
    status: record.status,
    result: record.result,
    executedAtMs: record.executedAt?.getTime() ?? null,
    ttlMs: Math.max(0, record.expiresAt.getTime() - Date.now()),
  };
}

/** The guard every store applies: durations below one second would make every record stale at once. */
export function checkMs(name: string, value: number): void {
  if (!Number.isFinite(value) || value < 1000) {
    throw new RangeError(`${name} must be at least 1000 ms, got ${value}`);
  }
}
