/**
 * Direct calls on a store, for code that manages keys itself (a queue worker, a status endpoint, a cron
 * job) instead of wrapping a handler with `withIdempotency`. Each uses the default store when none is given.
 *
 * Every call reports a failure as a rejected promise, never a synchronous throw: that includes a default
 * store that cannot be opened (no `store` given and `SUPABASE_DB_URL` unset).
 */

import { fromStoredResponse, toStoredResponse } from "./_codec.ts";
import { checkDictionaries } from "./_dictionary.ts";
import { DEFAULT_OPTIONS, defaultStore, type IdempotencyOptions } from "./options.ts";
import type {
  BeginInput,
  BeginResult,
  IdempotencyStore,
  KeyScope,
  KeyStatus,
  Lease,
  StoredResponse,
} from "./store.ts";

/**
 * Which store a call uses.
 *
 * @example Direct calls on a store of your choice
 * ```ts
 * import { checkIdempotency } from "./api.ts";
 * import { MemoryStore } from "./stores/memory.ts";
 *
 * console.assert((await checkIdempotency({ key: "k-1", userId: null }, { store: new MemoryStore() })) === null);
 * ```
 */
export interface StoreOption {
  /**
   * Default: the shared `PostgresStore` on `SUPABASE_DB_URL`.
   *
   * @default {defaultStore()} the shared `PostgresStore` on `SUPABASE_DB_URL`}
   */
  store?: IdempotencyStore;
}

/**
 * The status of one key in one scope, or `null` when there is none. Read-only: nothing is claimed.
 *
 * @param scope The key and its user.
 * @param options Which store.
 * @returns The key's state, or `null`.
 * @throws {Error} (as a rejection) when the store cannot be reached or opened.
 * @example Answer a status endpoint
 * ```ts
 * import { checkIdempotency } from "./api.ts";
 * import { MemoryStore } from "./stores/memory.ts";
 *
 * const status = await checkIdempotency({ key: "order-42", userId: null }, { store: new MemoryStore() });
 * console.assert(status === null); // never claimed
 * ```
 */
export function checkIdempotency(scope: KeyScope, options: StoreOption = {}): Promise<KeyStatus | null> {
  return withStore(options, (store) => store.status(scope));
}

/**
 * Claims a key: `started` (run the work, then store or fail it), `replay`, `in_progress` or `mismatch`.
 *
 * @param input The key, scope, request fingerprint and durations.
 * @param options Which store.
 * @returns The outcome of the begin rules.
 * @throws {RangeError} (as a rejection) rule invalid-durations; another error when the store fails.
 * @example A queue worker claims its job
 * ```ts
 * import { createIdempotencyKey, storeIdempotencyResult } from "./api.ts";
 * import { requestFingerprint } from "./fingerprint.ts";
 * import { MemoryStore } from "./stores/memory.ts";
 *
 * const store = new MemoryStore();
 * const body = new TextEncoder().encode(JSON.stringify({ job: 7 }));
 * const fingerprint = requestFingerprint({ method: "POST", path: "/jobs/7", body });
 * const claim = await createIdempotencyKey(
 *   { key: "job-7", userId: null, functionName: "worker", fingerprint, ttlSeconds: 86_400, lockTimeoutSeconds: 60 },
 *   { store },
 * );
 * if (claim.outcome === "started") {
 *   await storeIdempotencyResult(claim, Response.json({ done: true }), { store });
 * }
 * ```
 */
export function createIdempotencyKey(input: BeginInput, options: StoreOption = {}): Promise<BeginResult> {
  return withStore(options, (store) => store.begin(input));
}

/**
 * Stores the result of a `started` claim. A `Response` is stored as the middleware stores one (safe
 * headers, compressed past `compressThresholdBytes`, body omitted past `maxStoredBodyBytes`; defaults as in
 * `withIdempotency`). Returns `false` when the lease is no longer the caller's (nothing was written).
 *
 * @param lease What `createIdempotencyKey` returned with `started`.
 * @param response A `Response` (stored as the middleware stores one) or a `StoredResponse`.
 * @param options Which store, and `compressThresholdBytes` / `maxStoredBodyBytes` / `responseDictionaries`
 *   (defaults as in `withIdempotency`).
 * @returns `false` when the lease is no longer the caller's (nothing was written).
 * @throws {Error} (as a rejection) when the store fails, or a `RangeError` for an invalid dictionary.
 * @example Store a worker's answer
 * ```ts
 * import { createIdempotencyKey, storeIdempotencyResult } from "./api.ts";
 * import { MemoryStore } from "./stores/memory.ts";
 *
 * const store = new MemoryStore();
 * const claim = await createIdempotencyKey({ key: "k-2", userId: null, functionName: "w", fingerprint: "x", ttlSeconds: 60, lockTimeoutSeconds: 30 }, { store });
 * if (claim.outcome === "started") console.assert(await storeIdempotencyResult(claim, new Response("ok"), { store }));
 * ```
 */
