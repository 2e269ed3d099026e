/**
 * What the stores share: the names of the begin rules (the table in docs/guide.md, "The begin rules"), the
 * checks and constants each store applies the same way, and the mapping of a store's raw answer to a
 * {@link BeginResult}. Every store decides the rules itself, atomically (a row lock, a Lua script, a
 * synchronous map); this module only keeps their names and edges in one place.
 */

import type { BeginInput, BeginResult, BodyEncoding, StoredResponse } from "./store.ts";

/**
 * The begin rules, in the order a store applies them. Their names are used in each implementation (plpgsql,
 * Lua, TypeScript) and in the contract suite's test names.
 */
export const BEGIN_RULES = [
  /** ttl or lock timeout below one second: refused before anything is read. */
  "invalid-durations",
  /** No record in this scope: a new record, `started`, attempt 1. */
  "new-key",
  /** Past `expires_at` and no live lease: the record starts afresh as attempt 1, whatever its request. */
  "expired-restart",
  /** Past `expires_at` but a worker still holds a live lease: the record stays in force (never restarted). */
  "lease-outlives-ttl",
  /** Another request fingerprint on a record in force: `mismatch` (422), nothing changes. */
  "mismatch",
  /** Completed, same request: `replay` of the stored response; the replay count goes up. */
  "replay",
  /** Processing under a live lease, same request: `in_progress` (409), retry after the lease's remaining seconds. */
  "in-flight",
  /** Processing, the lease ended (its worker died), same request: `started`, attempt + 1, a new lease token. */
  "takeover",
  /** Failed, same request: `started`, attempt + 1, a new lease token. */
  "retry-after-failure",
] as const;

/** One begin rule's name. */
export type BeginRule = typeof BEGIN_RULES[number];

/** The longest error message a store keeps (`idempotency_fail` truncates to the same). */
export const MAX_ERROR_MESSAGE = 2000;

/**
 * Rule `invalid-durations`, as `idempotency_begin` checks it: a zero or negative duration would make every
 * record stale at once.
 *
 * @throws {RangeError} when `ttlSeconds` or `lockTimeoutSeconds` is below 1.
 */
export function checkDurations(input: Pick<BeginInput, "ttlSeconds" | "lockTimeoutSeconds">): void {
  for (const name of ["ttlSeconds", "lockTimeoutSeconds"] as const) {
    const value = input[name];
    if (!Number.isFinite(value) || value < 1) {
      throw new RangeError(`${name} must be at least 1 second, got ${value}`);
    }
  }
}

/** Rule `in-flight`: the whole seconds left on a live lease, at least 1 (as `Retry-After`). */
export function retryAfterSeconds(lockedUntilMs: number, nowMs: number): number {
  return Math.max(1, Math.ceil((lockedUntilMs - nowMs) / 1000));
}

/** A store's answer to `begin` before it is typed: each store maps its row or reply to this. */
export interface RawBegin {
  /** `started`, `replay`, `in_progress` or `mismatch`. */
  outcome: unknown;
  recordId: string;
  leaseToken?: unknown;
  attempt?: unknown;
  replayCount?: unknown;
  retryAfterSeconds?: unknown;
  /** Read only for `replay`. */
  response?: () => StoredResponse;
}

/**
 * The typed outcome of a store's raw answer.
 *
 * @throws {Error} on an outcome no rule produces.
 */
export function toBeginResult(raw: RawBegin): BeginResult {
  const { recordId } = raw;
  switch (raw.outcome) {
    case "started":
      return {
        outcome: "started",
        recordId,
        leaseToken: String(raw.leaseToken),
        attempt: Number(raw.attempt),
      };
    case "replay":
      if (!raw.response) break;
      return { outcome: "replay", recordId, response: raw.response(), replayCount: Number(raw.replayCount) };
    case "in_progress":
      return { outcome: "in_progress", recordId, retryAfterSeconds: Number(raw.retryAfterSeconds ?? 1) };
    case "mismatch":
      return { outcome: "mismatch", recordId };
  }
  throw new Error(`begin returned an unknown outcome: ${JSON.stringify(raw.outcome)}`);
}

/** A stored body encoding from a store's column or field: `gzip`, `br` or `zdict`, any other value `identity`. */
export function bodyEncoding(value: unknown): BodyEncoding {
  return value === "gzip" || value === "br" || value === "zdict" ? value : "identity";
}

/** A stored response from a store's columns or fields (the encoding as {@link bodyEncoding} reads it). */
export function storedResponse(
  status: unknown,
  headers: Record<string, string> | null | undefined,
  body: Uint8Array,
  encoding: unknown,
): StoredResponse {
  return {
    status: Number(status),
    headers: headers ?? {},
    body,
    encoding: bodyEncoding(encoding),
  };
}
