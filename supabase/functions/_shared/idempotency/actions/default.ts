/**
 * The default action manager behind the seeds' free functions (`executeWithIdempotency(...)`,
 * `getIdempotencyStats()`, ...). It is made on first use from `configure` and the `IDEMPOTENCY_*`
 * environment variables; the Redis and Postgres stores are imported only when that backend is chosen.
 *
 * @module
 */

import { type ActionConfig, configFromEnv, DEFAULT_ACTION_CONFIG, resolveActionConfig } from "./config.ts";
import { ActionIdempotency } from "./manager.ts";
import { MemoryActionStore } from "./memory.ts";
import type { ActionStore } from "./store.ts";

/** The one piece of module state: the default instance and the settings it is made from. */
const defaults: { config: ActionConfig | undefined; manager: Promise<ActionIdempotency> | undefined } = {
  config: undefined,
  manager: undefined,
};

/** Settings that need a new store when they change. */
const STORE_SETTINGS = ["backend", "redisUrl", "maxCacheSize"] as const;

/**
 * Changes the default manager's settings (checked first; nothing changes on error). Changing the backend,
 * the Redis URL or the capacity closes the current store; the next call opens the new one.
 *
 * @param settings The settings to change.
 * @throws {IdempotencyError} `INVALID_CONFIGURATION`, naming the setting.
 * @example
 * ```ts
 * configure({ defaultTTL: 12 * 60 * 60 * 1000, maxCacheSize: 5000 });
 * ```
 */
export function configure(settings: Partial<ActionConfig>): void {
  const before = getConfig();
  const after = resolveActionConfig(before, settings);
  defaults.config = after;
  const current = defaults.manager;
  if (!current) return;
  if (STORE_SETTINGS.some((name) => before[name] !== after[name])) {
    defaults.manager = undefined;
    current.then((manager) => manager.close()).catch(() => {});
  } else {
    current.then((manager) => manager.configure(after)).catch(() => {});
  }
}

/**
 * The default manager's settings: the defaults, then `IDEMPOTENCY_*` variables, then `configure`.
 *
 * @returns The settings (frozen).
 * @throws {IdempotencyError} `INVALID_CONFIGURATION` naming a bad environment variable.
 * @example
 * ```ts
 * getConfig().defaultTTL; // 86400000
 * ```
 */
export function getConfig(): ActionConfig {
  defaults.config ??= resolveActionConfig(DEFAULT_ACTION_CONFIG, configFromEnv());
  return defaults.config;
}

/**
 * The default manager, made on first use.
 *
 * @returns The manager.
 * @example
 * ```ts
 * const stats = await (await defaultActions()).getIdempotencyStats();
 * ```
 */
export function defaultActions(): Promise<ActionIdempotency> {
  if (!defaults.manager) {
    const config = getConfig();
    const made = openStore(config).then((store) => {
      const manager = new ActionIdempotency({ ...config, store });
      if (config.enableAutoCleanup) manager.startAutoCleanup();
      return manager;
    });
    // a failed open is not cached: the next call tries again
    made.catch(() => {
      if (defaults.manager === made) defaults.manager = undefined;
    });
    defaults.manager = made;
  }
  return defaults.manager;
}

/**
 * Closes the default manager's store; the next call opens it again.
 *
 * @returns When closed.
 * @example
 * ```ts
 * await closeDefaultActions();
 * ```
 */
export async function closeDefaultActions(): Promise<void> {
  const current = defaults.manager;
  defaults.manager = undefined;
  if (current) await (await current).close();
}

async function openStore(config: ActionConfig): Promise<ActionStore> {
  switch (config.backend) {
    case "memory":
      return new MemoryActionStore({ maxEntries: config.maxCacheSize });
    case "redis": {
      const { RedisActionStore } = await import("./redis.ts");
      return new RedisActionStore(config.redisUrl === null ? {} : { url: config.redisUrl });
    }
    case "postgres": {
      const { PostgresActionStore } = await import("./postgres.ts");
      return new PostgresActionStore();
    }
  }
}
