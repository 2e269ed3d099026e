/**
 * The in-memory action store: one `Map` in this isolate, bounded, with the seeds' eviction (oldest first,
 * a fifth of the capacity at a time) that never evicts a record under a live lease. It does not
 * deduplicate across instances; use Redis or Postgres for that.
 *
 * @module
 */

import { type ActionMeta, metaFromKey } from "./keys.ts";
import {
  type ActionCheck,
  type ActionLease,
  type ActionRecord,
  type ActionStatus,
  type ActionStore,
  checkMs,
  type ClaimInput,
  type ClaimResult,
  type FindQuery,
  type StoreInfo,
  type StoreStats,
} from "./store.ts";

/** Options for {@link MemoryActionStore}. */
export interface MemoryActionStoreOptions {
  /**
   * The most records kept. When full, expired records go first, then the oldest fifth of the capacity
   * (records under a live lease are skipped, so while more actions run at once the store holds more).
   * @default 10000
   */
  maxEntries?: number;
  /** Share of `maxEntries` evicted at once when full, in (0, 1]. @default 0.2 */
  evictionFraction?: number;
  /** The clock in epoch ms; tests inject one to expire leases without waiting. @default Date.now */
  now?: () => number;
}

const STATUS: readonly ActionStatus[] = ["processing", "completed", "failed"];
const PROCESSING = 0;
const COMPLETED = 1;
const FAILED = 2;

/**
 * One record, kept small on purpose (the bench measures it): times are ms since the store was made (small
 * integers V8 stores unboxed), status and attempt count share one number, the lease token is a counter,
 * `text` is the result JSON when completed and the error when failed, and `meta` is kept only when the key
 * does not already say it.
 */
class Entry {
  constructor(
    /** attemptCount * 4 + status index */
    public state: number,
    /** the current lease token; 0 when none */
    public token: number,
    public created: number,
    /** when completed or failed; while processing, the end of the lease */
    public executed: number,
    public expires: number,
    public text: string | null,
    public meta: ActionMeta | null,
  ) {}
}

/**
 * An {@link ActionStore} held in a `Map`; every method runs synchronously inside, hence atomically.
 *
 * @example Bounded store
 * ```ts
 * const store = new MemoryActionStore({ maxEntries: 5000 });
 * ```
 */
export class MemoryActionStore implements ActionStore {
  /** Always `memory`. */
  readonly name = "memory";
  /** The capacity. */
  readonly maxEntries: number;
  readonly #evictBatch: number;
  readonly #clock: () => number;
  /** Times are kept relative to this, so they stay small integers. */
  readonly #epoch: number;
  /** Records by key; insertion order is creation order, which eviction relies on. */
  readonly #entries = new Map<string, Entry>();
  #nextToken = 1;
  #hits = 0;
  #misses = 0;
  #duplicates = 0;
  #expiredCleaned = 0;
  #evicted = 0;

  /**
   * An empty store.
   *
   * @param options Capacity, eviction batch and clock.
   * @throws {RangeError} for a capacity below 1 or a fraction outside (0, 1].
   */
  constructor(options: MemoryActionStoreOptions = {}) {
    this.maxEntries = options.maxEntries ?? 10_000;
    const fraction = options.evictionFraction ?? 0.2;
    if (!Number.isInteger(this.maxEntries) || this.maxEntries < 1) {
      throw new RangeError(`maxEntries must be a positive integer, got ${options.maxEntries}`);
    }
    if (!(fraction > 0 && fraction <= 1)) {
      throw new RangeError(`evictionFraction must be in (0, 1], got ${options.evictionFraction}`);
    }
    this.#evictBatch = Math.max(1, Math.ceil(this.maxEntries * fraction));
    this.#clock = options.now ?? Date.now;
    this.#epoch = this.#clock();
  }

