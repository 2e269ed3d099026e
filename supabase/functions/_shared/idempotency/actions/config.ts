/**
 * Settings of the action API, from code (`configure`) or the environment (`IDEMPOTENCY_*`), validated with
 * errors that name the setting and the bad value.
 *
 * @module
 */

import { IdempotencyError } from "../errors.ts";

/** Which store the default action manager opens. */
export type ActionBackend = "memory" | "redis" | "postgres";

/** What a concurrent duplicate does while the first call still runs. */
export type InProgressChoice = "wait" | "error";

/** Every setting, resolved. */
export interface ActionConfig {
  /** When `false`, executors run every time and nothing is recorded (a kill switch). @default true */
  enabled: boolean;
  /** How long a record counts, in ms. @default 86400000 (24 hours) */
  defaultTTL: number;
  /** Per action type TTL in ms, over `defaultTTL`; a call's own `ttl` wins over both. @default {} */
  actionTTLs: Record<string, number>;
  /** How long a claim holds before another caller may take it over, in ms; renewed while running. @default 30000 */
  leaseMs: number;
  /** Capacity of the in-memory store. @default 10000 */
  maxCacheSize: number;
  /** The store the default manager opens. @default "memory" */
  backend: ActionBackend;
  /** Redis URL for `backend: "redis"`; `null` falls back to `REDIS_URL`, then `redis://127.0.0.1:6379`. @default null */
  redisUrl: string | null;
  /** Whether `startAutoCleanup` runs on first use. @default true */
  enableAutoCleanup: boolean;
  /** How often auto cleanup runs, in ms. @default 3600000 (1 hour) */
  cleanupInterval: number;
  /** A concurrent duplicate waits for the first result (`wait`) or gets `ACTION_IN_PROGRESS` (`error`). @default "wait" */
  onInProgress: InProgressChoice;
  /** Longest a duplicate waits before `ACTION_IN_PROGRESS`, in ms. @default 60000 */
  waitTimeoutMs: number;
  /** Whether a recorded failure is retried by the next call (`false`: `ACTION_FAILED`). @default true */
  retryFailed: boolean;
}

/** The defaults (the seeds': 24 hours, 10,000 entries, cleanup every hour). */
export const DEFAULT_ACTION_CONFIG: Readonly<ActionConfig> = Object.freeze({
  enabled: true,
  defaultTTL: 24 * 60 * 60 * 1000,
  actionTTLs: {},
  leaseMs: 30_000,
  maxCacheSize: 10_000,
  backend: "memory",
  redisUrl: null,
  enableAutoCleanup: true,
  cleanupInterval: 60 * 60 * 1000,
  onInProgress: "wait",
  waitTimeoutMs: 60_000,
  retryFailed: true,
});

/** The environment variables read by {@link configFromEnv}, by setting. */
export const ACTION_ENV_VARS = {
  enabled: "IDEMPOTENCY_ENABLED",
  defaultTTL: "IDEMPOTENCY_DEFAULT_TTL",
  leaseMs: "IDEMPOTENCY_LEASE_MS",
  maxCacheSize: "IDEMPOTENCY_MAX_CACHE_SIZE",
  backend: "IDEMPOTENCY_BACKEND",
  redisUrl: "IDEMPOTENCY_REDIS_URL",
  enableAutoCleanup: "IDEMPOTENCY_ENABLE_AUTO_CLEANUP",
  cleanupInterval: "IDEMPOTENCY_CLEANUP_INTERVAL",
} as const;

/**
 * The settings `overrides` change on top of `base`, checked.
 *
 * @param base The current settings.
 * @param overrides Settings to change.
 * @returns A new, frozen settings object.
 * @throws {IdempotencyError} `INVALID_CONFIGURATION` naming the first bad setting.
 * @example
 * ```ts
 * const config = resolveActionConfig(DEFAULT_ACTION_CONFIG, { defaultTTL: 12 * 60 * 60 * 1000 });
 * ```
 */
