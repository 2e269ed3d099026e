import assert from "node:assert/strict";
import { closeDefaultStore, DEFAULT_OPTIONS, defaultStore, resolveOptions } from "./options.ts";
import { MemoryStore } from "./stores/memory.ts";

Deno.test("options: the documented defaults fill every unset option", () => {
  const resolved = resolveOptions({ functionName: "process-document" });
  assert.equal(resolved.functionName, "process-document");
  assert.equal(resolved.required, false);
  assert.equal(resolved.ttlSeconds, 86_400);
  assert.equal(resolved.lockTimeoutSeconds, 30);
  assert.equal(resolved.onInFlight, "reject");
  assert.equal(resolved.waitTimeoutMs, 10_000);
  assert.equal(resolved.storeClientErrors, false);
  assert.equal(resolved.anonymous, "reject");
  assert.equal(resolved.onStoreError, "fail-closed");
  assert.equal(resolved.maxStoredBodyBytes, 1_048_576);
  assert.equal(resolved.compressThresholdBytes, 256);
  assert.deepEqual(resolved.responseDictionaries, []);
  assert.equal(resolved.renewLease, true);
  assert.equal(resolved.cors, true);
  assert.equal(resolved.logger, console);
  assert.equal(resolved.store, undefined, "resolving opens no store");
  assert.ok(Object.isFrozen(resolved));
});

Deno.test("options: given values win; an explicit undefined means the default", () => {
  const store = new MemoryStore();
  const resolved = resolveOptions({
    functionName: "f",
    store,
    ttlSeconds: 60,
    onInFlight: "wait",
    cors: false,
    // a JavaScript caller (or a spread of a partial object) can pass undefined whatever the type says
    ...({ lockTimeoutSeconds: undefined } as object),
  });
  assert.equal(resolved.store, store);
  assert.equal(resolved.ttlSeconds, 60);
  assert.equal(resolved.onInFlight, "wait");
  assert.equal(resolved.cors, false);
  assert.equal(resolved.lockTimeoutSeconds, DEFAULT_OPTIONS.lockTimeoutSeconds);
});

Deno.test("options: response dictionaries given as text are resolved to their UTF-8 bytes", () => {
  const resolved = resolveOptions({
    functionName: "f",
    responseDictionaries: ['{"a":1}', new Uint8Array([1])],
  });
  assert.deepEqual(resolved.responseDictionaries, [new TextEncoder().encode('{"a":1}'), new Uint8Array([1])]);
});

Deno.test("options: invalid values are rejected", () => {
  const bad: [Record<string, unknown>, ErrorConstructor][] = [
    [{ functionName: "" }, TypeError],
    [{ functionName: "x".repeat(129) }, TypeError],
    [{ functionName: "no/slash" }, TypeError],
    [{ ttlSeconds: 0 }, RangeError],
    [{ ttlSeconds: 1.5 }, RangeError],
    [{ lockTimeoutSeconds: 0 }, RangeError],
    [{ waitTimeoutMs: -1 }, RangeError],
    [{ maxStoredBodyBytes: -1 }, RangeError],
    [{ compressThresholdBytes: Number.NaN }, RangeError],
    [{ onInFlight: "queue" }, TypeError],
    [{ anonymous: "allow" }, TypeError],
    [{ onStoreError: "ignore" }, TypeError],
    [{ responseDictionaries: [""] }, RangeError],
    [{ responseDictionaries: ["{}", "{}"] }, RangeError],
  ];
  for (const [options, type] of bad) {
    assert.throws(
      () => resolveOptions({ functionName: "f", ...options } as never),
      type,
      JSON.stringify(options),
    );
  }
});

Deno.test("options: the default store is created on first use, shared, and reopened after close", async () => {
  const previous = Deno.env.get("SUPABASE_DB_URL");
  Deno.env.set("SUPABASE_DB_URL", "postgresql://postgres:postgres@127.0.0.1:1/postgres");
  try {
    const first = defaultStore();
    assert.equal(first.name, "postgres");
    assert.equal(defaultStore(), first, "one shared instance");
    await closeDefaultStore();
    const reopened = defaultStore();
    assert.notEqual(reopened, first);
    await closeDefaultStore();
  } finally {
    if (previous === undefined) Deno.env.delete("SUPABASE_DB_URL");
    else Deno.env.set("SUPABASE_DB_URL", previous);
  }
});
