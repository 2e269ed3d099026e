import assert from "node:assert/strict";
import { createClient } from "@supabase/supabase-js";
import {
  backoffMs,
  idempotentFetch,
  invokeIdempotent,
  isRetryableStatus,
  nextDelayMs,
  serverDelayMs,
} from "./mod.ts";

/** One scripted answer: a Response, a thrown error, or "hang" (never answers until aborted). */
type Step = Response | Error | "hang";

/** A fetch that answers from `steps` in order and records every request it got. */
function scriptedFetch(steps: Step[]) {
  const requests: Request[] = [];
  const fetchFn: typeof fetch = (input, init) => {
    const req = new Request(input, init);
    requests.push(req);
    const step = steps.shift() ?? new Error("no more scripted answers");
    if (step === "hang") {
      return new Promise((_, reject) => {
        init?.signal?.addEventListener("abort", () => reject(init.signal?.reason), { once: true });
      });
    }
    return step instanceof Error ? Promise.reject(step) : Promise.resolve(step);
  };
  return { fetchFn, requests, keys: () => requests.map((r) => r.headers.get("idempotency-key")) };
}

const ok = (replay: boolean) =>
  Response.json({ id: 1 }, { status: 201, headers: { "x-idempotency-replay": String(replay) } });
const failure = (status: number, code: string, headers: Record<string, string> = {}) =>
  Response.json({ error: { code, message: code } }, { status, headers });
const URL_ = "http://fn.test/functions/v1/process-document";
/** Fast pauses so the tests do not wait for real backoff. */
const fast = { baseDelayMs: 1, maxDelayMs: 2 };

Deno.test("a first answer: data, not a replay, one attempt, an idem_<uuid> key sent as Idempotency-Key", async () => {
  const { fetchFn, requests } = scriptedFetch([ok(false)]);
  const result = await idempotentFetch(URL_, { fetch: fetchFn, body: { title: "a" } });
  assert.deepEqual(result.data, { id: 1 });
  assert.equal(result.error, null);
  assert.equal(result.replayed, false);
  assert.equal(result.attempts, 1);
  assert.equal(result.status, 201);
  assert.match(result.key, /^idem_[0-9a-f-]{36}$/);
  assert.equal(requests[0]!.headers.get("idempotency-key"), result.key);
  assert.equal(requests[0]!.headers.get("content-type"), "application/json");
  assert.equal(requests[0]!.method, "POST");
  assert.equal(await requests[0]!.text(), '{"title":"a"}');
});

Deno.test("a network error is retried with the same key and body, and the replay is reported", async () => {
  const { fetchFn, requests, keys } = scriptedFetch([new TypeError("connection reset"), ok(true)]);
  const result = await idempotentFetch(URL_, {
    fetch: fetchFn,
    body: "same bytes",
    idempotencyKey: "k-1",
    ...fast,
  });
  assert.equal(result.attempts, 2);
  assert.equal(result.replayed, true);
  assert.deepEqual(keys(), ["k-1", "k-1"]);
  assert.deepEqual(await Promise.all(requests.map((r) => r.text())), ["same bytes", "same bytes"]);
});

Deno.test("retried: 409 REQUEST_IN_PROGRESS, 429, 503, 500, 502, 504, 408", async () => {
  for (const status of [409, 429, 503, 500, 502, 504, 408]) {
    const code = status === 409 ? "REQUEST_IN_PROGRESS" : "ANY";
    const { fetchFn, keys } = scriptedFetch([failure(status, code), ok(true)]);
    const result = await idempotentFetch(URL_, { fetch: fetchFn, ...fast });
    assert.equal(result.attempts, 2, `status ${status}`);
    assert.equal(result.error, null);
    assert.equal(new Set(keys()).size, 1);
  }
});

