import assert from "node:assert/strict";
import { freeFormUserIdsAreIndependent, runStoreContract, started } from "./contract_suite.ts";
import { MemoryStore } from "./memory.ts";
import type { BeginInput } from "../store.ts";

/** A clock the test moves by hand, so lease and TTL expiry cost no real time. */
function manualClock(start = Date.UTC(2026, 10, 23)) {
  let now = start;
  return { now: () => now, advance: (ms: number) => void (now += ms) };
}

runStoreContract(
  "memory",
  () => {
    const clock = manualClock();
    return Promise.resolve({ store: new MemoryStore({ now: clock.now }), advance: clock.advance });
  },
  // Users need no setup, and every record goes with the store when the case closes it.
  {
    fixture: () =>
      Promise.resolve({
        users: [crypto.randomUUID(), crypto.randomUUID()],
        release: () => Promise.resolve(),
      }),
  },
);

function claim(key: string, overrides: Partial<BeginInput> = {}): BeginInput {
  return {
    key,
    userId: null,
    functionName: "memory-test",
    fingerprint: "a".repeat(64),
    ttlSeconds: 60,
    lockTimeoutSeconds: 30,
    ...overrides,
  };
}

Deno.test("memory store: a full store evicts expired records first, then the oldest", async () => {
  const clock = manualClock();
  const store = new MemoryStore({ now: clock.now, maxEntries: 2 });
  // Both leases end before the evictions below: a record under a live lease is never evicted.
  await store.begin(claim("short", { ttlSeconds: 1, lockTimeoutSeconds: 1 }));
  await store.begin(claim("long", { lockTimeoutSeconds: 1 }));
  clock.advance(1500);

  await store.begin(claim("third"));
  assert.equal(await store.status({ key: "short", userId: null }), null, "the expired record went first");
  assert.ok(
    await store.status({ key: "long", userId: null }),
    "a live record stayed while an expired one could go",
  );

  clock.advance(10);
  await store.begin(claim("fourth"));
  assert.equal(await store.status({ key: "long", userId: null }), null, "then the oldest went");
  assert.ok(await store.status({ key: "third", userId: null }));
  assert.ok(await store.status({ key: "fourth", userId: null }));
  await store.close();
});

Deno.test("memory store: in_progress rounds the remaining lease up to whole seconds", async () => {
  const clock = manualClock();
  const store = new MemoryStore({ now: clock.now });
  const { recordId } = await store.begin(claim("lease", { lockTimeoutSeconds: 10 }));
  clock.advance(8_500);
  assert.deepEqual(await store.begin(claim("lease")), {
    outcome: "in_progress",
    recordId,
    retryAfterSeconds: 2,
  });
  clock.advance(1_400);
  assert.deepEqual(await store.begin(claim("lease")), {
    outcome: "in_progress",
    recordId,
    retryAfterSeconds: 1,
  });
  await store.close();
});

Deno.test("memory store: cleanup deletes only expired records and returns how many", async () => {
  const clock = manualClock();
  const store = new MemoryStore({ now: clock.now });
  await store.begin(claim("gone-1", { ttlSeconds: 1, lockTimeoutSeconds: 1 }));
  await store.begin(claim("gone-2", { ttlSeconds: 1, lockTimeoutSeconds: 1 }));
  await store.begin(claim("kept", { ttlSeconds: 60, lockTimeoutSeconds: 1 }));
  clock.advance(2_000);
  assert.equal(await store.cleanup(), 2);
  assert.equal(await store.cleanup(), 0);
  assert.ok(await store.status({ key: "kept", userId: null }));
  await store.close();
});

Deno.test("memory store: cleanup keeps an expired record while its lease is live, then deletes it", async () => {
  const clock = manualClock();
  const store = new MemoryStore({ now: clock.now });
  const lease = started(await store.begin(claim("leased", { ttlSeconds: 1, lockTimeoutSeconds: 30 })));
  clock.advance(2_000);
  assert.equal(await store.cleanup(), 0, "the worker still holds its lease");
  assert.equal((await store.begin(claim("leased"))).outcome, "in_progress");
  assert.equal(await store.extendLease(lease, 30), true);
  clock.advance(29_000);
  assert.equal(await store.cleanup(), 0, "the renewed lease is still live");
  clock.advance(1_000);
  assert.equal(await store.cleanup(), 1, "lease and TTL both ended");
  await store.close();
});

Deno.test("memory store: a full store never evicts a record under a live lease", async () => {
  const clock = manualClock();
  const store = new MemoryStore({ now: clock.now, maxEntries: 2 });
  const expiredLeased = started(await store.begin(claim("expired-leased", { ttlSeconds: 1 })));
  const leased = started(await store.begin(claim("leased")));
  clock.advance(1_500);

  // Both are in flight: neither the expired one nor the oldest may go, so the store holds one more.
  started(await store.begin(claim("third", { lockTimeoutSeconds: 1 })));
  assert.equal((await store.begin(claim("expired-leased"))).outcome, "in_progress");
  assert.equal((await store.begin(claim("leased"))).outcome, "in_progress");
  assert.equal(await store.complete(expiredLeased, textBody("late but kept")), true);
  assert.equal(await store.complete(leased, textBody("kept")), true);

  // With no lease left, eviction applies again: the expired record first, then the oldest.
  clock.advance(1_000);
  started(await store.begin(claim("fourth")));
  assert.equal(await store.status({ key: "expired-leased", userId: null }), null, "the expired one went");
  assert.equal(await store.status({ key: "leased", userId: null }), null, "then the oldest");
  assert.equal((await store.status({ key: "third", userId: null }))?.status, "processing");
  assert.ok(await store.status({ key: "fourth", userId: null }));
  await store.close();
});

Deno.test('memory store: a user id of "_" or with ":" shares no record with another scope', async () => {
  const store = new MemoryStore();
  try {
    await freeFormUserIdsAreIndependent(store, "memory-scopes");
  } finally {
    await store.close();
  }
});

Deno.test("memory store: rejects a maxEntries below 1", () => {
  assert.throws(() => new MemoryStore({ maxEntries: 0 }), RangeError);
});

function textBody(text: string) {
  return { status: 200, headers: {}, body: new TextEncoder().encode(text), encoding: "identity" as const };
}
