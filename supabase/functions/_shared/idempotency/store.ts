/**
 * The contract every idempotency store implements: Postgres (the Supabase default), in-memory, Redis.
 *
 * Each method is one atomic state change. A store decides races itself (a unique row, a Lua script, a
 * single-threaded map), so the middleware never reads-then-writes.
 *
 * A public import path of its own, for store authors: a function author never names these types (the
 * options take a store, the ready stores are in the main entry `../idempotency.ts`).
 *
 * @module
 */

/**
 * Where a key lives: one scope per user; `null` is the shared scope of calls without a user.
 *
 * @example One user's key
 * ```ts
 * import type { KeyScope } from "./store.ts";
 *
 * const scope: KeyScope = { key: "order-42", userId: "8d0fd2b3-9ca3-4a1a-9b11-3a2cde0f1e52" };
 * console.assert(scope.key === "order-42");
 * ```
 */
export interface KeyScope {
  /** The client's idempotency key, already validated. */
  key: string;
  /** The verified user id (JWT `sub`), or `null` for calls without a user. */
  userId: string | null;
}

/**
 * Everything `begin` needs to claim a key.
 *
 * @example Claim a key directly
 * ```ts
 * import { MemoryStore } from "./stores/memory.ts";
 * import type { BeginInput } from "./store.ts";
 *
 * const input: BeginInput = {
 *   key: "order-42", userId: null, functionName: "charge", fingerprint: "f".repeat(64),
 *   ttlSeconds: 86_400, lockTimeoutSeconds: 30,
 * };
 * console.assert((await new MemoryStore().begin(input)).outcome === "started");
 * ```
 */
export interface BeginInput extends KeyScope {
  /** The edge function's name, e.g. `process-document`. */
  functionName: string;
  /** Hex SHA-256 of the request (see fingerprint.ts). */
  fingerprint: string;
  /** How long the record lives, in seconds (kept at least this long after it is created). */
  ttlSeconds: number;
  /** How long a claim holds before another request may take it over, in seconds. */
  lockTimeoutSeconds: number;
}

/**
 * How a stored body is encoded: `identity` (the bytes as sent), `gzip`, `br` (brotli, what the toolkit
 * writes for bodies up to 64 KiB since it replaced gzip there; earlier `gzip` records are still read), or
 * `zdict` (zlib against one of the function's `responseDictionaries`, named in its header).
 *
 * @example Tell a compressed body
 * ```ts
 * import type { BodyEncoding } from "./store.ts";
 *
 * const compressed = (encoding: BodyEncoding) => encoding !== "identity";
 * console.assert(compressed("br"));
 * ```
 */
export type BodyEncoding = "identity" | "gzip" | "br" | "zdict";

/**
 * A stored response, as `complete` received it.
 *
 * @example A stored JSON answer
 * ```ts
 * import type { StoredResponse } from "./store.ts";
 *
 * const stored: StoredResponse = {
 *   status: 201, headers: { "content-type": "application/json" },
 *   body: new TextEncoder().encode("{}"), encoding: "identity",
 * };
 * console.assert(stored.status === 201);
 * ```
 */
export interface StoredResponse {
  /** HTTP status code. */
  status: number;
  /** Response headers that are safe to replay (lower-case names). */
  headers: Record<string, string>;
  /** The body bytes, or their compression when `encoding` is not `identity`. */
  body: Uint8Array;
  /** How `body` is stored. */
  encoding: BodyEncoding;
}

/**
 * The one outcome of `begin`.
 *
 * @example Act on each outcome
 * ```ts
 * import type { BeginResult } from "./store.ts";
 *
 * function describe(result: BeginResult): string {
 *   switch (result.outcome) {
 *     case "started": return `run it (attempt ${result.attempt})`;
 *     case "replay": return `answer the stored ${result.response.status}`;
 *     case "in_progress": return `409, retry in ${result.retryAfterSeconds} s`;
 *     case "mismatch": return "422";
 *   }
 * }
 * console.assert(describe({ outcome: "mismatch", recordId: "r" }) === "422");
 * ```
 */
export type BeginResult =
  /** The caller owns the key: run the work, then `complete` or `fail` with this lease. */
  | { outcome: "started"; recordId: string; leaseToken: string; attempt: number }
  /** Completed before: the stored response. */
  | { outcome: "replay"; recordId: string; response: StoredResponse; replayCount: number }
  /** Another request holds a live lease; it runs out in `retryAfterSeconds`. */
  | { outcome: "in_progress"; recordId: string; retryAfterSeconds: number }
  /** The key was used with another request fingerprint. */
  | { outcome: "mismatch"; recordId: string };

