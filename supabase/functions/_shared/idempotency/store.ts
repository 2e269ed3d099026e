/**
 * The contract every idempotency store implements: Postgres (the Supabase default), in-memory, Redis.
 *
 * Each method is one atomic state change. A store decides races itself (a unique row, a Lua script, a
 * single-threaded map), so the middleware never reads-then-writes.
 */

/** Where a key lives: one scope per user; `null` is the shared scope of calls without a user. */
export interface KeyScope {
  /** The client's idempotency key, already validated. */
  key: string;
  /** The verified user id (JWT `sub`), or `null` for calls without a user. */
  userId: string | null;
}

/** Everything `begin` needs to claim a key. */
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

/** A stored response, as `complete` received it. */
export interface StoredResponse {
  /** HTTP status code. */
  status: number;
  /** Response headers that are safe to replay (lower-case names). */
  headers: Record<string, string>;
  /** The body bytes, or their gzip when `encoding` is `gzip`. */
  body: Uint8Array;
  /** How `body` is stored. */
  encoding: "identity" | "gzip";
}

/** The one outcome of `begin`. */
export type BeginResult =
  /** The caller owns the key: run the work, then `complete` or `fail` with this lease. */
  | { outcome: "started"; recordId: string; leaseToken: string; attempt: number }
  /** Completed before: the stored response. */
  | { outcome: "replay"; recordId: string; response: StoredResponse; replayCount: number }
  /** Another request holds a live lease; it runs out in `retryAfterSeconds`. */
  | { outcome: "in_progress"; recordId: string; retryAfterSeconds: number }
  /** The key was used with another request fingerprint. */
  | { outcome: "mismatch"; recordId: string };

/** The proof of ownership that `complete`, `fail` and `extendLease` check. */
export interface Lease {
  /** The record `begin` returned. */
  recordId: string;
  /** The token `begin` returned with `started`; a taken-over lease no longer matches. */
  leaseToken: string;
}

/** What a caller may read about its own key (never the body). */
export interface KeyStatus {
  key: string;
  functionName: string;
  status: "processing" | "completed" | "failed";
  statusCode: number | null;
  attemptCount: number;
  replayCount: number;
  createdAt: Date;
  completedAt: Date | null;
  expiresAt: Date;
}

/** A pluggable idempotency store. */
export interface IdempotencyStore {
  /** A short name for logs and errors: `postgres`, `memory`, `redis`. */
  readonly name: string;
  /** Claims a key: one outcome, decided atomically. */
  begin(input: BeginInput): Promise<BeginResult>;
  /** Stores the response; `false` when the lease is no longer the caller's (nothing is written). */
  complete(lease: Lease, response: StoredResponse): Promise<boolean>;
  /** Marks the attempt failed so a retry runs again; `false` when the lease is no longer the caller's. */
  fail(lease: Lease, error: { message: string; status?: number }): Promise<boolean>;
  /** Renews a running lease for `lockTimeoutSeconds` more; `false` when it is no longer the caller's. */
  extendLease(lease: Lease, lockTimeoutSeconds: number): Promise<boolean>;
  /** The status of one key in one scope, or `null` when there is none (or it expired). */
  status(scope: KeyScope): Promise<KeyStatus | null>;
  /** Deletes expired records, at most `batchSize` per batch; returns how many were deleted. */
  cleanup(options?: { batchSize?: number }): Promise<number>;
  /** Releases connections. */
  close(): Promise<void>;
}
