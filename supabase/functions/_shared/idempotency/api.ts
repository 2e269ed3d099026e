/**
 * Direct calls on a store, for code that manages keys itself (a queue worker, a status endpoint, a cron
 * job) instead of wrapping a handler with `withIdempotency`. Each uses the default store when none is given.
 *
 * Every call reports a failure as a rejected promise, never a synchronous throw: that includes a default
 * store that cannot be opened (no `store` given and `SUPABASE_DB_URL` unset).
 */

import { type StoreResponseOptions, toStoredResponse } from "./_codec.ts";
import { DEFAULT_OPTIONS, defaultStore } from "./options.ts";
import type {
  BeginInput,
  BeginResult,
  IdempotencyStore,
  KeyScope,
  KeyStatus,
  Lease,
  StoredResponse,
} from "./store.ts";

export { generateIdempotencyKey, getIdempotencyKey, isValidIdempotencyKey } from "./key.ts";

/** Which store a call uses. */
export interface StoreOption {
  /** Default: the shared `PostgresStore` on `SUPABASE_DB_URL`. */
  store?: IdempotencyStore;
}

/** The status of one key in one scope, or `null` when there is none. Read-only: nothing is claimed. */
export function checkIdempotency(scope: KeyScope, options: StoreOption = {}): Promise<KeyStatus | null> {
  return withStore(options, (store) => store.status(scope));
}

/** Claims a key: `started` (run the work, then store or fail it), `replay`, `in_progress` or `mismatch`. */
export function createIdempotencyKey(input: BeginInput, options: StoreOption = {}): Promise<BeginResult> {
  return withStore(options, (store) => store.begin(input));
}

/**
 * Stores the result of a `started` claim. A `Response` is stored as the middleware stores one (safe
 * headers, gzip past `compressThresholdBytes`, body omitted past `maxStoredBodyBytes`; defaults as in
 * `withIdempotency`). Returns `false` when the lease is no longer the caller's (nothing was written).
 */
export async function storeIdempotencyResult(
  lease: Lease,
  response: Response | StoredResponse,
  options: StoreOption & Partial<StoreResponseOptions> = {},
): Promise<boolean> {
  const stored = response instanceof Response ? await storedFromResponse(response, options) : response;
  return await storeOf(options).complete(lease, stored);
}

/** Releases a `started` claim after a failure so a retry runs again; `false` when the lease was lost. */
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

/** Deletes expired keys; returns how many. `batchSize` bounds each delete (Postgres default 10000). */
export function cleanupExpiredKeys(options: StoreOption & { batchSize?: number } = {}): Promise<number> {
  return withStore(
    options,
    (store) => store.cleanup(options.batchSize === undefined ? {} : { batchSize: options.batchSize }),
  );
}

async function storedFromResponse(
  response: Response,
  options: Partial<StoreResponseOptions>,
): Promise<StoredResponse> {
  const body = new Uint8Array(await response.arrayBuffer());
  return await toStoredResponse({ status: response.status, headers: response.headers, body }, {
    compressThresholdBytes: options.compressThresholdBytes ?? DEFAULT_OPTIONS.compressThresholdBytes,
    maxStoredBodyBytes: options.maxStoredBodyBytes ?? DEFAULT_OPTIONS.maxStoredBodyBytes,
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
