/**
 * An embedded store for tests, local development and single-instance deployments.
 *
 * Records live in this isolate only: two Edge Function instances do not see each other's keys, so this store
 * does not deduplicate across instances. It follows `idempotency_begin` outcome for outcome, so code tested
 * against it behaves the same on Postgres or Redis.
 */

import { checkDurations, MAX_ERROR_MESSAGE, retryAfterSeconds } from "../_begin_rules.ts";
import type {
  BeginInput,
  BeginResult,
  IdempotencyStore,
  KeyScope,
  KeyStatus,
  Lease,
  StoredResponse,
} from "../store.ts";

/**
 * Options for {@link MemoryStore}.
 *
 * @example A store with a test clock
 * ```ts
 * import { MemoryStore } from "./memory.ts";
 *
 * let now = 0;
 * const store = new MemoryStore({ now: () => now, maxEntries: 100 });
 * now += 1000;
 * console.assert(store.name === "memory");
 * ```
 */
export interface MemoryStoreOptions {
  /**
   * The clock in epoch milliseconds; tests inject one to expire leases without waiting. Default `Date.now`.
   *
   * @default {Date.now}
   */
  now?: () => number;
  /**
   * The most records kept; default 10000. When full, a new key first evicts expired records, then the oldest
   * ones, so memory stays bounded even if nobody calls `cleanup`. A record under a live lease is never
   * evicted (its worker is still running), so while more than `maxEntries` requests are in flight at once
   * the store holds more records than this until their leases end.
   *
   * @default {10000}
   */
  maxEntries?: number;
}

interface MemoryRecord {
  id: string;
  key: string;
  userId: string | null;
  functionName: string;
  fingerprint: string;
  status: "processing" | "completed" | "failed";
  leaseToken: string | null;
  lockedUntil: number | null;
  response: StoredResponse | null;
  statusCode: number | null;
  errorMessage: string | null;
  attemptCount: number;
  replayCount: number;
  createdAt: number;
  completedAt: number | null;
  expiresAt: number;
}

/**
 * An {@link IdempotencyStore} held in a `Map`; every method is synchronous inside, hence atomic.
 *
 * @example Idempotency within one isolate
 * ```ts
 * import { withIdempotency } from "../middleware.ts";
 * import { MemoryStore } from "./memory.ts";
 *
 * const handler = withIdempotency(() => new Response("done"), {
 *   functionName: "local-job",
 *   store: new MemoryStore(),
 *   anonymous: "shared",
 * });
 * const call = () => handler(new Request("http://localhost/", { method: "POST", headers: { "idempotency-key": "job-1" } }));
 * await (await call()).text();
 * console.assert((await call()).headers.get("x-idempotency-replay") === "true");
 * ```
 */
export class MemoryStore implements IdempotencyStore {
  /** Always `memory`. */
  readonly name = "memory";
  readonly #now: () => number;
  readonly #maxEntries: number;
  /** Records by scope; insertion order is creation order, which eviction relies on. */
  readonly #byScope = new Map<string, MemoryRecord>();
  readonly #byId = new Map<string, MemoryRecord>();

