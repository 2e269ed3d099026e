import assert from "node:assert/strict";
import { signHs256 } from "./auth_testing.ts";
import { type Handler, type IdempotentHandler, withIdempotency } from "./middleware.ts";
import type { IdempotencyLogger, IdempotencyOptions } from "./options.ts";
import type {
  BeginInput,
  BeginResult,
  IdempotencyStore,
  KeyScope,
  KeyStatus,
  Lease,
  StoredResponse,
} from "./store.ts";
import { MemoryStore } from "./stores/memory.ts";

// ---------------------------------------------------------------------------------------------------------
// Support

const URL_BASE = "http://localhost/functions/v1/test-fn";

interface CallInit {
  key?: string | null;
  body?: unknown;
  user?: string | null;
  path?: string;
  method?: string;
  headers?: Record<string, string>;
}

/** A JSON request as a client sends it; `user` goes in `x-user`, which the test `getUserId` reads. */
function request(init: CallInit = {}): Request {
  const headers = new Headers({ "content-type": "application/json", ...init.headers });
  const key = init.key === undefined ? "key-123" : init.key;
  if (key !== null) headers.set("idempotency-key", key);
  const user = init.user === undefined ? "user-1" : init.user;
  if (user !== null) headers.set("x-user", user);
  const method = init.method ?? "POST";
  const body = method === "GET" || method === "HEAD" ? null : JSON.stringify(init.body ?? { amount: 42 });
  return new Request(`${URL_BASE}${init.path ?? ""}`, { method, headers, body });
}

/** A logger that keeps what it is told, per level. */
function recordingLogger() {
  const entries = { error: [] as unknown[][], warn: [] as unknown[][] };
  const logger: IdempotencyLogger = {
    error: (...data) => void entries.error.push(data),
    warn: (...data) => void entries.warn.push(data),
  };
  return { logger, entries };
}

/** Wraps `handler` around `store`, with the user read from `x-user` and a recording logger. */
function wrap(
  handler: Handler,
  store: IdempotencyStore,
  options: { [K in keyof IdempotencyOptions]?: IdempotencyOptions[K] | undefined } = {},
) {
  const { logger, entries } = recordingLogger();
  const wrapped = withIdempotency(handler, {
    functionName: "test-fn",
    store,
    getUserId: (req) => req.headers.get("x-user"),
    logger,
    ...options,
  } as IdempotencyOptions);
  return { wrapped, logs: entries };
}

/** A handler that counts its runs and answers `respond(run)` (default: 201 JSON naming the run). */
function countingHandler(respond?: (run: number, req: Request) => Response | Promise<Response>) {
  const state = { runs: 0 };
  const handler: Handler = (req) => {
    state.runs++;
    return respond ? respond(state.runs, req) : Response.json({ run: state.runs }, { status: 201 });
  };
  return { handler, state };
}

async function errorCode(response: Response): Promise<string> {
  assert.equal(response.headers.get("content-type"), "application/json");
  const body = await response.json();
  assert.equal(typeof body.error.message, "string");
  return body.error.code;
}

function headersWithout(response: Response, ...names: string[]): Record<string, string> {
  return Object.fromEntries([...response.headers].filter(([name]) => !names.includes(name)));
}

/** Delegates to a real store, counting calls and keeping what `complete` stored. */
class SpyStore implements IdempotencyStore {
  readonly name = "spy";
  readonly calls = { begin: 0, complete: 0, fail: 0, extendLease: 0 };
  readonly completed: StoredResponse[] = [];
  #waiters: { method: keyof SpyStore["calls"]; count: number; resolve: () => void }[] = [];

  constructor(readonly inner: IdempotencyStore) {}

  /** Resolves once `method` has been called `count` times; rejects after 10 s so a broken wrapper fails, not hangs. */
  reached(method: keyof SpyStore["calls"], count: number): Promise<void> {
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    const guard = setTimeout(() => reject(new Error(`${method} was never called ${count} times`)), 10_000);
    this.#waiters.push({ method, count, resolve: () => (clearTimeout(guard), resolve()) });
    this.#notify();
    return promise;
  }

  begin(input: BeginInput): Promise<BeginResult> {
    return this.#count("begin", () => this.inner.begin(input));
  }
  complete(lease: Lease, response: StoredResponse): Promise<boolean> {
    this.completed.push(response);
    return this.#count("complete", () => this.inner.complete(lease, response));
  }
  fail(lease: Lease, error: { message: string; status?: number }): Promise<boolean> {
    return this.#count("fail", () => this.inner.fail(lease, error));
  }
  extendLease(lease: Lease, seconds: number): Promise<boolean> {
    return this.#count("extendLease", () => this.inner.extendLease(lease, seconds));
  }
  status(scope: KeyScope): Promise<KeyStatus | null> {
    return this.inner.status(scope);
  }
  cleanup(options?: { batchSize?: number }): Promise<number> {
    return this.inner.cleanup(options);
  }
  close(): Promise<void> {
    return this.inner.close();
  }

