import assert from "node:assert/strict";
import {
  checkIdempotency,
  cleanupExpiredKeys,
  createIdempotencyKey,
  markIdempotencyFailed,
  replayIdempotencyResult,
  storeIdempotencyResult,
} from "./api.ts";
import { generateIdempotencyKey } from "./key.ts";
import { closeDefaultStore } from "./options.ts";
import type { BeginInput, BeginResult, Lease } from "./store.ts";
import { MemoryStore } from "./stores/memory.ts";

function input(key: string, overrides: Partial<BeginInput> = {}): BeginInput {
  return {
    key,
    userId: "user-1",
    functionName: "worker",
    fingerprint: "f".repeat(64),
    ttlSeconds: 60,
    lockTimeoutSeconds: 30,
    ...overrides,
  };
}

function leaseOf(result: BeginResult): Lease {
  assert.equal(result.outcome, "started");
  return { recordId: result.recordId, leaseToken: result.leaseToken };
}

Deno.test("api: claim, store a Response, then replay it and read its status", async () => {
  const store = new MemoryStore();
  const key = generateIdempotencyKey();
  assert.equal(await checkIdempotency({ key, userId: "user-1" }, { store }), null);
  const lease = leaseOf(await createIdempotencyKey(input(key), { store }));
  assert.equal((await checkIdempotency({ key, userId: "user-1" }, { store }))?.status, "processing");

  const response = new Response("done", { status: 201, headers: { "set-cookie": "a=b", "x-job": "7" } });
  assert.equal(await storeIdempotencyResult(lease, response, { store }), true);

  const replay = await createIdempotencyKey(input(key), { store });
  assert.equal(replay.outcome, "replay");
  if (replay.outcome !== "replay") return;
  assert.equal(replay.response.status, 201);
  assert.deepEqual(replay.response.headers, {
    "content-type": "text/plain;charset=UTF-8",
    "x-job": "7",
  }, "stored like the middleware stores: no set-cookie");
  assert.equal(new TextDecoder().decode(replay.response.body), "done");
  const status = await checkIdempotency({ key, userId: "user-1" }, { store });
  assert.equal(status?.status, "completed");
  assert.equal(status?.statusCode, 201);
  assert.equal(status?.replayCount, 1);
});

Deno.test("api: a worker stores with a response dictionary and replays the same bytes, marked as a replay", async () => {
  const store = new MemoryStore();
  const key = generateIdempotencyKey();
  const responseDictionaries = ['{"job":{"id":"","status":"done","items":[{"name":"","size":0}]}}'];
  const json = JSON.stringify({
    job: {
      id: key,
      status: "done",
      items: Array.from({ length: 20 }, (_, i) => ({ name: `file-${i}`, size: i * 1000 })),
    },
  });
  const lease = leaseOf(await createIdempotencyKey(input(key), { store }));
  assert.equal(
    await storeIdempotencyResult(lease, new Response(json, { status: 201 }), { store, responseDictionaries }),
    true,
  );
  const replay = await createIdempotencyKey(input(key), { store });
  assert.equal(replay.outcome, "replay");
  if (replay.outcome !== "replay") return;
  assert.equal(replay.response.encoding, "zdict");
  const response = await replayIdempotencyResult(replay.response, { responseDictionaries });
  assert.equal(response.status, 201);
  assert.equal(response.headers.get("x-idempotency-replay"), "true");
  assert.equal(await response.text(), json);
  await assert.rejects(replayIdempotencyResult(replay.response), /not in responseDictionaries/);
});

Deno.test("api: a failed claim runs again; a stale lease cannot store", async () => {
  const store = new MemoryStore();
  const lease = leaseOf(await createIdempotencyKey(input("job-1"), { store }));
  assert.equal(await markIdempotencyFailed(lease, new Error("worker crashed"), { store, status: 500 }), true);
  assert.equal((await checkIdempotency({ key: "job-1", userId: "user-1" }, { store }))?.status, "failed");
  const retry = leaseOf(await createIdempotencyKey(input("job-1"), { store }));
  assert.equal(await storeIdempotencyResult(lease, new Response("late"), { store }), false);
  assert.equal(
    await storeIdempotencyResult(retry, {
      status: 200,
      headers: {},
      body: new Uint8Array([1]),
      encoding: "identity",
    }, { store }),
    true,
  );
});

Deno.test("api: cleanupExpiredKeys deletes only expired keys", async () => {
  let now = Date.UTC(2026, 0, 1);
  const store = new MemoryStore({ now: () => now });
  // Short leases: a record whose worker still holds its lease is not deleted, even past its TTL.
  await createIdempotencyKey(input("short", { ttlSeconds: 1, lockTimeoutSeconds: 1 }), { store });
  await createIdempotencyKey(input("long", { ttlSeconds: 3600, lockTimeoutSeconds: 1 }), { store });
  now += 2000;
  assert.equal(await cleanupExpiredKeys({ store, batchSize: 100 }), 1);
  assert.ok(await checkIdempotency({ key: "long", userId: "user-1" }, { store }));
});

Deno.test("api: without a store and without SUPABASE_DB_URL every call rejects, none throws", async () => {
  const saved = Deno.env.get("SUPABASE_DB_URL");
  // A default store opened earlier would be reused; close it so each call has to open one.
  await closeDefaultStore();
  Deno.env.delete("SUPABASE_DB_URL");
  try {
    const lease: Lease = { recordId: crypto.randomUUID(), leaseToken: crypto.randomUUID() };
    const calls: [string, () => Promise<unknown>][] = [
      ["checkIdempotency", () => checkIdempotency({ key: "no-store", userId: null })],
      ["createIdempotencyKey", () => createIdempotencyKey(input("no-store"))],
      ["storeIdempotencyResult", () => storeIdempotencyResult(lease, new Response("x"))],
      ["markIdempotencyFailed", () => markIdempotencyFailed(lease, new Error("x"))],
      ["cleanupExpiredKeys", () => cleanupExpiredKeys()],
    ];
    for (const [name, call] of calls) {
      let result: Promise<unknown> | undefined;
      assert.doesNotThrow(() => void (result = call()), `${name} threw synchronously`);
      assert.ok(result instanceof Promise, `${name} returned a promise`);
      await assert.rejects(result, /SUPABASE_DB_URL/, `${name} rejected`);
    }
  } finally {
    if (saved !== undefined) Deno.env.set("SUPABASE_DB_URL", saved);
    await closeDefaultStore();
  }
});
