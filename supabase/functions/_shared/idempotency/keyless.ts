/**
 * Keyless duplicate protection: a request sent without a key (a double click, a client's blind retry) gets a
 * key derived from who sends it, to which function, and what it sends, so an identical request that follows
 * within the window is answered as a duplicate instead of running again.
 *
 * Time is cut into buckets of `windowMs`, and a request in bucket `n` must claim both bucket `n` and bucket
 * `n + 1` to run. Two requests less than `windowMs` apart are in the same bucket or in neighbouring ones, so
 * they share at least one claimed key whichever side of a boundary they fall, and only one of them runs.
 * Requests `2 * windowMs` or more apart never share a key. Each claim is the store's own atomic `begin`, so
 * the guarantee holds across instances exactly as for explicit keys.
 */

import { createHash } from "node:crypto";
import type {
  BeginInput,
  BeginResult,
  IdempotencyStore,
  KeyScope,
  KeyStatus,
  Lease,
  StoredResponse,
} from "./store.ts";

/** What a keyless key is derived from. */
export interface KeylessInput {
  /** `user` or `service`: anonymous callers are never merged (nothing tells two of them apart). */
  callerKind: "user" | "service";
  /** The user id for `user`, `null` for the service. */
  userId: string | null;
  /** The edge function's name. */
  functionName: string;
  /** The request fingerprint (method, path, canonical body, caller kind). */
  fingerprint: string;
}

/** Keyless keys start with this, so an operator tells them apart from client keys. */
export const KEYLESS_KEY_PREFIX = "kl_";

/**
 * The base of a request's keyless key: `kl_` and 48 hex characters of SHA-256 over the caller, the user,
 * the function and the fingerprint. Deterministic: the same request by the same caller gives the same base.
 *
 * @param input What the key is derived from.
 * @returns A valid idempotency key (the bucket is appended by {@link KeylessPairStore}).
 * @example Derive a base key
 * ```ts
 * const key = keylessBaseKey({ callerKind: "user", userId: "u1", functionName: "f", fingerprint: "ab" });
 * ```
 */
export function keylessBaseKey(input: KeylessInput): string {
  const hash = createHash("sha256");
  for (
    const part of ["keyless/v1", input.callerKind, input.userId ?? "", input.functionName, input.fingerprint]
  ) {
    hash.update(`${part.length}:${part},`);
  }
  return `${KEYLESS_KEY_PREFIX}${hash.digest("hex").slice(0, 48)}`;
}

/**
 * The bucket index of `nowMs` for a window of `windowMs`.
 *
 * @param nowMs Epoch milliseconds.
 * @param windowMs The bucket width, in milliseconds.
 * @returns `floor(nowMs / windowMs)`.
 * @example Bucket of a time
 * ```ts
 * bucketOf(1_000_099, 100); // 10000
 * ```
 */
export function bucketOf(nowMs: number, windowMs: number): number {
  return Math.floor(nowMs / windowMs);
}

/** Options of {@link KeylessPairStore}. */
export interface KeylessPairStoreOptions {
  /**
   * The bucket width in milliseconds: requests closer than this are always one run.
   * @default 100
   */
  windowMs?: number;
  /**
   * The clock in epoch milliseconds.
   * @default Date.now
   */
  now?: () => number;
}

/**
 * A store that claims the two bucket keys of a keyless request on `inner` and presents them as one claim:
 * `started` only when both are claimed; otherwise the first is released and the other key's outcome
 * (replay or in progress) is returned. `complete`, `fail` and `extendLease` apply to both keys.
 *
 * @example Wrap a store
 * ```ts
 * import { MemoryStore } from "./stores/memory.ts";
 * const store = new KeylessPairStore(new MemoryStore(), { windowMs: 100 });
 * ```
 */
export class KeylessPairStore implements IdempotencyStore {
  /** The inner store's name. */
  readonly name: string;
  readonly #inner: IdempotencyStore;
  readonly #windowMs: number;
  readonly #now: () => number;