  #count<T>(method: keyof SpyStore["calls"], call: () => Promise<T>): Promise<T> {
    this.calls[method]++;
    const result = call();
    this.#notify();
    return result;
  }

  #notify(): void {
    this.#waiters = this.#waiters.filter((w) => {
      if (this.calls[w.method] < w.count) return true;
      w.resolve();
      return false;
    });
  }
}

/** A store whose every call fails, like a database that is down; `failOnly` limits which methods fail. */
class FailingStore extends SpyStore {
  constructor(private readonly failOnly?: string[]) {
    super(new MemoryStore());
  }
  override begin(input: BeginInput): Promise<BeginResult> {
    return this.#fails("begin") ? Promise.reject(new Error("connection refused")) : super.begin(input);
  }
  override complete(lease: Lease, response: StoredResponse): Promise<boolean> {
    return this.#fails("complete")
      ? Promise.reject(new Error("connection refused"))
      : super.complete(lease, response);
  }
  #fails(method: string): boolean {
    return this.failOnly === undefined || this.failOnly.includes(method);
  }
}

/** A clock the test moves by hand. */
function manualClock(start = Date.UTC(2026, 10, 23)) {
  let now = start;
  return { now: () => now, advance: (ms: number) => void (now += ms) };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------------------
// Calls without a key

Deno.test("middleware: without a key the handler runs every time, unmarked", async () => {
  const { handler, state } = countingHandler();
  const { wrapped } = wrap(handler, new MemoryStore());
  const first = await wrapped(request({ key: null }));
  const second = await wrapped(request({ key: null }));
  assert.deepEqual([first.status, second.status], [201, 201]);
  assert.deepEqual(await second.json(), { run: 2 });
  assert.equal(first.headers.get("x-idempotency-replay"), null);
  assert.equal(state.runs, 2);
  assert.equal(wrapped.metrics.started, 0);
});

Deno.test("middleware: required → 400 KEY_REQUIRED without running the handler", async () => {
  const { handler, state } = countingHandler();
  const { wrapped } = wrap(handler, new MemoryStore(), { required: true });
  const response = await wrapped(request({ key: null }));
  assert.equal(response.status, 400);
  assert.equal(await errorCode(response), "KEY_REQUIRED");
  assert.equal(state.runs, 0);
});

Deno.test("middleware: conflicting key headers → 400 KEY_CONFLICT; an invalid key → 400 INVALID_KEY", async () => {
  const { handler, state } = countingHandler();
  const { wrapped } = wrap(handler, new MemoryStore());
  const conflict = await wrapped(request({ key: "key-aaa", headers: { "x-idempotency-key": "key-bbb" } }));
  assert.equal(conflict.status, 400);
  assert.equal(await errorCode(conflict), "KEY_CONFLICT");
  for (const key of ["ab", "k".repeat(257), "has space", "dot.ted"]) {
    const invalid = await wrapped(request({ key }));
    assert.equal(invalid.status, 400, key);
    assert.equal(await errorCode(invalid), "INVALID_KEY");
  }
  assert.equal(state.runs, 0);
});

// ---------------------------------------------------------------------------------------------------------
// First call and replays

Deno.test("middleware: the first call runs; a retry replays status, headers and body exactly", async () => {
  const { handler, state } = countingHandler((run) =>
    new Response(JSON.stringify({ run, id: "doc-1" }), {
      status: 201,
      headers: { "content-type": "application/json", "x-request-id": "req-1", location: "/docs/1" },
    })
  );
  const { wrapped } = wrap(handler, new MemoryStore());
  const first = await wrapped(request());
  const replay = await wrapped(request());
  const quoted = await wrapped(request({ key: '"key-123"' }));

  assert.equal(first.headers.get("x-idempotency-replay"), "false");
  assert.equal(replay.headers.get("x-idempotency-replay"), "true");
  assert.equal(quoted.headers.get("x-idempotency-replay"), "true", "a quoted key is the same key");
  assert.deepEqual([first.status, replay.status, quoted.status], [201, 201, 201]);
  assert.deepEqual(
    headersWithout(replay, "x-idempotency-replay"),
    headersWithout(first, "x-idempotency-replay"),
  );
  const firstBody = await first.text();
  assert.equal(await replay.text(), firstBody);
  assert.equal(await quoted.text(), firstBody);
  assert.deepEqual(JSON.parse(firstBody), { run: 1, id: "doc-1" });
  assert.equal(state.runs, 1);
  assert.equal(wrapped.metrics.started, 1);
  assert.equal(wrapped.metrics.replayed, 2);
});

Deno.test("middleware: metrics is a read-only property", () => {
  const { wrapped } = wrap(countingHandler().handler, new MemoryStore());
  const descriptor = Object.getOwnPropertyDescriptor(wrapped, "metrics");
  assert.equal(descriptor?.writable, false);
  assert.deepEqual({ ...wrapped.metrics }, {
    started: 0,
    replayed: 0,
    inFlight: 0,
    mismatched: 0,
    failed: 0,
    storeErrors: 0,
    failOpen: 0,
    leaseLost: 0,
    bypassed: 0,
  });
});

Deno.test("middleware: Set-Cookie reaches the first caller but is never replayed", async () => {
  const { handler } = countingHandler(() => {
    const headers = new Headers({ "content-type": "application/json" });
    headers.append("set-cookie", "session=secret; HttpOnly");
    return new Response("{}", { status: 200, headers });
  });
  const { wrapped } = wrap(handler, new MemoryStore());
  const first = await wrapped(request());
  const replay = await wrapped(request());
  assert.equal(first.headers.get("set-cookie"), "session=secret; HttpOnly");
  assert.equal(replay.headers.get("x-idempotency-replay"), "true");
  assert.equal(replay.headers.get("set-cookie"), null);
  assert.equal(replay.headers.get("content-type"), "application/json");
});

Deno.test("middleware: a 204 is stored and replayed without a body", async () => {
  const { handler, state } = countingHandler(() =>
    new Response(null, { status: 204, headers: { etag: '"v1"' } })
  );
  const { wrapped } = wrap(handler, new MemoryStore());
  await wrapped(request());
  const replay = await wrapped(request());
  assert.equal(replay.status, 204);
  assert.equal(replay.headers.get("etag"), '"v1"');
  assert.equal(replay.headers.get("x-idempotency-replay"), "true");
  assert.equal(state.runs, 1);
});

// ---------------------------------------------------------------------------------------------------------
// Failures release the key

Deno.test("middleware: a 5xx is not stored, so the retry runs the handler again", async () => {
  const { handler, state } = countingHandler((run) =>
    run === 1 ? Response.json({ error: "upstream down" }, { status: 503 }) : Response.json({ ok: true })
  );
  const { wrapped } = wrap(handler, new MemoryStore());
  assert.equal((await wrapped(request())).status, 503);
  const retry = await wrapped(request());
  assert.equal(retry.status, 200);
  assert.equal(retry.headers.get("x-idempotency-replay"), "false");
  const third = await wrapped(request());
  assert.equal(third.headers.get("x-idempotency-replay"), "true");
  assert.equal(state.runs, 2);
  assert.equal(wrapped.metrics.failed, 1);
  assert.equal(wrapped.metrics.started, 2);
});

Deno.test("middleware: a throw becomes 500 INTERNAL_ERROR (nothing leaked), and the retry runs again", async () => {
  const { handler, state } = countingHandler((run) => {
    if (run === 1) throw new Error("db password is hunter2");
    return Response.json({ ok: true });
  });
  const { wrapped, logs } = wrap(handler, new MemoryStore());
  const failed = await wrapped(request());
  assert.equal(failed.status, 500);
  const text = await failed.text();
  assert.equal(JSON.parse(text).error.code, "INTERNAL_ERROR");
  assert.ok(!text.includes("hunter2"), "the error message must not reach the client");
  assert.ok(logs.error.some((entry) => entry.some((part) => part instanceof Error)), "the throw is logged");
  const retry = await wrapped(request());
  assert.equal(retry.status, 200);
  assert.equal(state.runs, 2);
});

Deno.test("middleware: a 4xx is not stored by default", async () => {
  const { handler, state } = countingHandler(() => Response.json({ error: "bad field" }, { status: 400 }));
  const { wrapped } = wrap(handler, new MemoryStore());
  await wrapped(request());
  const retry = await wrapped(request());
  assert.equal(retry.status, 400);
  assert.equal(retry.headers.get("x-idempotency-replay"), "false");
  assert.equal(state.runs, 2);
});

Deno.test("middleware: storeClientErrors stores 4xx, except 408, 409, 425 and 429", async () => {
  for (const status of [400, 404, 422]) {
    const { handler, state } = countingHandler(() => Response.json({ status }, { status }));
    const { wrapped } = wrap(handler, new MemoryStore(), { storeClientErrors: true });
    await wrapped(request());
    const retry = await wrapped(request());
    assert.equal(retry.status, status);
    assert.equal(retry.headers.get("x-idempotency-replay"), "true", `${status} is stored`);
    assert.equal(state.runs, 1);
  }
  for (const status of [408, 409, 425, 429]) {
    const { handler, state } = countingHandler(() => Response.json({ status }, { status }));
    const { wrapped } = wrap(handler, new MemoryStore(), { storeClientErrors: true });
    await wrapped(request());
    await wrapped(request());
    assert.equal(state.runs, 2, `${status} is transient and never stored`);
  }
});

Deno.test("middleware: a 3xx is a final outcome and is stored", async () => {
  const { handler, state } = countingHandler(() =>
    new Response(null, { status: 303, headers: { location: "/orders/7" } })
  );
  const { wrapped } = wrap(handler, new MemoryStore());
  await wrapped(request());
  const replay = await wrapped(request());
  assert.equal(replay.status, 303);
  assert.equal(replay.headers.get("location"), "/orders/7");
  assert.equal(state.runs, 1);
});

// ---------------------------------------------------------------------------------------------------------
// Misuse and concurrency

Deno.test("middleware: the same key with another body, path or method → 422", async () => {
  const { handler, state } = countingHandler();
  const { wrapped } = wrap(handler, new MemoryStore());
  await wrapped(request({ body: { amount: 42, currency: "eur" } }));
  const reordered = await wrapped(request({ body: { currency: "eur", amount: 42 } }));
  assert.equal(reordered.headers.get("x-idempotency-replay"), "true", "key order does not matter");
  for (const init of [{ body: { amount: 43, currency: "eur" } }, { path: "/other" }, { method: "PUT" }]) {
    const response = await wrapped(request(init));
    assert.equal(response.status, 422);
    assert.equal(await errorCode(response), "KEY_REUSED_WITH_DIFFERENT_REQUEST");
  }
  assert.equal(state.runs, 1);
  assert.equal(wrapped.metrics.mismatched, 3);
});

Deno.test("middleware: a duplicate while the first runs → 409 REQUEST_IN_PROGRESS with Retry-After", async () => {
  const release = Promise.withResolvers<void>();
  const started = Promise.withResolvers<void>();
  const { handler, state } = countingHandler(async () => {
    started.resolve();
    await release.promise;
    return Response.json({ done: true });
  });
  const { wrapped } = wrap(handler, new MemoryStore());
  const first = wrapped(request());
  await started.promise;
  const duplicate = await wrapped(request());
  assert.equal(duplicate.status, 409);
  assert.equal(await errorCode(duplicate), "REQUEST_IN_PROGRESS");
  const retryAfter = Number(duplicate.headers.get("retry-after"));
  assert.ok(retryAfter >= 1 && retryAfter <= 30, `Retry-After ${retryAfter}`);
  release.resolve();
  assert.equal((await first).status, 200);
  assert.equal((await wrapped(request())).headers.get("x-idempotency-replay"), "true");
  assert.equal(state.runs, 1);
  assert.equal(wrapped.metrics.inFlight, 1);
});

Deno.test("middleware: wait mode coalesces 20 concurrent duplicates onto one run", async () => {
  const store = new SpyStore(new MemoryStore());
  const { handler, state } = countingHandler(async () => {
    await store.reached("begin", 20); // every duplicate has arrived and found the key taken
    return Response.json({ result: crypto.randomUUID() });
  });
  const { wrapped } = wrap(handler, store, { onInFlight: "wait" });
  const responses = await Promise.all(Array.from({ length: 20 }, () => wrapped(request())));
  const bodies = await Promise.all(responses.map((response) => response.text()));
  assert.equal(state.runs, 1);
  assert.ok(responses.every((response) => response.status === 200));
  assert.equal(new Set(bodies).size, 1, "every caller gets the same body");
  const replays = responses.filter((response) => response.headers.get("x-idempotency-replay") === "true");
  assert.equal(replays.length, 19);
  assert.equal(wrapped.metrics.inFlight, 19);
  assert.equal(wrapped.metrics.replayed, 19);
});

Deno.test("middleware: in wait mode, if the first request fails the waiter runs the handler itself", async () => {
  const store = new SpyStore(new MemoryStore());
  const { handler, state } = countingHandler(async (run) => {
    if (run > 1) return Response.json({ run });
    await store.reached("begin", 2);
    return Response.json({ error: "boom" }, { status: 500 });
  });
  const { wrapped } = wrap(handler, store, { onInFlight: "wait" });
  const [first, waiter] = await Promise.all([wrapped(request()), wrapped(request())]);
  assert.equal(first.status, 500);
  assert.equal(waiter.status, 200);
  assert.equal(waiter.headers.get("x-idempotency-replay"), "false");
  assert.deepEqual(await waiter.json(), { run: 2 });
  assert.equal(state.runs, 2);
});

Deno.test("middleware: in wait mode, still running at waitTimeoutMs → 409", async () => {
  const release = Promise.withResolvers<void>();
  const store = new SpyStore(new MemoryStore());
  const { handler, state } = countingHandler(async () => {
    await release.promise;
    return Response.json({ ok: true });
  });
  const { wrapped } = wrap(handler, store, { onInFlight: "wait", waitTimeoutMs: 60 });
  const first = wrapped(request());
  await store.reached("begin", 1);
  const waiter = await wrapped(request());
  assert.equal(waiter.status, 409);
  assert.equal(await errorCode(waiter), "REQUEST_IN_PROGRESS");
  assert.ok(Number(waiter.headers.get("retry-after")) >= 1);
  assert.ok(store.calls.begin > 2, "the waiter polled before giving up");
  release.resolve();
  await first;
  assert.equal(state.runs, 1);
});

// ---------------------------------------------------------------------------------------------------------
// Leases

Deno.test("middleware: an abandoned lease is taken over; the stale worker's late result is refused", async () => {
  const clock = manualClock();
  const store = new MemoryStore({ now: clock.now });
  const release = Promise.withResolvers<void>();
  const started = Promise.withResolvers<void>();
  const { handler, state } = countingHandler(async (run) => {
    if (run === 1) {
      started.resolve();
      await release.promise;
    }
    return Response.json({ worker: run === 1 ? "stale" : "new" });
  });
  const { wrapped, logs } = wrap(handler, store, { lockTimeoutSeconds: 1, renewLease: false });
  const stale = wrapped(request());
  await started.promise;
  clock.advance(1500); // the first worker's lease runs out

  const takeover = await wrapped(request());
  assert.deepEqual(await takeover.json(), { worker: "new" });
  release.resolve();
  const late = await stale;
  assert.deepEqual(
    await late.json(),
    { worker: "stale" },
    "the stale worker's own client still gets its answer",
  );
  assert.equal(wrapped.metrics.leaseLost, 1);
  assert.equal(logs.warn.length, 1);

  const replay = await wrapped(request());
  assert.equal(replay.headers.get("x-idempotency-replay"), "true");
  assert.deepEqual(await replay.json(), { worker: "new" }, "the late result did not overwrite the new one");
  assert.equal(state.runs, 2);
});

Deno.test("middleware: renewLease keeps a slow handler's lease, and stops when it is done", async () => {
  const store = new SpyStore(new MemoryStore());
  let duplicate: Response | undefined;
  const { handler, state } = countingHandler(async () => {
    // Three renewals at 0.5 s intervals: the 1 s lease would have run out without them.
    await store.reached("extendLease", 3);
    duplicate = await wrapped(request());
    return Response.json({ slow: true });
  });
  const { wrapped } = wrap(handler, store, { lockTimeoutSeconds: 1, renewLease: true });
  const first = await wrapped(request());
  assert.equal(first.status, 200);
  assert.equal(duplicate?.status, 409, "the renewed lease was still held");
  assert.equal(state.runs, 1);
  assert.equal(wrapped.metrics.leaseLost, 0);

  const renewals = store.calls.extendLease;
  await sleep(700);
  assert.equal(store.calls.extendLease, renewals, "no renewal after the handler finished");
  assert.equal((await wrapped(request())).headers.get("x-idempotency-replay"), "true");
});

// ---------------------------------------------------------------------------------------------------------
// Store failures

Deno.test("middleware: fail-closed → 503 STORE_UNAVAILABLE with Retry-After; the handler does not run", async () => {
  const { handler, state } = countingHandler();
  const { wrapped, logs } = wrap(handler, new FailingStore());
  const response = await wrapped(request());
  assert.equal(response.status, 503);
  assert.equal(await errorCode(response), "STORE_UNAVAILABLE");
  assert.ok(Number(response.headers.get("retry-after")) >= 1);
  assert.equal(state.runs, 0);
  assert.equal(wrapped.metrics.storeErrors, 1);
  assert.equal(logs.error.length, 1);
});

Deno.test("middleware: fail-open runs the handler with the full body, logs and counts", async () => {
  const { handler, state } = countingHandler(async (_run, req) => Response.json(await req.json()));
  const { wrapped, logs } = wrap(handler, new FailingStore(), { onStoreError: "fail-open" });
  const response = await wrapped(request({ body: { amount: 7 } }));
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), { amount: 7 });
  assert.equal(state.runs, 1);
  assert.equal(wrapped.metrics.failOpen, 1);
  assert.equal(wrapped.metrics.storeErrors, 1);
  assert.equal(logs.error.length, 1);
});