/**
 * The proof of ownership that `complete`, `fail` and `extendLease` check.
 *
 * @example Keep the lease of a started claim
 * ```ts
 * import { MemoryStore } from "./stores/memory.ts";
 * import type { Lease } from "./store.ts";
 *
 * const store = new MemoryStore();
 * const claim = await store.begin({ key: "k-1", userId: null, functionName: "f", fingerprint: "x", ttlSeconds: 60, lockTimeoutSeconds: 30 });
 * if (claim.outcome === "started") {
 *   const lease: Lease = { recordId: claim.recordId, leaseToken: claim.leaseToken };
 *   console.assert(await store.fail(lease, { message: "boom" }));
 * }
 * ```
 */
export interface Lease {
  /** The record `begin` returned. */
  recordId: string;
  /** The token `begin` returned with `started`; a taken-over lease no longer matches. */
  leaseToken: string;
}

/**
 * What a caller may read about its own key (never the body).
 *
 * @example Show a key's state
 * ```ts
 * import type { KeyStatus } from "./store.ts";
 *
 * const label = (status: KeyStatus) => `${status.key}: ${status.status} after ${status.attemptCount} attempt(s)`;
 * console.assert(typeof label === "function");
 * ```
 */
export interface KeyStatus {
  /** The idempotency key. */
  key: string;
  /** The function that claimed it. */
  functionName: string;
  /** Running (or abandoned), finished with a stored response, or released after a failure. */
  status: "processing" | "completed" | "failed";
  /** The stored (or failed) HTTP status, when there is one. */
  statusCode: number | null;
  /** How many times a handler was started for it. */
  attemptCount: number;
  /** How many times its response was replayed. */
  replayCount: number;
  /** When the record was created (or restarted after expiry). */
  createdAt: Date;
  /** When the last attempt finished. */
  completedAt: Date | null;
  /** When the record expires. */
  expiresAt: Date;
}

/**
 * A pluggable idempotency store.
 *
 * @example Use any store through the contract
 * ```ts
 * import type { IdempotencyStore } from "./store.ts";
 * import { MemoryStore } from "./stores/memory.ts";
 *
 * async function purge(store: IdempotencyStore): Promise<number> {
 *   return await store.cleanup({ batchSize: 1000 });
 * }
 * console.assert((await purge(new MemoryStore())) === 0);
 * ```
 */
export interface IdempotencyStore {
  /** A short name for logs and errors: `postgres`, `memory`, `redis`. */
  readonly name: string;
  /**
   * Claims a key: one outcome, decided atomically.
   *
   * @param input The key, its scope and request fingerprint, and the durations.
   * @returns The outcome the begin rules give.
   * @throws {RangeError} rule invalid-durations; another error when the store cannot be reached.
   */
  begin(input: BeginInput): Promise<BeginResult>;
  /**
   * Stores the response; `false` when the lease is no longer the caller's (nothing is written).
   *
   * @param lease What `begin` returned with `started`.
   * @param response The response to keep.
   * @returns `false` when the lease is no longer the caller's (nothing was written).
   */
  complete(lease: Lease, response: StoredResponse): Promise<boolean>;
  /**
   * Marks the attempt failed so a retry runs again; `false` when the lease is no longer the caller's.
   *
   * @param lease What `begin` returned with `started`.
   * @param error The failure, kept for operators (never replayed).
   * @returns `false` when the lease is no longer the caller's.
   */
  fail(lease: Lease, error: { message: string; status?: number }): Promise<boolean>;
  /**
   * Renews a running lease for `lockTimeoutSeconds` more; `false` when it is no longer the caller's.
   *
   * @param lease What `begin` returned with `started`.
   * @param lockTimeoutSeconds The new lease length, from now.
   * @returns `false` when the lease is no longer the caller's.
   */
  extendLease(lease: Lease, lockTimeoutSeconds: number): Promise<boolean>;
  /**
   * The status of one key in one scope, or `null` when there is none (or it expired).
   *
   * @param scope The key and its user.
   * @returns The key's state, or `null` when there is none (or it expired).
   */
  status(scope: KeyScope): Promise<KeyStatus | null>;
  /**
   * Deletes expired records, at most `batchSize` per batch; returns how many were deleted.
   *
   * @param options `batchSize`: the most records deleted per batch.
   * @returns How many records were deleted.
   */
  cleanup(options?: { batchSize?: number }): Promise<number>;
  /** Releases connections; a store is not used after it. */
  close(): Promise<void>;
}
