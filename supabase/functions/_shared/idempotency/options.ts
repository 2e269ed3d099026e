/**
 * The options of {@link withIdempotency}, their defaults, and the one default store.
 */

import { checkDictionaries } from "./_dictionary.ts";
import type { GetUserId } from "./auth.ts";
import type { MetricsRecorder } from "./metrics.ts";
import type { IdempotencyStore } from "./store.ts";
import { closeSharedPool, sharedPool } from "./pool.ts";
import { PostgresStore } from "./stores/postgres.ts";

/**
 * Where the middleware logs: `console` fits, as does any object with these methods.
 *
 * @example Structured logs
 * ```ts
 * import type { IdempotencyLogger } from "./options.ts";
 *
 * const logger: IdempotencyLogger = {
 *   error: (...data) => console.error(JSON.stringify({ level: "error", data: data.map(String) })),
 *   warn: (...data) => console.warn(JSON.stringify({ level: "warn", data: data.map(String) })),
 * };
 * console.assert(typeof logger.error === "function");
 * ```
 */
export interface IdempotencyLogger {
  /**
   * Store failures and handler throws.
   *
   * @param data What to log.
   */
  error(...data: unknown[]): void;
  /**
   * Lost leases: another request took the key over while this one ran.
   *
   * @param data What to log.
   */
  warn(...data: unknown[]): void;
}

/**
 * Options of `withIdempotency`. Only `functionName` is required.
 *
 * @example Wait for the first request instead of answering 409
 * ```ts
 * import { withIdempotency } from "./middleware.ts";
 * import { MemoryStore } from "./stores/memory.ts";
 *
 * const fetch = withIdempotency(() => new Response("done"), {
 *   functionName: "train-model",
 *   store: new MemoryStore(),
 *   onInFlight: "wait",
 *   waitTimeoutMs: 30_000,
 *   ttlSeconds: 7 * 86_400,
 * });
 * console.assert(typeof fetch === "function");
 * ```
 */