export function resolveActionConfig(base: ActionConfig, overrides: Partial<ActionConfig>): ActionConfig {
  const merged: ActionConfig = { ...base, ...withoutUndefined(overrides) };
  duration("defaultTTL", merged.defaultTTL);
  duration("leaseMs", merged.leaseMs);
  duration("cleanupInterval", merged.cleanupInterval);
  if (!Number.isFinite(merged.waitTimeoutMs) || merged.waitTimeoutMs < 0) {
    invalid("waitTimeoutMs", merged.waitTimeoutMs, "a number of ms, 0 or more");
  }
  if (!Number.isInteger(merged.maxCacheSize) || merged.maxCacheSize < 1) {
    invalid("maxCacheSize", merged.maxCacheSize, "a positive integer");
  }
  if (!["memory", "redis", "postgres"].includes(merged.backend)) {
    invalid("backend", merged.backend, "memory, redis or postgres");
  }
  if (merged.onInProgress !== "wait" && merged.onInProgress !== "error") {
    invalid("onInProgress", merged.onInProgress, "wait or error");
  }
  for (const flag of ["enabled", "enableAutoCleanup", "retryFailed"] as const) {
    if (typeof merged[flag] !== "boolean") invalid(flag, merged[flag], "true or false");
  }
  if (merged.redisUrl !== null && !/^rediss?:\/\//.test(String(merged.redisUrl))) {
    invalid("redisUrl", merged.redisUrl, "a redis:// or rediss:// URL");
  }
  if (merged.actionTTLs === null || typeof merged.actionTTLs !== "object") {
    invalid("actionTTLs", merged.actionTTLs, "an object of action type to ms");
  }
  for (const [action, ttl] of Object.entries(merged.actionTTLs)) duration(`actionTTLs.${action}`, ttl);
  return Object.freeze({ ...merged, actionTTLs: Object.freeze({ ...merged.actionTTLs }) });
}

/**
 * The settings the `IDEMPOTENCY_*` variables set (unset ones are left out).
 *
 * @param env Reads one variable; default `Deno.env.get`.
 * @returns The settings to pass to `configure`.
 * @throws {IdempotencyError} `INVALID_CONFIGURATION` naming the variable and its bad value.
 * @example
 * ```ts
 * configure(configFromEnv()); // IDEMPOTENCY_BACKEND=postgres, IDEMPOTENCY_DEFAULT_TTL=3600000, ...
 * ```
 */
export function configFromEnv(env: (name: string) => string | undefined = readEnv): Partial<ActionConfig> {
  const out: Partial<ActionConfig> = {};
  const read = (name: string) => {
    const value = env(name)?.trim();
    return value === undefined || value === "" ? undefined : value;
  };
  const int = (name: string) => {
    const value = read(name);
    if (value === undefined) return undefined;
    if (!/^\d+$/.test(value)) invalid(name, value, "a whole number");
    return Number(value);
  };
  const bool = (name: string) => {
    const value = read(name)?.toLowerCase();
    if (value === undefined) return undefined;
    if (["true", "1", "yes", "on"].includes(value)) return true;
    if (["false", "0", "no", "off"].includes(value)) return false;
    return invalid(name, value, "true or false");
  };
  const set = <K extends keyof ActionConfig>(key: K, value: ActionConfig[K] | undefined) => {
    if (value !== undefined) out[key] = value;
  };
  set("enabled", bool(ACTION_ENV_VARS.enabled));
  set("defaultTTL", int(ACTION_ENV_VARS.defaultTTL));
  set("leaseMs", int(ACTION_ENV_VARS.leaseMs));
  set("maxCacheSize", int(ACTION_ENV_VARS.maxCacheSize));
  set("enableAutoCleanup", bool(ACTION_ENV_VARS.enableAutoCleanup));
  set("cleanupInterval", int(ACTION_ENV_VARS.cleanupInterval));
  const backend = read(ACTION_ENV_VARS.backend)?.toLowerCase();
  if (backend !== undefined && backend !== "memory" && backend !== "redis" && backend !== "postgres") {
    invalid(ACTION_ENV_VARS.backend, backend, "memory, redis or postgres");
  }
  set("backend", backend as ActionBackend | undefined);
  set("redisUrl", read(ACTION_ENV_VARS.redisUrl));
  // check the values now, so the error names the variable rather than the setting
  for (const [key, name] of Object.entries(ACTION_ENV_VARS)) {
    const value = out[key as keyof ActionConfig];
    if (value === undefined) continue;
    try {
      resolveActionConfig(DEFAULT_ACTION_CONFIG, { [key]: value });
    } catch (error) {
      if (error instanceof IdempotencyError) invalid(name, read(name), expectations[key] ?? "a valid value");
      throw error;
    }
  }
  return out;
}

const expectations: Record<string, string> = {
  defaultTTL: "at least 1000 (ms)",
  leaseMs: "at least 1000 (ms)",
  cleanupInterval: "at least 1000 (ms)",
  maxCacheSize: "a positive whole number",
  redisUrl: "a redis:// or rediss:// URL",
};

function duration(name: string, value: unknown): void {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 1000) {
    invalid(name, value, "a number of ms, at least 1000");
  }
}

function invalid(name: string, value: unknown, expected: string): never {
  throw new IdempotencyError(
    "INVALID_CONFIGURATION",
    `${name} must be ${expected}, got ${JSON.stringify(value) ?? String(value)}`,
  );
}

function withoutUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // no --allow-env: behave as unset
  }
}