  /**
   * Throws a RangeError for a `maxEntries` below 1, which could hold no record at all.
   *
   * @param options Clock and size bound.
   * @throws {RangeError} when `maxEntries` is not a positive integer.
   */
  constructor(options: MemoryStoreOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#maxEntries = options.maxEntries ?? 10_000;
    if (!Number.isInteger(this.#maxEntries) || this.#maxEntries < 1) {
      throw new RangeError(`maxEntries must be a positive integer, got ${options.maxEntries}`);
    }
  }

  /**
   * Claims a key with the same outcomes as `idempotency_begin`.
   *
   * @param input The key, its scope and request fingerprint, and the durations.
   * @returns The outcome the begin rules give.
   * @throws {RangeError} rule invalid-durations; another error when the store cannot be reached.
   */
  begin(input: BeginInput): Promise<BeginResult> {
    return settle(() => this.#begin(input, this.#now()));
  }

  /**
   * Stores a copy of the response; `false` unless `lease` is the current one.
   *
   * @param lease What `begin` returned with `started`.
   * @param response The response to keep.
   * @returns `false` when the lease is no longer the caller's (nothing was written).
   */
  complete(lease: Lease, response: StoredResponse): Promise<boolean> {
    const record = this.#leased(lease);
    if (!record) return Promise.resolve(false);
    record.status = "completed";
    // a stored response is kept at least its TTL from now, as idempotency_complete does
    record.expiresAt = Math.max(record.expiresAt, this.#now() + record.expiresAt - record.createdAt);
    record.response = copyResponse(response);
    record.statusCode = response.status;
    record.errorMessage = null;
    this.#release(record);
    return Promise.resolve(true);
  }

  /**
   * Marks the attempt failed so the next `begin` with the same request starts again.
   *
   * @param lease What `begin` returned with `started`.
   * @param error The failure, kept for operators (never replayed).
   * @returns `false` when the lease is no longer the caller's.
   */
  fail(lease: Lease, error: { message: string; status?: number }): Promise<boolean> {
    const record = this.#leased(lease);
    if (!record) return Promise.resolve(false);
    record.status = "failed";
    record.statusCode = error.status ?? null;
    record.errorMessage = error.message.slice(0, MAX_ERROR_MESSAGE);
    this.#release(record);
    return Promise.resolve(true);
  }

  /**
   * Moves the lease end to `lockTimeoutSeconds` (at least 1) from now.
   *
   * @param lease What `begin` returned with `started`.
   * @param lockTimeoutSeconds The new lease length, from now.
   * @returns `false` when the lease is no longer the caller's.
   */
  extendLease(lease: Lease, lockTimeoutSeconds: number): Promise<boolean> {
    const record = this.#leased(lease);
    if (!record) return Promise.resolve(false);
    record.lockedUntil = this.#now() + Math.max(lockTimeoutSeconds, 1) * 1000;
    return Promise.resolve(true);
  }

  /**
   * The record of one scope, unless it expired.
   *
   * @param scope The key and its user.
   * @returns The key's state, or `null` when there is none (or it expired).
   */
  status(scope: KeyScope): Promise<KeyStatus | null> {
    const record = this.#byScope.get(scopeId(scope));
    if (!record || record.expiresAt <= this.#now()) return Promise.resolve(null);
    return Promise.resolve({
      key: record.key,
      functionName: record.functionName,
      status: record.status,
      statusCode: record.statusCode,
      attemptCount: record.attemptCount,
      replayCount: record.replayCount,
      createdAt: new Date(record.createdAt),
      completedAt: record.completedAt === null ? null : new Date(record.completedAt),
      expiresAt: new Date(record.expiresAt),
    });
  }

  /**
   * Deletes every expired record in one pass (there is no lock to hold, so `batchSize` does not apply).
   *
   * @param _options `batchSize`: the most records deleted per batch.
   * @returns How many records were deleted.
   */
  cleanup(_options?: { batchSize?: number }): Promise<number> {
    return Promise.resolve(this.#deleteExpired(this.#now()));
  }

  /** Drops every record: there is no connection to release, and a closed store should not pin memory. */
  close(): Promise<void> {
    this.#byScope.clear();
    this.#byId.clear();
    return Promise.resolve();
  }

  /** The begin rules (docs/guide.md, "The begin rules"), by name. */
  #begin(input: BeginInput, now: number): BeginResult {
    checkDurations(input); // invalid-durations
    const record = this.#byScope.get(scopeId(input));
    // new-key, expired-restart (isExpired keeps lease-outlives-ttl)
    if (!record || isExpired(record, now)) return this.#create(input, now, record);
    // takeover, retry-after-failure
    if (record.fingerprint === input.fingerprint && leaseIsFree(record, now)) {
      return this.#takeOver(record, input, now);
    }
    if (record.fingerprint !== input.fingerprint) return { outcome: "mismatch", recordId: record.id };
    if (record.status === "completed" && record.response) { // replay
      record.replayCount += 1;
      const response = copyResponse(record.response);
      return { outcome: "replay", recordId: record.id, response, replayCount: record.replayCount };
    }
    // in-flight
    const retryAfter = retryAfterSeconds(record.lockedUntil ?? now, now);
    return { outcome: "in_progress", recordId: record.id, retryAfterSeconds: retryAfter };
  }

  /** A new record, replacing an expired one in place (same id, as the SQL update keeps the row). */
  #create(input: BeginInput, now: number, expired: MemoryRecord | undefined): BeginResult {
    if (expired) this.#delete(expired);
    else this.#makeRoom(now);
    const leaseToken = crypto.randomUUID();
    const record: MemoryRecord = {
      id: expired?.id ?? crypto.randomUUID(),
      key: input.key,
      userId: input.userId,
      functionName: input.functionName,
      fingerprint: input.fingerprint,
      status: "processing",
      leaseToken,
      lockedUntil: now + input.lockTimeoutSeconds * 1000,
      response: null,
      statusCode: null,
      errorMessage: null,
      attemptCount: 1,
      replayCount: 0,
      createdAt: now,
      completedAt: null,
      expiresAt: now + input.ttlSeconds * 1000,
    };
    this.#byScope.set(scopeId(input), record);
    this.#byId.set(record.id, record);
    return started(record, leaseToken);
  }

  /** Another attempt at a failed or abandoned record: the old lease token stops working. */
  #takeOver(record: MemoryRecord, input: BeginInput, now: number): BeginResult {
    const leaseToken = crypto.randomUUID();
    record.functionName = input.functionName;
    record.status = "processing";
    record.leaseToken = leaseToken;
    record.lockedUntil = now + input.lockTimeoutSeconds * 1000;
    record.response = null;
    record.statusCode = null;
    record.errorMessage = null;
    record.completedAt = null;
    record.attemptCount += 1;
    return started(record, leaseToken);
  }

  /** The record `lease` names, only while that lease is its current one. */
  #leased(lease: Lease): MemoryRecord | undefined {
    const record = this.#byId.get(lease.recordId);
    if (!record || record.status !== "processing" || record.leaseToken !== lease.leaseToken) return undefined;
    return record;
  }

  #release(record: MemoryRecord): void {
    record.completedAt = this.#now();
    record.leaseToken = null;
    record.lockedUntil = null;
  }