  /**
   * Wraps `inner`; opens nothing.
   *
   * @param inner The store the two keys are claimed on.
   * @param options The window and the clock.
   * @throws {RangeError} when `windowMs` is not a positive integer.
   */
  constructor(inner: IdempotencyStore, options: KeylessPairStoreOptions = {}) {
    this.#inner = inner;
    this.name = inner.name;
    this.#windowMs = options.windowMs ?? 100;
    this.#now = options.now ?? Date.now;
    if (!Number.isInteger(this.#windowMs) || this.#windowMs < 1) {
      throw new RangeError(`windowMs must be a positive integer, got ${options.windowMs}`);
    }
  }

  /**
   * Claims bucket `n` then bucket `n + 1` of `input.key` (always in that order, so a burst always leaves
   * the latest claimant holding both and running).
   *
   * @param input The claim, with the keyless base key as `key`.
   * @returns One outcome for the pair.
   */
  async begin(input: BeginInput): Promise<BeginResult> {
    const bucket = bucketOf(this.#now(), this.#windowMs);
    const first = await this.#inner.begin({ ...input, key: `${input.key}_${bucket}` });
    if (first.outcome !== "started") return first;
    const firstLease: Lease = { recordId: first.recordId, leaseToken: first.leaseToken };
    let second: BeginResult;
    try {
      second = await this.#inner.begin({ ...input, key: `${input.key}_${bucket + 1}` });
    } catch (error) {
      await this.#inner.fail(firstLease, { message: "keyless: second bucket unreachable" }).catch(() =>
        false
      );
      throw error;
    }
    if (second.outcome !== "started") {
      await this.#inner.fail(firstLease, { message: "keyless: duplicate of a neighbouring request" });
      return second;
    }
    return {
      outcome: "started",
      recordId: JSON.stringify([first.recordId, second.recordId]),
      leaseToken: JSON.stringify([first.leaseToken, second.leaseToken]),
      attempt: Math.max(first.attempt, second.attempt),
    };
  }

  /** Stores the response under both keys; `false` if either lease was lost. */
  async complete(lease: Lease, response: StoredResponse): Promise<boolean> {
    const results = await Promise.all(splitLease(lease).map((one) => this.#inner.complete(one, response)));
    return results.every(Boolean);
  }

  /** Releases both keys; `false` if either lease was lost. */
  async fail(lease: Lease, error: { message: string; status?: number }): Promise<boolean> {
    const results = await Promise.all(splitLease(lease).map((one) => this.#inner.fail(one, error)));
    return results.every(Boolean);
  }

  /** Renews both leases; `false` if either was lost. */
  async extendLease(lease: Lease, lockTimeoutSeconds: number): Promise<boolean> {
    const results = await Promise.all(
      splitLease(lease).map((one) => this.#inner.extendLease(one, lockTimeoutSeconds)),
    );
    return results.every(Boolean);
  }

  /** The status of one stored key, as the inner store reads it. */
  status(scope: KeyScope): Promise<KeyStatus | null> {
    return this.#inner.status(scope);
  }

  /** The inner store's cleanup. */
  cleanup(options?: { batchSize?: number }): Promise<number> {
    return this.#inner.cleanup(options);
  }

  /** Leaves the inner store open: it is shared with keyed requests. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * Whether `lease` is a keyless pair's (two records), as {@link KeylessPairStore.begin} hands out.
 *
 * @param lease A lease.
 * @returns `true` for a pair.
 */
export function isLeasePair(lease: Lease): boolean {
  return lease.recordId.startsWith("[");
}

/**
 * The two leases of a pair; a lease that is not a pair cannot be ours and matches nothing.
 *
 * @param lease A pair's lease.
 * @returns Its two leases, or none.
 */
export function splitLease(lease: Lease): Lease[] {
  try {
    const ids: unknown = JSON.parse(lease.recordId);
    const tokens: unknown = JSON.parse(lease.leaseToken);
    if (Array.isArray(ids) && Array.isArray(tokens) && ids.length === 2 && tokens.length === 2) {
      return ids.map((recordId, i) => ({ recordId: String(recordId), leaseToken: String(tokens[i]) }));
    }
  } catch {
    // not a pair: falls through
  }
  return [];
}
