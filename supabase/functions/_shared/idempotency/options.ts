/**
 * The options of {@link withIdempotency}, their defaults, and the one default store.
 */

import type { GetUserId } from "./auth.ts";
import type { IdempotencyStore } from "./store.ts";
import { closeSharedPool, sharedPool } from "./pool.ts";
import { PostgresStore } from "./stores/postgres.ts";

/** Where the middleware logs: `console` fits, as does any object with these methods. */
export interface IdempotencyLogger {
  /** Store failures and handler throws. */
  error(...data: unknown[]): void;
  /** Lost leases: another request took the key over while this one ran. */
  warn(...data: unknown[]): void;
}

/** Options of `withIdempotency`. Only `functionName` is required. */
export interface IdempotencyOptions {
  /** The edge function's name, stored with each key: 1-128 characters of `[A-Za-z0-9_-]`. */
  functionName: string;
  /** Where keys live. Default: one shared {@link PostgresStore} on `SUPABASE_DB_URL`, opened on first use. */
  store?: IdempotencyStore;
  /** Answer 400 `KEY_REQUIRED` to calls without a key instead of running them unprotected. Default `false`. */
  required?: boolean;
  /** How long a key and its stored response live, in seconds. Default 86400 (24 hours). */
  ttlSeconds?: number;
  /** How long a claim holds before another request may take the key over, in seconds. Default 30. */
  lockTimeoutSeconds?: number;
  /**
   * A duplicate that arrives while the first request runs: `"reject"` answers 409 `REQUEST_IN_PROGRESS`
   * with `Retry-After`; `"wait"` polls (with backoff) up to `waitTimeoutMs` and then answers the first
   * request's response as a replay. Default `"reject"`.
   */
  onInFlight?: "reject" | "wait";
  /**
   * The longest a `"wait"` duplicate waits, in milliseconds; still running then → 409. If the first request
   * fails meanwhile, the waiter claims the key and runs the handler itself. Default 10000.
   */
  waitTimeoutMs?: number;
  /**
   * Store 4xx responses too (replayed like 2xx), except the transient 408, 409, 425 and 429. Default `false`:
   * a 4xx releases the key, so the same request sent again runs again (a changed request under the same key
   * is still refused with 422: the key stays bound to its first request until it expires).
   */
  storeClientErrors?: boolean;
  /**
   * A keyed call without a user and without the service_role key (no token, or the public anon key):
   * `"reject"` answers 401 `AUTH_REQUIRED`; `"shared"` puts all such calls in one shared scope per key;
   * `"bypass"` runs the handler without idempotency. Default `"reject"`, so no caller can replay another's
   * response. Calls with the service_role key always share the service scope (see `Caller` in auth.ts).
   */
  anonymous?: "reject" | "shared" | "bypass";
  /**
   * The store fails: `"fail-closed"` answers 503 `STORE_UNAVAILABLE` with `Retry-After` and does not run
   * the handler; `"fail-open"` runs the handler unprotected, logs and counts it. Default `"fail-closed"`.
   */
  onStoreError?: "fail-closed" | "fail-open";
  /**
   * The most body bytes stored (after gzip). A larger response is stored without its body: a replay
   * answers its status and headers, an empty body and `X-Idempotency-Body-Omitted: true`. Default 1 MiB.
   */
  maxStoredBodyBytes?: number;
  /** Bodies larger than this are gzipped when that makes them smaller, in bytes. Default 1024. */
  compressThresholdBytes?: number;
  /** Renew the lease every `lockTimeoutSeconds / 2` while the handler runs. Default `true`. */
  renewLease?: boolean;
  /** CORS headers on every response, and OPTIONS answered 204 without running the handler. Default `true`. */
  cors?: boolean;
  /**
   * Finds the user a key is scoped to; `null` makes the call anonymous. Default: the verified JWT `sub`, with
   * the service_role key as the service (see auth.ts). With the Postgres store the id must be the uuid of a
   * row in `auth.users` (a foreign key): anything else makes the store call fail.
   */
  getUserId?: GetUserId;
  /** The HS256 secret for the default `getUserId`. Default: `SUPABASE_JWT_SECRET` from the environment. */
  jwtSecret?: string;
  /** Where failures are logged. Default `console`. */
  logger?: IdempotencyLogger;
}

/** {@link IdempotencyOptions} with every default filled in; `store` stays unset until the default is needed. */
export type ResolvedIdempotencyOptions = Readonly<
  & Required<Omit<IdempotencyOptions, "store" | "getUserId" | "jwtSecret">>
  & Pick<IdempotencyOptions, "store" | "getUserId" | "jwtSecret">
>;

/** The defaults of every optional setting. */
export const DEFAULT_OPTIONS: Readonly<
  Omit<ResolvedIdempotencyOptions, "functionName" | "store" | "getUserId" | "jwtSecret">
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
  compressThresholdBytes: 1024,
  renewLease: true,
  cors: true,
  logger: console,
});

const FUNCTION_NAME = /^[A-Za-z0-9_-]{1,128}$/;

/**
 * `options` with defaults filled in and checked, so a misconfiguration fails when the function is wrapped
 * rather than on the first request. Pure: it opens nothing.
 *
 * @throws {TypeError | RangeError} on an invalid setting.
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
  checkChoice("onInFlight", resolved.onInFlight, ["reject", "wait"]);
  checkChoice("anonymous", resolved.anonymous, ["reject", "shared", "bypass"]);
  checkChoice("onStoreError", resolved.onStoreError, ["fail-closed", "fail-open"]);
  return Object.freeze(resolved);
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
 */
export function defaultStore(): IdempotencyStore {
  sharedDefaultStore ??= new PostgresStore({ sql: sharedPool() });
  return sharedDefaultStore;
}

/** Closes the default store if it was opened; a later {@link defaultStore} call opens a new one. */
export async function closeDefaultStore(): Promise<void> {
  const store = sharedDefaultStore;
  sharedDefaultStore = undefined;
  await store?.close();
  await closeSharedPool();
}