Deno.test("never retried: 400, 401, 403, 413, 422, a 409 that is not REQUEST_IN_PROGRESS, 404, 501", async () => {
  for (
    const [status, code] of [
      [400, "INVALID_KEY"],
      [401, "AUTH_REQUIRED"],
      [403, "FORBIDDEN"],
      [413, "TOO_BIG"],
      [
        422,
        "KEY_REUSED_WITH_DIFFERENT_REQUEST",
      ],
      [409, "CONFLICT"],
      [404, "NOT_FOUND"],
      [501, "NOT_IMPLEMENTED"],
    ] as const
  ) {
    const { fetchFn } = scriptedFetch([failure(status, code), ok(true)]);
    const result = await idempotentFetch(URL_, { fetch: fetchFn, ...fast });
    assert.equal(result.attempts, 1, `status ${status}`);
    assert.equal(result.data, null);
    assert.equal(result.error?.kind, "http");
    assert.equal(result.error?.status, status);
    assert.equal(result.error?.code, code);
  }
});

Deno.test("Retry-After is honoured: the next attempt waits at least what the server asked", async () => {
  const { fetchFn } = scriptedFetch([failure(503, "STORE_UNAVAILABLE", { "retry-after": "1" }), ok(false)]);
  const started = performance.now();
  const result = await idempotentFetch(URL_, { fetch: fetchFn, ...fast });
  assert.equal(result.attempts, 2);
  assert.ok(performance.now() - started >= 1000, "waited at least Retry-After: 1");
});

Deno.test("X-Idempotency-Retry-After-Ms wins over the whole seconds of Retry-After", async () => {
  const { fetchFn } = scriptedFetch([
    failure(409, "REQUEST_IN_PROGRESS", { "retry-after": "30", "x-idempotency-retry-after-ms": "40" }),
    ok(true),
  ]);
  const started = performance.now();
  const result = await idempotentFetch(URL_, { fetch: fetchFn, baseDelayMs: 1 });
  const elapsed = performance.now() - started;
  assert.equal(result.replayed, true);
  assert.ok(elapsed >= 40 && elapsed < 5000, `waited ${elapsed} ms: the 40 ms hint, not 30 s`);
});

Deno.test("the attempts are bounded: the last retryable failure is returned", async () => {
  const { fetchFn, requests } = scriptedFetch(
    Array.from({ length: 5 }, () => failure(500, "INTERNAL_ERROR")),
  );
  const result = await idempotentFetch(URL_, { fetch: fetchFn, maxAttempts: 3, ...fast });
  assert.equal(result.attempts, 3);
  assert.equal(requests.length, 3);
  assert.equal(result.error?.kind, "http");
  assert.equal(result.error?.status, 500);
  assert.equal(result.status, 500);
});

Deno.test("an attempt that hangs is aborted at attemptTimeoutMs and retried with the same key", async () => {
  const { fetchFn, keys } = scriptedFetch(["hang", ok(true)]);
  const result = await idempotentFetch(URL_, { fetch: fetchFn, attemptTimeoutMs: 50, ...fast });
  assert.equal(result.attempts, 2);
  assert.equal(result.replayed, true);
  assert.equal(new Set(keys()).size, 1);

  const all = scriptedFetch(["hang", "hang"]);
  const timedOut = await idempotentFetch(URL_, {
    fetch: all.fetchFn,
    attemptTimeoutMs: 30,
    maxAttempts: 2,
    ...fast,
  });
  assert.equal(timedOut.error?.kind, "timeout");
  assert.equal(timedOut.attempts, 2);
});

Deno.test("the caller's signal aborts a pause at once, and an attempt under way", async () => {
  const controller = new AbortController();
  const { fetchFn } = scriptedFetch([failure(503, "STORE_UNAVAILABLE", { "retry-after": "10" }), ok(false)]);
  setTimeout(() => controller.abort(), 30);
  const started = performance.now();
  const result = await idempotentFetch(URL_, { fetch: fetchFn, signal: controller.signal });
  assert.equal(result.error?.kind, "aborted");
  assert.equal(result.attempts, 1);
  assert.ok(performance.now() - started < 2000);

  const during = new AbortController();
  const hanging = scriptedFetch(["hang"]);
  setTimeout(() => during.abort(), 20);
  const cut = await idempotentFetch(URL_, { fetch: hanging.fetchFn, signal: during.signal });
  assert.equal(cut.error?.kind, "aborted");
  assert.equal(cut.attempts, 1);
});