Deno.test("middleware: a store failure after the handler ran still answers the handler's response", async () => {
  const { handler, state } = countingHandler();
  const { wrapped, logs } = wrap(handler, new FailingStore(["complete"]));
  const response = await wrapped(request());
  assert.equal(response.status, 201);
  assert.equal(response.headers.get("x-idempotency-replay"), "false");
  assert.equal(state.runs, 1);
  assert.equal(wrapped.metrics.storeErrors, 1);
  assert.equal(logs.error.length, 1);
});

// ---------------------------------------------------------------------------------------------------------
// Stored bodies

Deno.test("middleware: a body past maxStoredBodyBytes is not stored; the replay says so, the work ran once", async () => {
  const payload = crypto.getRandomValues(new Uint8Array(4096)); // random bytes: gzip cannot shrink them
  const { handler, state } = countingHandler(() =>
    new Response(payload.slice(), { status: 200, headers: { "content-type": "application/octet-stream" } })
  );
  const { wrapped } = wrap(handler, new MemoryStore(), { maxStoredBodyBytes: 1024 });
  const first = await wrapped(request());
  assert.deepEqual(new Uint8Array(await first.arrayBuffer()), payload);
  assert.equal(first.headers.get("x-idempotency-body-omitted"), null);
  const replay = await wrapped(request());
  assert.equal(replay.status, 200);
  assert.equal(replay.headers.get("x-idempotency-replay"), "true");
  assert.equal(replay.headers.get("x-idempotency-body-omitted"), "true");
  assert.equal(replay.headers.get("content-type"), "application/octet-stream");
  assert.equal((await replay.arrayBuffer()).byteLength, 0);
  assert.equal(state.runs, 1);
});