export async function storeIdempotencyResult(
  lease: Lease,
  response: Response | StoredResponse,
  options:
    & StoreOption
    & Pick<IdempotencyOptions, "compressThresholdBytes" | "maxStoredBodyBytes" | "responseDictionaries"> = {},
): Promise<boolean> {
  const stored = response instanceof Response ? await storedFromResponse(response, options) : response;
  return await storeOf(options).complete(lease, stored);
}

/**
 * The response a `replay` claim carries, as the middleware replays it: the body decoded (`br`, `gzip`, or
 * `zdict` with the dictionaries it was stored with) and `X-Idempotency-Replay: true`.
 *
 * @param stored `claim.response` of a `replay` outcome.
 * @param options `responseDictionaries`, as given to `storeIdempotencyResult` (default none).
 * @returns A new `Response` each call.
 * @throws {Error} (as a rejection) on a corrupt body, or a `zdict` body whose dictionary is not listed.
 * @example Answer a duplicate job with the first result
 * ```ts
 * import { createIdempotencyKey, replayIdempotencyResult, storeIdempotencyResult } from "./api.ts";
 * import { MemoryStore } from "./stores/memory.ts";
 *
 * const store = new MemoryStore();
 * const input = { key: "k-4", userId: null, functionName: "w", fingerprint: "x", ttlSeconds: 60, lockTimeoutSeconds: 30 };
 * const first = await createIdempotencyKey(input, { store });
 * if (first.outcome === "started") await storeIdempotencyResult(first, Response.json({ done: true }), { store });
 * const again = await createIdempotencyKey(input, { store });
 * if (again.outcome === "replay") console.assert((await (await replayIdempotencyResult(again.response)).json()).done);
 * ```
 */
export async function replayIdempotencyResult(
  stored: StoredResponse,
  options: Pick<IdempotencyOptions, "responseDictionaries"> = {},
): Promise<Response> {
  return await fromStoredResponse(stored, checkDictionaries(options.responseDictionaries ?? []));
}

/**
 * Releases a `started` claim after a failure so a retry runs again; `false` when the lease was lost.
 *
 * @param lease What `createIdempotencyKey` returned with `started`.
 * @param error What failed; its message is kept for operators.
 * @param options Which store, and the HTTP status to record.
 * @returns `false` when the lease was lost.
 * @throws {Error} (as a rejection) when the store fails.
 * @example Release a job that failed
 * ```ts
 * import { createIdempotencyKey, markIdempotencyFailed } from "./api.ts";
 * import { MemoryStore } from "./stores/memory.ts";
 *
 * const store = new MemoryStore();
 * const claim = await createIdempotencyKey({ key: "k-3", userId: null, functionName: "w", fingerprint: "x", ttlSeconds: 60, lockTimeoutSeconds: 30 }, { store });
 * if (claim.outcome === "started") await markIdempotencyFailed(claim, new Error("upstream down"), { store, status: 502 });
 * ```
 */
export function markIdempotencyFailed(
  lease: Lease,
  error: unknown,
  options: StoreOption & { status?: number } = {},
): Promise<boolean> {
  const message = error instanceof Error ? error.message : String(error);
  return withStore(
    options,
    (store) =>
      store.fail(lease, options.status === undefined ? { message } : { message, status: options.status }),
  );
}

/**
 * Deletes expired keys; returns how many. `batchSize` bounds each delete (Postgres default 10000).
 *
 * @param options Which store, and `batchSize` (Postgres default 10000).
 * @returns How many records were deleted.
 * @throws {Error} (as a rejection) when the store fails.
 * @example A cleanup job
 * ```ts
 * import { cleanupExpiredKeys } from "./api.ts";
 * import { MemoryStore } from "./stores/memory.ts";
 *
 * console.assert((await cleanupExpiredKeys({ store: new MemoryStore(), batchSize: 5000 })) === 0);
 * ```
 */
export function cleanupExpiredKeys(options: StoreOption & { batchSize?: number } = {}): Promise<number> {
  return withStore(
    options,
    (store) => store.cleanup(options.batchSize === undefined ? {} : { batchSize: options.batchSize }),
  );
}

async function storedFromResponse(
  response: Response,
  options: Pick<IdempotencyOptions, "compressThresholdBytes" | "maxStoredBodyBytes" | "responseDictionaries">,
): Promise<StoredResponse> {
  const body = new Uint8Array(await response.arrayBuffer());
  return await toStoredResponse({ status: response.status, headers: response.headers, body }, {
    compressThresholdBytes: options.compressThresholdBytes ?? DEFAULT_OPTIONS.compressThresholdBytes,
    maxStoredBodyBytes: options.maxStoredBodyBytes ?? DEFAULT_OPTIONS.maxStoredBodyBytes,
    responseDictionaries: checkDictionaries(options.responseDictionaries ?? []),
  });
}

function storeOf(options: StoreOption): IdempotencyStore {
  return options.store ?? defaultStore();
}

/**
 * `call` on the store of `options`, with any synchronous throw (opening the default store, or a store
 * method that throws before returning its promise) turned into a rejection.
 */
function withStore<T>(options: StoreOption, call: (store: IdempotencyStore) => Promise<T>): Promise<T> {
  try {
    return call(storeOf(options));
  } catch (error) {
    return Promise.reject(error);
  }
}
