/**
 * A duplicate of a request still in flight: the 409's hint comes from recent handler durations (not the
 * lease), and a waiting duplicate is answered as soon as the first finishes.
 */
import assert from "node:assert/strict";
import { HandlerTiming } from "./_handler_timing.ts";
import { type Handler, withIdempotency } from "./middleware.ts";
import type { IdempotencyOptions } from "./options.ts";
import type { BeginInput, BeginResult } from "./store.ts";
import { MemoryStore } from "./stores/memory.ts";

/** A MemoryStore that counts `begin` calls. */
class CountingStore extends MemoryStore {
  begins = 0;
  override begin(input: BeginInput): Promise<BeginResult> {
    this.begins++;
    return super.begin(input);
  }
}

const silent = { error: () => {}, warn: () => {} };

function wrap(handler: Handler, store: MemoryStore, options: Partial<IdempotencyOptions> = {}) {
  return withIdempotency(handler, {
    functionName: "in-flight",
    store,
    getUserId: () => "user-1",
    logger: silent,
    ...options,
  });
}

function request(key: string): Request {
  return new Request("http://localhost/functions/v1/in-flight", {
    method: "POST",
    headers: { "idempotency-key": key, "content-type": "application/json" },
    body: '{"n":1}',
  });
}

/** A handler held until `release()`, counting its runs. */
function heldHandler() {
  const state = { runs: 0, release: Promise.withResolvers<void>(), started: Promise.withResolvers<void>() };
  const handler: Handler = async () => {
    state.runs++;
    state.started.resolve();
    await state.release.promise;
    return Response.json({ run: state.runs, id: crypto.randomUUID() }, { status: 201 });
  };
  return { handler, state };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("HandlerTiming: a second (at most the lease) before any run, then the 90th percentile, bounded", async () => {
  const timing = new HandlerTiming();
  assert.equal(timing.expectedMs(30_000), 1000);
  assert.equal(timing.expectedMs(400), 400);
  const done = timing.start("r1");
  const settled = timing.settled("r1");
  assert.ok(settled);
  await sleep(30);
  done();
  await settled; // woken by the finish
  assert.equal(timing.settled("r1"), undefined);
  const hint = timing.expectedMs(30_000);
  assert.ok(hint >= 30 && hint < 1000, `hint ${hint}`);
  assert.equal(timing.expectedMs(20), 20, "never past the lease");
  // a fast run is still hinted at least 10 ms away
  const quick = new HandlerTiming();
  quick.start("r2")();
  assert.equal(quick.expectedMs(30_000), 10);
});

Deno.test("409 REQUEST_IN_PROGRESS: Retry-After 1 and a ms hint near the handler's duration, not the 30 s lease", async () => {
  const store = new MemoryStore();
  const slow: Handler = async () => {
    await sleep(50);
    return Response.json({ ok: true }, { status: 201 });
  };
  const wrapped = wrap(slow, store);
  await (await wrapped(request("seed-1"))).body?.cancel(); // one finished run to learn from
  const first = wrapped(request("key-1"));
  await sleep(5);
  const duplicate = await wrapped(request("key-1"));
  assert.equal(duplicate.status, 409);
  assert.equal((await duplicate.json()).error.code, "REQUEST_IN_PROGRESS");
  assert.equal(duplicate.headers.get("retry-after"), "1");
  const hint = Number(duplicate.headers.get("x-idempotency-retry-after-ms"));
  assert.ok(hint >= 50 && hint < 1000, `hint ${hint} ms for a 50 ms handler`);
  assert.equal((await first).status, 201);
});

Deno.test("409 before any run finished here: the hint is one second, not the lease", async () => {
  const { handler, state } = heldHandler();
  const wrapped = wrap(handler, new MemoryStore());
  const first = wrapped(request("key-2"));
  await state.started.promise;
  const duplicate = await wrapped(request("key-2"));
  await duplicate.body?.cancel();
  assert.equal(duplicate.headers.get("retry-after"), "1");
  assert.equal(duplicate.headers.get("x-idempotency-retry-after-ms"), "1000");
  state.release.resolve();
  await (await first).body?.cancel();
});

Deno.test("wait mode, same isolate: the duplicate is woken by the first's finish, without polling", async () => {
  const store = new CountingStore();
  const { handler, state } = heldHandler();
  const wrapped = wrap(handler, store, { onInFlight: "wait" });
  const first = wrapped(request("key-3"));
  await state.started.promise;
  const waiter = wrapped(request("key-3"));
  await sleep(300); // long enough for many polls, were the waiter polling
  assert.equal(store.begins, 2, "the waiter asked once, then slept until woken");
  state.release.resolve();
  const [a, b] = await Promise.all([first, waiter]);
  assert.equal(b.headers.get("x-idempotency-replay"), "true");
  assert.deepEqual(await b.json(), await a.json());
  assert.equal(store.begins, 3, "one more begin after the wake-up: the replay");
  assert.equal(state.runs, 1);
});

Deno.test("wait mode, another isolate: short bounded polls find the replay soon after the finish", async () => {
  const store = new CountingStore(); // shared, as Postgres or Redis is between isolates
  const { handler, state } = heldHandler();
  const isolateA = wrap(handler, store, { onInFlight: "wait" });
  const isolateB = wrap(handler, store, { onInFlight: "wait" });
  const first = isolateA(request("key-4"));
  await state.started.promise;
  const waiter = isolateB(request("key-4"));
  await sleep(60);
  state.release.resolve();
  const [a, b] = await Promise.all([first, waiter]);
  assert.equal(b.headers.get("x-idempotency-replay"), "true");
  assert.deepEqual(await b.json(), await a.json());
  assert.ok(store.begins <= 12, `${store.begins} begin calls: polls are bounded`);
  assert.equal(state.runs, 1);
});
