import assert from "node:assert/strict";
import { runActionContract } from "./contract_suite.ts";
import { ActionIdempotency } from "./manager.ts";
import { MemoryActionStore } from "./memory.ts";

runActionContract("memory", () => new MemoryActionStore());

const meta = { actionType: null, target: null, signalId: null, paramsHash: null };
const claim = (store: MemoryActionStore, key: string, leaseMs = 30_000) =>
  store.claim({ key, meta, ttlMs: 60_000, leaseMs, retryFailed: true });

Deno.test("memory action store: when full, the oldest fifth goes at once, never a record under a live lease", async () => {
  let now = 1_000_000;
  const store = new MemoryActionStore({ maxEntries: 10, now: () => now });
  const leased = await claim(store, "k0", 60_000); // oldest, and running
  assert.equal(leased.outcome, "started");
  for (let i = 1; i < 10; i++) {
    const c = await claim(store, `k${i}`);
    if (c.outcome === "started") await store.complete(c.lease, String(i));
    now += 1;
  }
  await claim(store, "k10"); // full: evicts 2 (a fifth of 10), skipping the live lease on k0
  const keys = (await store.find({ limit: 100 })).map((r) => r.key);
  assert.deepEqual(keys, ["k0", "k3", "k4", "k5", "k6", "k7", "k8", "k9", "k10"]);
  assert.equal((await store.stats()).evicted, 2);
  const info = await store.info();
  assert.deepEqual([info.currentSize, info.maxSize, info.utilizationPercent], [9, 10, 90]);
  // the evicted k1 runs again; the leased k0 is still in progress
  assert.equal((await claim(store, "k1")).outcome, "started");
  assert.equal((await claim(store, "k0")).outcome, "in_progress");
});

Deno.test("memory action store: expired records go before live ones when full", async () => {
  let now = 0;
  const store = new MemoryActionStore({ maxEntries: 3, now: () => now });
  for (const key of ["a", "b", "c"]) {
    const c = await store.claim({
      key,
      meta,
      ttlMs: key === "b" ? 1000 : 60_000,
      leaseMs: 1000,
      retryFailed: true,
    });
    if (c.outcome === "started") await store.complete(c.lease, "1");
  }
  now = 5000;
  await claim(store, "d");
  assert.deepEqual((await store.find({ limit: 10 })).map((r) => r.key), ["a", "c", "d"]);
  assert.equal((await store.stats()).expiredCleaned, 1);
});

Deno.test("memory action store: bad options are RangeErrors", () => {
  assert.throws(() => new MemoryActionStore({ maxEntries: 0 }), RangeError);
  assert.throws(() => new MemoryActionStore({ evictionFraction: 0 }), RangeError);
});

Deno.test("auto cleanup: the timer runs cleanupExpired, stops, and never keeps a process alive", async () => {
  const store = new MemoryActionStore();
  const actions = new ActionIdempotency({ store });
  await actions.executeWithIdempotency({ key: "short" }, () => 1, { ttl: 1000 });
  actions.startAutoCleanup(200);
  assert.equal(actions.autoCleanupRunning, true);
  await new Promise((resolve) => setTimeout(resolve, 1500));
  assert.equal((await store.stats()).expiredCleaned, 1, "the timer cleaned the expired record");
  actions.stopAutoCleanup();
  assert.equal(actions.autoCleanupRunning, false);
  await actions.close();

  // A process whose only pending work is the cleanup timer exits at once.
  const code = `
    import { ActionIdempotency, MemoryActionStore } from ${
    JSON.stringify(new URL("../../actions.ts", import.meta.url).href)
  };
    new ActionIdempotency({ store: new MemoryActionStore() }).startAutoCleanup(60_000);
    console.log("started");`;
  const started = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--quiet", code],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const elapsed = performance.now() - started;
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  assert.equal(new TextDecoder().decode(out.stdout).trim(), "started");
  assert.ok(elapsed < 30_000, `the process exited (after ${elapsed.toFixed(0)} ms, not the 60 s timer)`);
});
