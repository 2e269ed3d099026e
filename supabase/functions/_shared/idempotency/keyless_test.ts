import assert from "node:assert/strict";
import { bucketOf, keylessBaseKey, KeylessPairStore } from "./keyless.ts";
import { withIdempotency } from "./middleware.ts";
import type { BeginInput } from "./store.ts";
import { MemoryStore } from "./stores/memory.ts";

const URL_BASE = "http://localhost/functions/v1/keyless-fn";
const OK = { status: 201, headers: {}, body: new Uint8Array([1]), encoding: "identity" as const };

function input(key: string, fingerprint = "a".repeat(64)): BeginInput {
  return {
    key,
    userId: "u1",
    functionName: "keyless-fn",
    fingerprint,
    ttlSeconds: 1,
    lockTimeoutSeconds: 30,
  };
}

Deno.test("keyless: two requests 5 ms apart are one run at every offset across two bucket boundaries", async () => {
  const windowMs = 100;
  const base = 1_700_000_000_000; // a multiple of 100: offset 0 is a boundary
  for (let offset = 0; offset < 2 * windowMs; offset++) {
    for (const completedFirst of [true, false]) {
      let now = base + offset;
      const store = new KeylessPairStore(new MemoryStore({ now: () => now }), { windowMs, now: () => now });
      const first = await store.begin(input("kl_x"));
      assert.equal(first.outcome, "started");
      if (first.outcome !== "started") return;
      if (completedFirst) {
        await store.complete({ recordId: first.recordId, leaseToken: first.leaseToken }, OK);
      }
      now += 5;
      const second = await store.begin(input("kl_x"));
      assert.equal(second.outcome, completedFirst ? "replay" : "in_progress", `offset ${offset}`);
    }
  }
});

Deno.test("keyless: requests twice the window apart never share a claim", async () => {
  let now = 1_700_000_000_050;
  const store = new KeylessPairStore(new MemoryStore({ now: () => now }), { windowMs: 100, now: () => now });
  assert.equal((await store.begin(input("kl_y"))).outcome, "started");
  now += 200;
  assert.equal((await store.begin(input("kl_y"))).outcome, "started");
});

Deno.test("keyless: a burst straddling a boundary leaves exactly one claimant", async () => {
  // requests every millisecond from 10 ms before a boundary to 10 ms after it, interleaved claim by claim
  const base = 1_700_000_000_000;
  const inner = new MemoryStore();
  const clocks = Array.from({ length: 20 }, (_, i) => base - 10 + i);
  const stores = clocks.map((t) => new KeylessPairStore(inner, { windowMs: 100, now: () => t }));
  const results = await Promise.all(stores.map((s) => s.begin(input("kl_z"))));
  assert.equal(results.filter((r) => r.outcome === "started").length, 1);
  assert.equal(bucketOf(base - 1, 100) + 1, bucketOf(base, 100));
});

Deno.test("keyless: the base key separates callers, users, functions and requests", () => {
  const same = { callerKind: "user" as const, userId: "u1", functionName: "f", fingerprint: "ab" };
  const key = keylessBaseKey(same);
  assert.match(key, /^kl_[0-9a-f]{48}$/);
  assert.equal(keylessBaseKey({ ...same }), key);
  assert.notEqual(keylessBaseKey({ ...same, userId: "u2" }), key);
  assert.notEqual(keylessBaseKey({ ...same, functionName: "g" }), key);
  assert.notEqual(keylessBaseKey({ ...same, fingerprint: "ac" }), key);
  assert.notEqual(keylessBaseKey({ ...same, callerKind: "service", userId: null }), key);
});

function keylessRequest(user: string | null, body: unknown, key?: string): Request {
  const headers = new Headers({ "content-type": "application/json" });
  if (user !== null) headers.set("x-user", user);
  if (key) headers.set("idempotency-key", key);
  return new Request(URL_BASE, { method: "POST", headers, body: JSON.stringify(body) });
}

function keylessWrapper(store: MemoryStore, runs: Map<string, number>, delayMs = 0) {
  return withIdempotency(async (req) => {
    const body = await req.text();
    runs.set(body, (runs.get(body) ?? 0) + 1);
    if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
    return Response.json({ ran: body }, { status: 201 });
  }, {
    functionName: "keyless-fn",
    store,
    keyless: true,
    getUserId: (req) => req.headers.get("x-user"),
    logger: { error() {}, warn() {} },
  });
}

Deno.test("keyless via the middleware: a double submit 5 ms apart runs once, 30 times over", async () => {
  const store = new MemoryStore();
  const runs = new Map<string, number>();
  const wrapped = keylessWrapper(store, runs);
  for (let i = 0; i < 30; i++) {
    const body = { order: i };
    const first = await wrapped(keylessRequest("u1", body));
    await new Promise((r) => setTimeout(r, 5));
    const second = await wrapped(keylessRequest("u1", body));
    assert.equal(first.status, 201);
    assert.equal(second.status, 201);
    assert.equal(second.headers.get("x-idempotency-replay"), "true");
    await first.body?.cancel();
    await second.body?.cancel();
  }
  assert.ok([...runs.values()].every((n) => n === 1));
  assert.equal(wrapped.metrics.started, 30);
  assert.equal(wrapped.metrics.replayed, 30);
});

Deno.test("keyless via the middleware: 20 concurrent double clicks run once", async () => {
  const runs = new Map<string, number>();
  const wrapped = keylessWrapper(new MemoryStore(), runs, 30);
  const responses = await Promise.all(
    Array.from({ length: 20 }, () => wrapped(keylessRequest("u1", { a: 1 }))),
  );
  await Promise.all(responses.map((r) => r.body?.cancel()));
  assert.equal([...runs.values()].reduce((a, b) => a + b, 0), 1);
  assert.equal(responses.filter((r) => r.status === 201).length, 1);
  assert.equal(responses.filter((r) => r.status === 409).length, 19);
});

Deno.test("keyless via the middleware: never merges users, skips anonymous callers, an explicit key wins", async () => {
  const runs = new Map<string, number>();
  const store = new MemoryStore();
  const wrapped = keylessWrapper(store, runs);
  const body = { same: true };
  for (
    const res of await Promise.all([wrapped(keylessRequest("u1", body)), wrapped(keylessRequest("u2", body))])
  ) {
    assert.equal(res.status, 201);
    assert.equal(res.headers.get("x-idempotency-replay"), "false");
    await res.body?.cancel();
  }
  assert.equal(runs.get(JSON.stringify(body)), 2, "two users, two runs");

  const anon = { anonymous: 1 };
  for (let i = 0; i < 2; i++) await (await wrapped(keylessRequest(null, anon))).body?.cancel();
  assert.equal(runs.get(JSON.stringify(anon)), 2, "anonymous callers are never merged");

  const explicit = { explicit: 1 };
  for (const key of ["key-aaa", "key-bbb"]) {
    await (await wrapped(keylessRequest("u1", explicit, key))).body?.cancel();
  }
  assert.equal(runs.get(JSON.stringify(explicit)), 2, "two explicit keys are two operations");
  assert.equal((await store.status({ key: "key-aaa", userId: "u1" }))?.status, "completed");
});