Deno.test("middleware: a large body is stored gzipped and replayed byte for byte", async () => {
  const rows = Array.from({ length: 2000 }, (_, i) => ({ id: i, label: `row ${i}`, tags: ["a", "b"] }));
  const { handler } = countingHandler(() => Response.json({ rows }));
  const store = new SpyStore(new MemoryStore());
  const { wrapped } = wrap(handler, store);
  const firstBody = await (await wrapped(request())).text();
  assert.equal(store.completed.length, 1);
  assert.equal(store.completed[0]!.encoding, "gzip");
  assert.ok(store.completed[0]!.body.byteLength < firstBody.length / 4);
  const replay = await wrapped(request());
  assert.equal(replay.headers.get("x-idempotency-replay"), "true");
  assert.equal(await replay.text(), firstBody);
});

Deno.test("middleware: a small body is stored as is", async () => {
  const store = new SpyStore(new MemoryStore());
  const { wrapped } = wrap(countingHandler().handler, store);
  await wrapped(request());
  assert.equal(store.completed[0]!.encoding, "identity");
  assert.equal(new TextDecoder().decode(store.completed[0]!.body), '{"run":1}');
});

// ---------------------------------------------------------------------------------------------------------
// The handler's request

Deno.test("middleware: a handler that mutates its request cannot change the key it completes", async () => {
  const store = new MemoryStore();
  const seen: unknown[] = [];
  const { handler, state } = countingHandler(async (_run, req) => {
    seen.push(await req.json()); // the handler can still read the body we already read
    req.headers.set("idempotency-key", "hijacked-key");
    req.headers.set("x-user", "user-2");
    return Response.json({ ok: true });
  });
  const { wrapped } = wrap(handler, store);
  await wrapped(request({ body: { amount: 5 } }));
  assert.deepEqual(seen, [{ amount: 5 }]);
  assert.equal((await store.status({ key: "key-123", userId: "user-1" }))?.status, "completed");
  assert.equal(await store.status({ key: "hijacked-key", userId: "user-1" }), null);
  assert.equal(await store.status({ key: "hijacked-key", userId: "user-2" }), null);
  assert.equal((await wrapped(request({ body: { amount: 5 } }))).headers.get("x-idempotency-replay"), "true");
  assert.equal(state.runs, 1);
});