export interface IdempotencyOptions {
  /** The edge function's name, stored with each key: 1-128 characters of `[A-Za-z0-9_-]`. */
  functionName: string;
  /**
   * Where keys live. Default: one shared {@link PostgresStore} on `SUPABASE_DB_URL`, opened on first use.
   *
   * @default {defaultStore()} one shared `PostgresStore` on `SUPABASE_DB_URL`, opened on first use}
   */
  store?: IdempotencyStore;
  /**
   * Answer 400 `KEY_REQUIRED` to calls without a key instead of running them unprotected. Default `false`.
   *
   * @default {false}
   */
  required?: boolean;
  /**
   * How long a key and its stored response live, in seconds. Default 86400 (24 hours).
   *
   * @default {86400}
   */
  ttlSeconds?: number;
  /**
   * How long a claim holds before another request may take the key over, in seconds. Default 30.
   *
   * @default {30}
   */
  lockTimeoutSeconds?: number;
  /**
   * A duplicate that arrives while the first request runs: `"reject"` answers 409 `REQUEST_IN_PROGRESS`
   * with `Retry-After` near the first's expected finish (from recent handler durations); `"wait"` holds the
   * duplicate up to `waitTimeoutMs` and answers the first request's response as a replay as soon as it is
   * stored (woken at once when the first runs in this isolate, else by short polls).
   *
   * @default {"reject"}
   */
  onInFlight?: "reject" | "wait";
  /**
   * The longest a `"wait"` duplicate waits, in milliseconds; still running then → 409. If the first request
   * fails meanwhile, the waiter claims the key and runs the handler itself. Default 10000.
   *
   * @default {10000}
   */
  waitTimeoutMs?: number;
  /**
   * Store 4xx responses too (replayed like 2xx), except the transient 408, 409, 425 and 429. Default `false`:
   * a 4xx releases the key, so the same request sent again runs again (a changed request under the same key
   * is still refused with 422: the key stays bound to its first request until it expires).
   *
   * @default {false}
   */
  storeClientErrors?: boolean;
  /**
   * A keyed call without a user and without the service_role key (no token, or the public anon key):
   * `"reject"` answers 401 `AUTH_REQUIRED`; `"shared"` puts all such calls in one shared scope per key;
   * `"bypass"` runs the handler without idempotency. Default `"reject"`, so no caller can replay another's
   * response. Calls with the service_role key always share the service scope (see `Caller` in auth.ts).
   *
   * @default {"reject"}
   */
  anonymous?: "reject" | "shared" | "bypass";
  /**
   * The store fails: `"fail-closed"` answers 503 `STORE_UNAVAILABLE` with `Retry-After` and does not run
   * the handler; `"fail-open"` runs the handler unprotected, logs and counts it. Default `"fail-closed"`.
   *
   * @default {"fail-closed"}
   */
  onStoreError?: "fail-closed" | "fail-open";
  /**
   * The most body bytes stored (compressed). A larger response is stored without its body: a replay
   * answers its status and headers, an empty body and `X-Idempotency-Body-Omitted: true`. Default 1 MiB.
   *
   * @default {1048576}
   */
  maxStoredBodyBytes?: number;
  /**
   * Bodies larger than this are compressed (brotli; gzip past 64 KiB) when that makes them smaller, in
   * bytes. Default 256: Postgres compresses a row only past ~2 KB, so a typical 500-byte JSON answer would
   * otherwise be stored as is (docs/scaling.md: bytes per key).
   *
   * @default {256}
   */
  compressThresholdBytes?: number;
  /**
   * A few of this function's typical responses (JSON text or bytes, each up to 32 KiB), so that stored
   * bodies keep little more than what is unique to each: bodies up to 64 KiB are compressed against the
   * first (zlib with a preset dictionary, encoding `zdict`) instead of with brotli. A 510-byte
   * `process-document` answer is stored in ~190 bytes instead of ~330 (docs/scaling.md: bytes per key).
   *
   * Every dictionary listed decodes the bodies stored with it; each body names its own by Adler-32. To
   * change the dictionary, put the new one first and keep the old ones listed for `ttlSeconds`: a replay
   * whose dictionary is gone answers 500 and logs which one it needs. Use sample answers without secrets or
   * user data: the bytes are part of the function's code.
   *
   * @default {[]} no dictionary: brotli
   */
  responseDictionaries?: readonly (Uint8Array | string)[];
  /**
   * Renew the lease every `lockTimeoutSeconds / 2` while the handler runs. Default `true`.
   *
   * @default {true}
   */
  renewLease?: boolean;
  /**
   * CORS headers on every response, and OPTIONS answered 204 without running the handler. Default `true`.
   *
   * @default {true}
   */
  cors?: boolean;
  /**
   * Finds the user a key is scoped to; `null` makes the call anonymous. Default: the verified JWT `sub`, with
   * the service_role key as the service (see auth.ts). With the Postgres store the id must be the uuid of a
   * row in `auth.users` (a foreign key): anything else makes the store call fail.
   *
   * @default {createJwtUserResolver()} the verified JWT `sub`; the service_role key is the service}
   */
  getUserId?: GetUserId;
  /**
   * The HS256 secret for the default `getUserId`. Default: `SUPABASE_JWT_SECRET` from the environment.
   *
   * @default {Deno.env.get("SUPABASE_JWT_SECRET")}
   */
  jwtSecret?: string;
  /**
   * Where failures are logged. Default `console`.
   *
   * @default {console}
   */
  logger?: IdempotencyLogger;
  /**
   * Protect calls without a key from double submits: the key is derived from the caller, the function and
   * the request fingerprint within `keylessWindowMs` (see keyless.ts). Anonymous callers are never merged
   * (nothing tells two of them apart), and a client's explicit key always wins. Default `false`.
   *
   * @default {false}
   */
  keyless?: boolean;
  /**
   * Keyless requests closer than this are always one run; `2 *` this or more apart, never. Default 100.
   *
   * @default {100}
   */
  keylessWindowMs?: number;
  /**
   * The rollout switch: `false` runs every request without idempotency (counted as `bypassed`). The
   * environment overrides it per request: `IDEMPOTENCY_ENABLED[_<FUNCTION>]` (see rollout.ts). Default `true`.
   *
   * @default {true}
   */
  enabled?: boolean;
  /**
   * The share of keys protected, 0-100, decided per key (a retry of a bypassed request is bypassed again).
   * Overridden by `IDEMPOTENCY_ROLLOUT_PERCENT[_<FUNCTION>]`. Default 100.
   *
   * @default {100}
   */
  rolloutPercent?: number;
  /**
   * Where counts and latencies go besides `handler.metrics`. Default: with `IDEMPOTENCY_METRICS=database`,
   * the isolate's shared `PostgresMetricsRecorder` (summed in the database for the Prometheus endpoint); else
   * none.
   *
   * @default {undefined}
   */
  metrics?: MetricsRecorder;
}

/** {@link IdempotencyOptions} with every default filled in; `store` stays unset until the default is needed. */
export type ResolvedIdempotencyOptions = Readonly<
  & Required<
    Omit<IdempotencyOptions, "store" | "getUserId" | "jwtSecret" | "metrics" | "responseDictionaries">
  >
  & Pick<IdempotencyOptions, "store" | "getUserId" | "jwtSecret" | "metrics">
  & {
    /** The dictionaries as bytes, checked. */
    responseDictionaries: readonly Uint8Array[];
  }
>;

/**
 * The defaults of every optional setting.
 *
 * @example Read a default
 * ```ts
 * import { DEFAULT_OPTIONS } from "./options.ts";
 *
 * console.assert(DEFAULT_OPTIONS.ttlSeconds === 86_400);
 * ```
 */
