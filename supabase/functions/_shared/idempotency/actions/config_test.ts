import assert from "node:assert/strict";
import { IdempotencyError } from "../errors.ts";
import { type ActionConfig, configFromEnv, DEFAULT_ACTION_CONFIG, resolveActionConfig } from "./config.ts";
import { closeDefaultActions, configure, defaultActions, getConfig } from "./default.ts";

const badConfig = (pattern: RegExp) => (e: unknown) =>
  e instanceof IdempotencyError && e.code === "INVALID_CONFIGURATION" && pattern.test(e.message);

Deno.test("configFromEnv reads the IDEMPOTENCY_* variables", () => {
  const env: Record<string, string> = {
    IDEMPOTENCY_ENABLED: "false",
    IDEMPOTENCY_DEFAULT_TTL: "3600000",
    IDEMPOTENCY_LEASE_MS: "5000",
    IDEMPOTENCY_MAX_CACHE_SIZE: "500",
    IDEMPOTENCY_BACKEND: "Redis",
    IDEMPOTENCY_REDIS_URL: "redis://cache:6379",
    IDEMPOTENCY_ENABLE_AUTO_CLEANUP: "off",
    IDEMPOTENCY_CLEANUP_INTERVAL: "60000",
  };
  assert.deepEqual(configFromEnv((name) => env[name]), {
    enabled: false,
    defaultTTL: 3_600_000,
    leaseMs: 5000,
    maxCacheSize: 500,
    backend: "redis",
    redisUrl: "redis://cache:6379",
    enableAutoCleanup: false,
    cleanupInterval: 60_000,
  });
  assert.deepEqual(configFromEnv(() => undefined), {});
  assert.deepEqual(configFromEnv(() => "  "), {}, "blank is unset");
});

Deno.test("configFromEnv: a bad variable is a clear error naming it and its value", () => {
  const cases: [Record<string, string>, RegExp][] = [
    [{ IDEMPOTENCY_DEFAULT_TTL: "1h" }, /IDEMPOTENCY_DEFAULT_TTL must be a whole number, got "1h"/],
    [{ IDEMPOTENCY_DEFAULT_TTL: "10" }, /IDEMPOTENCY_DEFAULT_TTL must be at least 1000 \(ms\), got "10"/],
    [{ IDEMPOTENCY_MAX_CACHE_SIZE: "0" }, /IDEMPOTENCY_MAX_CACHE_SIZE must be a positive whole number/],
    [{ IDEMPOTENCY_BACKEND: "mongo" }, /IDEMPOTENCY_BACKEND must be memory, redis or postgres, got "mongo"/],
    [{ IDEMPOTENCY_ENABLED: "maybe" }, /IDEMPOTENCY_ENABLED must be true or false/],
    [{ IDEMPOTENCY_REDIS_URL: "http://x" }, /IDEMPOTENCY_REDIS_URL must be a redis:\/\/ or rediss:\/\/ URL/],
    [{ IDEMPOTENCY_CLEANUP_INTERVAL: "-5" }, /IDEMPOTENCY_CLEANUP_INTERVAL must be a whole number/],
  ];
  for (const [env, pattern] of cases) {
    assert.throws(() => configFromEnv((name) => env[name]), badConfig(pattern));
  }
});

Deno.test("resolveActionConfig checks every setting and freezes the result", () => {
  const config = resolveActionConfig(DEFAULT_ACTION_CONFIG, {
    defaultTTL: 5000,
    actionTTLs: { notify: 2000 },
  });
  assert.equal(config.defaultTTL, 5000);
  assert.ok(Object.isFrozen(config) && Object.isFrozen(config.actionTTLs));
  assert.throws(() => resolveActionConfig(config, { leaseMs: 10 }), badConfig(/leaseMs/));
  assert.throws(() => resolveActionConfig(config, { actionTTLs: { x: 0 } }), badConfig(/actionTTLs\.x/));
  assert.throws(
    () => resolveActionConfig(config, { onInProgress: "queue" as "wait" }),
    badConfig(/onInProgress/),
  );
  assert.throws(() => resolveActionConfig(config, { backend: "s3" as "memory" }), badConfig(/backend/));
  assert.equal(
    resolveActionConfig(config, { defaultTTL: undefined } as unknown as Partial<ActionConfig>).defaultTTL,
    5000,
    "undefined changes nothing",
  );
});

Deno.test("configure / getConfig drive the default manager; a store setting opens a new store", async () => {
  configure({ defaultTTL: 120_000, enableAutoCleanup: false, backend: "memory", maxCacheSize: 100 });
  try {
    assert.equal(getConfig().defaultTTL, 120_000);
    assert.throws(() => configure({ maxCacheSize: -1 }), badConfig(/maxCacheSize/));
    assert.equal(getConfig().maxCacheSize, 100, "nothing changed on error");
    const first = await defaultActions();
    assert.equal((await first.getCacheInfo()).maxSize, 100);
    configure({ defaultTTL: 60_000 });
    assert.equal(await defaultActions(), first, "same store");
    assert.equal(first.getConfig().defaultTTL, 60_000);
    configure({ maxCacheSize: 200 });
    const second = await defaultActions();
    assert.notEqual(second, first);
    assert.equal((await second.getCacheInfo()).maxSize, 200);
  } finally {
    await closeDefaultActions();
    configure({ ...DEFAULT_ACTION_CONFIG });
  }
});