// ---------------------------------------------------------------------------------------------------------
// Users

Deno.test("middleware: anonymous reject → 401 AUTH_REQUIRED for keyed calls; unkeyed calls still run", async () => {
  const { handler, state } = countingHandler();
  const { wrapped } = wrap(handler, new MemoryStore(), { anonymous: "reject" });
  const keyed = await wrapped(request({ user: null }));
  assert.equal(keyed.status, 401);
  assert.equal(await errorCode(keyed), "AUTH_REQUIRED");
  assert.equal(state.runs, 0);
  assert.equal((await wrapped(request({ user: null, key: null }))).status, 201);
  assert.equal(state.runs, 1);
});

Deno.test("middleware: anonymous defaults to reject", async () => {
  const { wrapped } = wrap(countingHandler().handler, new MemoryStore());
  assert.equal((await wrapped(request({ user: null }))).status, 401);
});

Deno.test("middleware: anonymous shared → calls without a user share one scope per key", async () => {
  const { handler, state } = countingHandler();
  const { wrapped } = wrap(handler, new MemoryStore(), { anonymous: "shared" });
  await wrapped(request({ user: null }));
  const second = await wrapped(request({ user: null }));
  assert.equal(second.headers.get("x-idempotency-replay"), "true");
  const signedIn = await wrapped(request({ user: "user-1" }));
  assert.equal(signedIn.headers.get("x-idempotency-replay"), "false", "a user never shares the null scope");
  assert.equal(state.runs, 2);
});