export const DEFAULT_OPTIONS: Readonly<
  Required<Omit<IdempotencyOptions, "functionName" | "store" | "getUserId" | "jwtSecret" | "metrics">>
> = Object.freeze({
  required: false,
  ttlSeconds: 86_400,
  lockTimeoutSeconds: 30,
  onInFlight: "reject",
  waitTimeoutMs: 10_000,
  storeClientErrors: false,
  anonymous: "reject",
  onStoreError: "fail-closed",
  maxStoredBodyBytes: 1024 * 1024,
  compressThresholdBytes: 256,
  responseDictionaries: [],
  renewLease: true,
  cors: true,
  logger: console,
  keyless: false,
  keylessWindowMs: 100,
  enabled: true,
  rolloutPercent: 100,
});

const FUNCTION_NAME = /^[A-Za-z0-9_-]{1,128}$/;

/**
 * `options` with defaults filled in and checked, so a misconfiguration fails when the function is wrapped
 * rather than on the first request. Pure: it opens nothing.
 *
 * @throws {TypeError | RangeError} on an invalid setting.
 * @param options The options as given.
 * @returns Every option, defaults filled in, frozen.
 * @example Check options at startup
 * ```ts
 * import { resolveOptions } from "./options.ts";
 *
 * console.assert(resolveOptions({ functionName: "f" }).lockTimeoutSeconds === 30);
 * ```
 */
export function resolveOptions(options: IdempotencyOptions): ResolvedIdempotencyOptions {
  const resolved = { ...DEFAULT_OPTIONS, ...withoutUndefined(options) };
  if (!FUNCTION_NAME.test(resolved.functionName ?? "")) {
    throw new TypeError(
      `functionName must be 1-128 characters of [A-Za-z0-9_-], got ${resolved.functionName}`,
    );
  }
  checkInteger("ttlSeconds", resolved.ttlSeconds, 1);
  checkInteger("lockTimeoutSeconds", resolved.lockTimeoutSeconds, 1);
  checkInteger("waitTimeoutMs", resolved.waitTimeoutMs, 0);
  checkInteger("maxStoredBodyBytes", resolved.maxStoredBodyBytes, 0);
  checkInteger("compressThresholdBytes", resolved.compressThresholdBytes, 0);
  const responseDictionaries = checkDictionaries(resolved.responseDictionaries);
  checkChoice("onInFlight", resolved.onInFlight, ["reject", "wait"]);
  checkChoice("anonymous", resolved.anonymous, ["reject", "shared", "bypass"]);
  checkChoice("onStoreError", resolved.onStoreError, ["fail-closed", "fail-open"]);
  checkInteger("keylessWindowMs", resolved.keylessWindowMs, 1);
  if (!(resolved.rolloutPercent >= 0 && resolved.rolloutPercent <= 100)) {
    throw new RangeError(`rolloutPercent must be between 0 and 100, got ${resolved.rolloutPercent}`);
  }
  return Object.freeze({ ...resolved, responseDictionaries });
}

/** Explicit `undefined` means "the default", as if the option were left out. */
function withoutUndefined<T extends object>(options: T): T {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined)) as T;
}

function checkInteger(name: string, value: number, min: number): void {
  if (!Number.isInteger(value) || value < min) {
    throw new RangeError(`${name} must be an integer of at least ${min}, got ${value}`);
  }
}

function checkChoice(name: string, value: string, choices: readonly string[]): void {
  if (!choices.includes(value)) {
    throw new TypeError(`${name} must be one of ${choices.join(", ")}, got ${value}`);
  }
}

/** The shared default store: the one module-level instance, opened by the first call that needs it. */
let sharedDefaultStore: PostgresStore | undefined;

/**
 * The default store, a {@link PostgresStore} on the isolate's shared pool (`SUPABASE_DB_URL`, see pool.ts),
 * created on first use: the store and the function's own queries share one set of connections.
 *
 * @returns The shared default store.
 * @throws {Error} when `SUPABASE_DB_URL` is unset.
 * @example Use the default store directly
 * ```ts
 * import { defaultStore } from "./options.ts";
 *
 * Deno.env.set("SUPABASE_DB_URL", "postgresql://postgres:postgres@127.0.0.1:54322/postgres");
 * console.assert(defaultStore().name === "postgres");
 * ```
 */
export function defaultStore(): IdempotencyStore {
  sharedDefaultStore ??= new PostgresStore({ sql: sharedPool() });
  return sharedDefaultStore;
}

/**
 * Closes the default store if it was opened; a later {@link defaultStore} call opens a new one.
 *
 * @example Close the pool on shutdown
 * ```ts
 * import { closeDefaultStore } from "./options.ts";
 *
 * globalThis.addEventListener("unload", () => void closeDefaultStore());
 * await closeDefaultStore();
 * ```
 */
export async function closeDefaultStore(): Promise<void> {
  const store = sharedDefaultStore;
  sharedDefaultStore = undefined;
  await store?.close();
  await closeSharedPool();
}