  /** Claims in one synchronous step. */
  claim(input: ClaimInput): Promise<ClaimResult> {
    try {
      return Promise.resolve(this.#claim(input));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Stores the result JSON; `false` unless `lease` is current. */
  complete(lease: ActionLease, resultJson: string): Promise<boolean> {
    const entry = this.#leased(lease);
    if (!entry) return Promise.resolve(false);
    const now = this.#now();
    entry.state = entry.state - PROCESSING + COMPLETED;
    entry.token = 0;
    entry.executed = now;
    // kept at least its TTL from completion, as on Postgres and Redis: a run that outlasted the TTL is not
    // repeated at once
    entry.expires = Math.max(entry.expires, now + entry.expires - entry.created);
    entry.text = resultJson;
    return Promise.resolve(true);
  }

  /** Records the error; `false` unless `lease` is current. */
  fail(lease: ActionLease, error: string): Promise<boolean> {
    const entry = this.#leased(lease);
    if (!entry) return Promise.resolve(false);
    entry.state = entry.state - PROCESSING + FAILED;
    entry.token = 0;
    entry.executed = this.#now();
    entry.text = error.slice(0, 2000);
    return Promise.resolve(true);
  }

  /** Moves the lease end to `leaseMs` from now. */
  extend(lease: ActionLease, leaseMs: number): Promise<boolean> {
    const entry = this.#leased(lease);
    if (!entry) return Promise.resolve(false);
    entry.executed = this.#now() + Math.max(leaseMs, 1000);
    return Promise.resolve(true);
  }

  /** The live record, counting a hit or miss when asked. */
  get(key: string, count = false): Promise<ActionRecord | null> {
    const entry = this.#entries.get(key);
    const now = this.#now();
    const live = entry !== undefined && !isExpired(entry, now);
    if (count) {
      if (live && entry.state % 4 === COMPLETED) this.#hits += 1;
      else this.#misses += 1;
    }
    return Promise.resolve(live ? this.#record(key, entry) : null);
  }

  /** The repeat check without building a record: no key parsing, and the result parsed only if read. */
  check(key: string): Promise<ActionCheck | null> {
    const entry = this.#entries.get(key);
    const now = this.#now();
    if (entry === undefined || isExpired(entry, now)) {
      this.#misses += 1;
      return Promise.resolve(null);
    }
    const status = statusOf(entry);
    const ttlMs = Math.max(0, entry.expires - now);
    if (status !== "completed") {
      this.#misses += 1;
      const executedAtMs = status === "failed" ? this.#epoch + entry.executed : null;
      return Promise.resolve({ status, result: null, executedAtMs, ttlMs });
    }
    this.#hits += 1;
    return Promise.resolve(new CompletedEntry(entry.text, this.#epoch + entry.executed, ttlMs));
  }

  /** Deletes the record unless it is under a live lease. */
  delete(key: string): Promise<boolean> {
    const entry = this.#entries.get(key);
    if (!entry || hasLiveLease(entry, this.#now())) return Promise.resolve(false);
    return Promise.resolve(this.#entries.delete(key));
  }

  /** Deletes every record not under a live lease. */
  clear(): Promise<number> {
    const now = this.#now();
    let deleted = 0;
    for (const [key, entry] of this.#entries) {
      if (hasLiveLease(entry, now)) continue;
      this.#entries.delete(key);
      deleted += 1;
    }
    return Promise.resolve(deleted);
  }

  /** Counters and per-state counts of live records (one pass). */
  stats(): Promise<StoreStats> {
    const now = this.#now();
    const byStatus = { processing: 0, completed: 0, failed: 0 };
    for (const entry of this.#entries.values()) {
      if (!isExpired(entry, now)) byStatus[statusOf(entry)] += 1;
    }
    return Promise.resolve({
      totalCached: byStatus.processing + byStatus.completed + byStatus.failed,
      byStatus,
      cacheHits: this.#hits,
      cacheMisses: this.#misses,
      duplicatesPrevented: this.#duplicates,
      expiredCleaned: this.#expiredCleaned,
      evicted: this.#evicted,
    });
  }

  /** Sets the counters to zero. */
  resetStats(): Promise<void> {
    this.#hits =
      this.#misses =
      this.#duplicates =
      this.#expiredCleaned =
      this.#evicted =
        0;
    return Promise.resolve();
  }

  /** Size figures; `approximateBytes` is an estimate from string lengths plus a fixed cost per record. */
  info(): Promise<StoreInfo> {
    let bytes = 0;
    for (const [key, entry] of this.#entries) {
      bytes += ENTRY_OVERHEAD_BYTES + key.length + (entry.text?.length ?? 0);
    }
    const first = this.#entries.values().next();
    let newest: Entry | undefined;
    for (const entry of this.#entries.values()) newest = entry;
    const size = this.#entries.size;
    return Promise.resolve({
      currentSize: size,
      maxSize: this.maxEntries,
      utilizationPercent: (size / this.maxEntries) * 100,
      oldestEntry: first.done ? null : new Date(this.#epoch + first.value.created),
      newestEntry: newest ? new Date(this.#epoch + newest.created) : null,
      approximateBytes: bytes,
    });
  }

  /** A scan in creation order. */
  find(query: FindQuery): Promise<ActionRecord[]> {
    const now = this.#now();
    const before = query.expiresBefore === undefined ? Infinity : query.expiresBefore.getTime() - this.#epoch;
    const found: ActionRecord[] = [];
    for (const [key, entry] of this.#entries) {
      if (found.length >= query.limit) break;
      if (isExpired(entry, now) || entry.expires >= before) continue;
      if (query.status !== undefined && statusOf(entry) !== query.status) continue;
      const meta = entry.meta ?? metaFromKey(key);
      if (query.actionType !== undefined && meta.actionType !== query.actionType) continue;
      if (query.target !== undefined && meta.target !== query.target) continue;
      if (query.signalId !== undefined && meta.signalId !== query.signalId) continue;
      found.push(this.#record(key, entry));
    }
    return Promise.resolve(found);
  }

  /** Deletes expired records (none under a live lease). */
  cleanupExpired(): Promise<number> {
    return Promise.resolve(this.#deleteExpired(this.#now()));
  }

  /** Drops every record. */
  close(): Promise<void> {
    this.#entries.clear();
    return Promise.resolve();
  }

  #now(): number {
    return this.#clock() - this.#epoch;
  }

  #claim(input: ClaimInput): ClaimResult {
    checkMs("ttlMs", input.ttlMs);
    checkMs("leaseMs", input.leaseMs);
    const now = this.#now();
    const entry = this.#entries.get(input.key);
    if (!entry || isExpired(entry, now)) {
      if (entry) this.#entries.delete(input.key);
      else this.#makeRoom(now);
      const fresh = new Entry(4 + PROCESSING, 0, now, 0, now + input.ttlMs, null, ownMeta(input));
      this.#entries.set(input.key, fresh);
      return this.#start(input, fresh, now);
    }
    const status = entry.state % 4;
    if (status === COMPLETED) {
      this.#hits += 1;
      this.#duplicates += 1;
      return { outcome: "completed", record: this.#record(input.key, entry) };
    }
    if (status === PROCESSING && entry.executed > now) {
      this.#duplicates += 1;
      return {
        outcome: "in_progress",
        record: this.#record(input.key, entry),
        retryAfterMs: entry.executed - now,
      };
    }
    if (status === FAILED && !input.retryFailed) {
      return { outcome: "failed", record: this.#record(input.key, entry) };
    }
    // a failed attempt, or one whose lease ran out: the next attempt, under a new token
    entry.state = (Math.floor(entry.state / 4) + 1) * 4 + PROCESSING;
    entry.text = null;
    return this.#start(input, entry, now);
  }

  #start(input: ClaimInput, entry: Entry, now: number): ClaimResult {
    this.#misses += 1;
    entry.token = this.#nextToken++;
    entry.executed = now + input.leaseMs;
    return {
      outcome: "started",
      lease: { key: input.key, token: String(entry.token) },
      attempt: entry.state >> 2,
    };
  }

  #leased(lease: ActionLease): Entry | undefined {
    const entry = this.#entries.get(lease.key);
    if (!entry || entry.state % 4 !== PROCESSING || String(entry.token) !== lease.token) return undefined;
    return entry;
  }

  /** Before an insert into a full map: expired records first, then the oldest batch, never a live lease. */
  #makeRoom(now: number): void {
    if (this.#entries.size < this.maxEntries) return;
    this.#deleteExpired(now);
    if (this.#entries.size < this.maxEntries) return;
    let toEvict = this.#evictBatch;
    for (const [key, entry] of this.#entries) {
      if (toEvict === 0) break;
      if (hasLiveLease(entry, now)) continue;
      this.#entries.delete(key);
      this.#evicted += 1;
      toEvict -= 1;
    }
  }

  #deleteExpired(now: number): number {
    let deleted = 0;
    for (const [key, entry] of this.#entries) {
      if (!isExpired(entry, now)) continue;
      this.#entries.delete(key);
      deleted += 1;
    }
    this.#expiredCleaned += deleted;
    return deleted;
  }

  #record(key: string, entry: Entry): ActionRecord {
    const status = statusOf(entry);
    const meta = entry.meta ?? metaFromKey(key);
    return {
      key,
      actionType: meta.actionType,
      target: meta.target,
      signalId: meta.signalId,
      paramsHash: meta.paramsHash,
      status,
      result: status === "completed" && entry.text !== null ? JSON.parse(entry.text) : null,
      error: status === "failed" ? entry.text : null,
      attemptCount: entry.state >> 2,
      createdAt: new Date(this.#epoch + entry.created),
      executedAt: status === "processing" ? null : new Date(this.#epoch + entry.executed),
      expiresAt: new Date(this.#epoch + entry.expires),
      leaseExpiresAt: status === "processing" ? new Date(this.#epoch + entry.executed) : null,
    };
  }
}

/** A completed check whose result is parsed only when read (a class: a literal with a getter costs more). */
class CompletedEntry implements ActionCheck {
  readonly status = "completed" as const;
  constructor(readonly text: string | null, readonly executedAtMs: number, readonly ttlMs: number) {}

  /** The result, parsed from its JSON on each read. */
  get result(): unknown {
    return this.text === null ? null : JSON.parse(this.text);
  }
}

/** A fixed cost per record for `info().approximateBytes`: the Map slot, the entry object, two string headers. */
const ENTRY_OVERHEAD_BYTES = 120;

function statusOf(entry: Entry): ActionStatus {
  return STATUS[entry.state % 4] ?? "processing";
}

function hasLiveLease(entry: Entry, now: number): boolean {
  return entry.state % 4 === PROCESSING && entry.executed > now;
}

/** Past its TTL and not under a live lease: expiry never pre-empts a running worker. */
function isExpired(entry: Entry, now: number): boolean {
  return entry.expires <= now && !hasLiveLease(entry, now);
}

/** The metadata to keep: none when the key already says exactly this. */
function ownMeta(input: ClaimInput): ActionMeta | null {
  const fromKey = metaFromKey(input.key);
  const m = input.meta;
  const same = m.actionType === fromKey.actionType && m.target === fromKey.target &&
    m.signalId === fromKey.signalId && m.paramsHash === fromKey.paramsHash;
  return same ? null : { ...m };
}