Deno.test("middleware: anonymous bypass → calls without a user run without idempotency", async () => {
  const { handler, state } = countingHandler();
  const { wrapped } = wrap(handler, new MemoryStore(), { anonymous: "bypass" });
  const first = await wrapped(request({ user: null }));
  await wrapped(request({ user: null }));
  assert.equal(first.headers.get("x-idempotency-replay"), null);
  assert.equal(state.runs, 2);
  assert.equal(wrapped.metrics.started, 0);
});

Deno.test("middleware: by default the service_role key shares the service scope; the anon key is refused", async () => {
  const secret = "middleware-secret-with-at-least-32-characters";
  const { handler, state } = countingHandler();
  const wrapped = withIdempotency(handler, {
    functionName: "test-fn",
    store: new MemoryStore(),
    jwtSecret: secret,
    logger: recordingLogger().logger,
  });
  const as = async (claims: Record<string, unknown>) =>
    await wrapped(
      request({ user: null, headers: { authorization: `Bearer ${await signHs256(claims, secret)}` } }),
    );
  assert.equal((await as({ role: "service_role" })).headers.get("x-idempotency-replay"), "false");
  assert.equal((await as({ role: "service_role" })).headers.get("x-idempotency-replay"), "true");
  const anon = await as({ role: "anon" });
  assert.equal(anon.status, 401);
  assert.equal(await errorCode(anon), "AUTH_REQUIRED");
  const user = await as({ role: "authenticated", sub: "0b9c7d2e-1111-4000-8000-000000000001" });
  assert.equal(user.headers.get("x-idempotency-replay"), "false", "a user never shares the service scope");
  assert.equal(state.runs, 2);
});