  /**
   * Keeps the map below `maxEntries` before an insert: expired records go first, then the oldest. A record
   * under a live lease stays, expired or not: evicting it would let a duplicate run the work a second time.
   */
  #makeRoom(now: number): void {
    if (this.#byScope.size < this.#maxEntries) return;
    this.#deleteExpired(now);
    for (const record of this.#byScope.values()) {
      if (this.#byScope.size < this.#maxEntries) return;
      if (hasLiveLease(record, now)) continue;
      this.#delete(record);
    }
  }

  /** Deletes the expired records, as `cleanup_expired_idempotency_keys` does: none under a live lease. */
  #deleteExpired(now: number): number {
    let deleted = 0;
    for (const record of this.#byScope.values()) {
      if (!isExpired(record, now)) continue;
      this.#delete(record);
      deleted += 1;
    }
    return deleted;
  }

  #delete(record: MemoryRecord): void {
    this.#byScope.delete(scopeId(record));
    this.#byId.delete(record.id);
  }
}

/** A collision-free map key for (key, userId): JSON keeps `null` apart from the string "null". */
function scopeId(scope: KeyScope): string {
  return JSON.stringify([scope.key, scope.userId]);
}

/** A worker still runs: the record is processing and its lease has not ended. */
function hasLiveLease(record: MemoryRecord, now: number): boolean {
  return record.status === "processing" && (record.lockedUntil ?? 0) > now;
}

/**
 * Past its TTL and no longer leased, as in `idempotency_begin`: expiry never pre-empts a worker that still
 * holds a live lease, so such a record stays in force (a duplicate is `in_progress`) until the lease ends.
 */
function isExpired(record: MemoryRecord, now: number): boolean {
  return record.expiresAt <= now && !hasLiveLease(record, now);
}

/** A failed record, or a processing one whose lease ran out, may be claimed again. */
function leaseIsFree(record: MemoryRecord, now: number): boolean {
  return record.status === "failed" || (record.status === "processing" && (record.lockedUntil ?? 0) <= now);
}

function started(record: MemoryRecord, leaseToken: string): BeginResult {
  return { outcome: "started", recordId: record.id, leaseToken, attempt: record.attemptCount };
}

/** Runs `fn` now and hands back its result as a promise, turning a throw into a rejection. */
function settle<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (error) {
    return Promise.reject(error);
  }
}

/** Copies bytes and headers so neither the caller's buffers nor a replay's can change what is stored. */
function copyResponse(response: StoredResponse): StoredResponse {
  return {
    status: response.status,
    headers: { ...response.headers },
    body: response.body.slice(),
    encoding: response.encoding,
  };
}