Deno.test("the deadline: no pause is taken that would end past it", async () => {
  const { fetchFn } = scriptedFetch([failure(503, "STORE_UNAVAILABLE", { "retry-after": "5" }), ok(false)]);
  const started = performance.now();
  const result = await idempotentFetch(URL_, { fetch: fetchFn, deadlineMs: 500 });
  assert.equal(result.error?.kind, "deadline");
  assert.equal(result.error?.status, 503);
  assert.equal(result.error?.code, "STORE_UNAVAILABLE");
  assert.equal(result.attempts, 1);
  assert.ok(performance.now() - started < 400, "gave up without sleeping");
});

Deno.test("invalid options are refused", async () => {
  await assert.rejects(() => idempotentFetch(URL_, { maxAttempts: 0 }), RangeError);
  await assert.rejects(() => idempotentFetch(URL_, { deadlineMs: Number.NaN }), RangeError);
});

Deno.test("policy: full jitter under a doubling cap, capped at maxDelayMs", () => {
  assert.equal(backoffMs(1, 100, 1000, () => 0.999), 99);
  assert.equal(backoffMs(2, 100, 1000, () => 0.999), 199);
  assert.equal(backoffMs(4, 100, 1000, () => 0.999), 799);
  assert.equal(backoffMs(10, 100, 1000, () => 0.999), 999);
  assert.equal(backoffMs(3, 100, 1000, () => 0), 0);
  // a server hint is kept, with a small jitter on top (at most a quarter of it, at most baseMs)
  assert.equal(nextDelayMs(1, 60, 250, 1000, () => 0), 60);
  assert.equal(nextDelayMs(1, 60, 250, 1000, () => 0.999), 74);
  assert.equal(nextDelayMs(1, 4000, 250, 1000, () => 0.999), 4249);
  assert.equal(isRetryableStatus(409, null), false);
  assert.equal(isRetryableStatus(409, "REQUEST_IN_PROGRESS"), true);
});

Deno.test("policy: server delays from the ms header, Retry-After seconds or an HTTP date", () => {
  const now = Date.parse("2026-11-30T12:00:00Z");
  assert.equal(serverDelayMs(new Headers({ "retry-after": "3" }), now), 3000);
  assert.equal(serverDelayMs(new Headers({ "retry-after": "Mon, 30 Nov 2026 12:00:02 GMT" }), now), 2000);
  assert.equal(serverDelayMs(new Headers({ "retry-after": "Mon, 30 Nov 2026 11:00:00 GMT" }), now), 0);
  assert.equal(
    serverDelayMs(new Headers({ "retry-after": "1", "x-idempotency-retry-after-ms": "75" }), now),
    75,
  );
  assert.equal(serverDelayMs(new Headers({ "retry-after": "soon" }), now), null);
  assert.equal(serverDelayMs(new Headers(), now), null);
});

Deno.test("invokeIdempotent wraps supabase-js functions.invoke: HTTP errors, network errors, replay", async () => {
  const { fetchFn, requests, keys } = scriptedFetch([
    new TypeError("network down"),
    failure(409, "REQUEST_IN_PROGRESS", { "x-idempotency-retry-after-ms": "5" }),
    ok(true),
    failure(422, "KEY_REUSED_WITH_DIFFERENT_REQUEST"),
  ]);
  const supabase = createClient("http://project.test", "anon-key", { global: { fetch: fetchFn } });
  const result = await invokeIdempotent<{ id: number }>(supabase, "process-document", {
    body: { title: "a" },
    ...fast,
  });
  assert.deepEqual(result.data, { id: 1 });
  assert.equal(result.replayed, true);
  assert.equal(result.attempts, 3);
  assert.equal(new Set(keys()).size, 1);
  assert.equal(requests[0]!.url, "http://project.test/functions/v1/process-document");
  assert.equal(await requests[2]!.text(), '{"title":"a"}');

  const refused = await invokeIdempotent(supabase, "process-document", { body: { title: "b" }, ...fast });
  assert.equal(refused.attempts, 1);
  assert.equal(refused.error?.kind, "http");
  assert.equal(refused.error?.code, "KEY_REUSED_WITH_DIFFERENT_REQUEST");
});