Deno.test("middleware: with anonymous shared, an anonymous call never replays the service's response", async () => {
  const secret = "middleware-secret-with-at-least-32-characters";
  const { handler, state } = countingHandler((run) => Response.json({ secret: `service-result-${run}` }));
  const wrapped = withIdempotency(handler, {
    functionName: "test-fn",
    store: new MemoryStore(),
    jwtSecret: secret,
    anonymous: "shared",
    logger: recordingLogger().logger,
  });
  const as = async (claims: Record<string, unknown>) =>
    await wrapped(
      request({ user: null, headers: { authorization: `Bearer ${await signHs256(claims, secret)}` } }),
    );
  assert.equal((await as({ role: "service_role" })).status, 200);
  const anon = await as({ role: "anon" });
  assert.equal(anon.status, 422);
  const body = await anon.text();
  assert.ok(!body.includes("service-result"), body);
  assert.equal(state.runs, 1);
});

Deno.test("middleware: the query string is part of the fingerprint", async () => {
  const { handler, state } = countingHandler();
  const { wrapped } = wrap(handler, new MemoryStore());
  assert.equal((await wrapped(request({ path: "?amount=1" }))).status, 201);
  const other = await wrapped(request({ path: "?amount=2" }));
  assert.equal(other.status, 422);
  assert.equal(await errorCode(other), "KEY_REUSED_WITH_DIFFERENT_REQUEST");
  assert.equal(state.runs, 1);
});

Deno.test("middleware: two users with the same key run twice and never see each other's response", async () => {
  const { handler, state } = countingHandler((_run, req) =>
    Response.json({ for: req.headers.get("x-user") })
  );
  const { wrapped } = wrap(handler, new MemoryStore());
  await wrapped(request({ user: "alice" }));
  await wrapped(request({ user: "bob" }));
  const aliceReplay = await wrapped(request({ user: "alice" }));
  const bobReplay = await wrapped(request({ user: "bob" }));
  assert.equal(state.runs, 2);
  assert.deepEqual(await aliceReplay.json(), { for: "alice" });
  assert.deepEqual(await bobReplay.json(), { for: "bob" });
  assert.equal(bobReplay.headers.get("x-idempotency-replay"), "true");
});

Deno.test("middleware: by default the user is the verified JWT sub", async () => {
  const secret = "middleware-test-secret-at-least-32-chars";
  const { handler, state } = countingHandler();
  const { wrapped } = wrap(handler, new MemoryStore(), { getUserId: undefined, jwtSecret: secret });
  const auth = (token: string) => ({ authorization: `Bearer ${token}` });
  const alice = auth(await signHs256({ sub: "alice" }, secret));
  await wrapped(request({ user: null, headers: alice }));
  const replay = await wrapped(request({ user: null, headers: alice }));
  assert.equal(replay.headers.get("x-idempotency-replay"), "true");

  const forged = auth(await signHs256({ sub: "alice" }, "a-different-secret-of-at-least-32-chars"));
  const rejected = await wrapped(request({ user: null, headers: forged }));
  assert.equal(rejected.status, 401);
  assert.equal(await errorCode(rejected), "AUTH_REQUIRED");
  assert.equal((await wrapped(request({ user: null, key: null, headers: forged }))).status, 201);
  assert.equal(state.runs, 2, "an unkeyed call is not the wrapper's to authenticate");
});

// ---------------------------------------------------------------------------------------------------------
// CORS

Deno.test("middleware: OPTIONS is answered 204 with CORS headers, without running the handler", async () => {
  const { handler, state } = countingHandler();
  const { wrapped } = wrap(handler, new MemoryStore());
  const preflight = await wrapped(
    new Request(URL_BASE, { method: "OPTIONS", headers: { "idempotency-key": "k-1" } }),
  );
  assert.equal(preflight.status, 204);
  assert.equal(preflight.headers.get("access-control-allow-origin"), "*");
  assert.match(preflight.headers.get("access-control-allow-headers") ?? "", /idempotency-key/);
  assert.equal(state.runs, 0);
});

Deno.test("middleware: every response exposes the replay headers to browsers", async () => {
  const { wrapped } = wrap(countingHandler().handler, new MemoryStore());
  const responses = [
    await wrapped(request()),
    await wrapped(request()),
    await wrapped(request({ key: "x" })),
    await wrapped(request({ key: null })),
  ];
  for (const response of responses) {
    assert.equal(response.headers.get("access-control-allow-origin"), "*");
    assert.match(response.headers.get("access-control-expose-headers") ?? "", /x-idempotency-replay/);
    await response.body?.cancel();
  }
});

Deno.test("middleware: CORS reaches a response with immutable headers, and a handler's own policy wins", async () => {
  // Response.redirect's headers are immutable (as a passed-through fetch answer's): they are copied
  const redirect: Handler = () => Response.redirect("https://example.com/done", 303);
  const passed = await wrap(redirect, new MemoryStore()).wrapped(request({ key: null }));
  assert.equal(passed.status, 303);
  assert.equal(passed.headers.get("location"), "https://example.com/done");
  assert.equal(passed.headers.get("access-control-allow-origin"), "*");
  const own: Handler = () =>
    new Response("ok", { status: 201, headers: { "access-control-allow-origin": "https://app.example" } });
  const { wrapped } = wrap(own, new MemoryStore());
  for (const key of [null, "k-own-1", "k-own-1"]) { // unprotected, first, replay
    const response = await wrapped(request({ key }));
    assert.equal(response.headers.get("access-control-allow-origin"), "https://app.example");
    assert.match(response.headers.get("access-control-expose-headers") ?? "", /x-idempotency-replay/);
    assert.equal(await response.text(), "ok");
  }
});

Deno.test("middleware: cors: false leaves OPTIONS and headers to the handler", async () => {
  const { handler, state } = countingHandler(() => new Response("handled", { status: 200 }));
  const { wrapped } = wrap(handler, new MemoryStore(), { cors: false });
  const response = await wrapped(new Request(URL_BASE, { method: "OPTIONS" }));
  assert.equal(await response.text(), "handled");
  assert.equal(response.headers.get("access-control-allow-origin"), null);
  assert.equal(state.runs, 1);
});

// ---------------------------------------------------------------------------------------------------------
// Options

Deno.test("middleware: invalid options fail when wrapping, not on the first request", () => {
  const handler = countingHandler().handler;
  assert.throws(() => withIdempotency(handler, { functionName: "has space" }), TypeError);
  assert.throws(() => withIdempotency(handler, { functionName: "f", ttlSeconds: 0 }), RangeError);
});

Deno.test("middleware: the wrapped handler fits Deno.serve", () => {
  const wrapped: IdempotentHandler = wrap(countingHandler().handler, new MemoryStore()).wrapped;
  const serveHandler: Deno.ServeHandler = wrapped;
  assert.equal(typeof serveHandler, "function");
});

Deno.test("middleware: a replay whose response dictionary is no longer listed answers 500, logs its id, runs nothing", async () => {
  const store = new MemoryStore();
  const errors: string[] = [];
  const logger: IdempotencyLogger = {
    error: (...data) => errors.push(data.map(String).join(" ")),
    warn: () => {},
  };
  let runs = 0;
  const answer = JSON.stringify({ items: Array.from({ length: 30 }, (_, i) => ({ name: `n${i}`, v: i })) });
  const wrap = (responseDictionaries: string[]) =>
    withIdempotency(() => {
      runs++;
      return new Response(answer, { status: 201 });
    }, { functionName: "dict-fn", store, anonymous: "shared", responseDictionaries, logger });
  const request = () =>
    new Request(URL_BASE, { method: "POST", headers: { "idempotency-key": "dict-key-0001" }, body: "{}" });
  const dictionary = '{"items":[{"name":"","v":0}]}';

  assert.equal((await wrap([dictionary])(request())).status, 201);
  const lost = await wrap([])(request());
  assert.equal(lost.status, 500);
  assert.equal((await lost.json()).error.code, "INTERNAL_ERROR");
  assert.match(errors.join("\n"), /dictionary [0-9a-f]{8}, which is not in responseDictionaries/);
  // listed again (after a new one), the same key replays the first answer
  const back = await wrap(['{"v":2}', dictionary])(request());
  assert.equal(back.headers.get("x-idempotency-replay"), "true");
  assert.equal(await back.text(), answer);
  assert.equal(runs, 1, "the work ran once");
});
