import assert from "node:assert/strict";
import { IdempotencyError } from "./errors.ts";
import { generateIdempotencyKey, getIdempotencyKey, isValidIdempotencyKey } from "./key.ts";

function requestWith(headers: Record<string, string>): Request {
  return new Request("http://localhost/fn", { method: "POST", headers });
}

function assertCode(fn: () => unknown, code: string, status: number) {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof IdempotencyError);
    assert.equal(error.code, code);
    assert.equal(error.status, status);
    return true;
  });
}

Deno.test("key: no header gives null", () => {
  assert.equal(getIdempotencyKey(requestWith({})), null);
});

Deno.test("key: Idempotency-Key and X-Idempotency-Key are both read", () => {
  assert.equal(getIdempotencyKey(requestWith({ "Idempotency-Key": "order-1" })), "order-1");
  assert.equal(getIdempotencyKey(requestWith({ "X-Idempotency-Key": "order_2" })), "order_2");
});

Deno.test("key: a quoted Structured-Field string is the same key as the bare value", () => {
  assert.equal(getIdempotencyKey(requestWith({ "Idempotency-Key": '"abc-123"' })), "abc-123");
  assert.equal(getIdempotencyKey(requestWith({ "Idempotency-Key": '  "abc-123"  ' })), "abc-123");
  assert.equal(
    getIdempotencyKey(requestWith({ "Idempotency-Key": '"abc-123"', "X-Idempotency-Key": "abc-123" })),
    "abc-123",
  );
});

Deno.test("key: escapes are decoded, so an escaped character is judged as itself", () => {
  // `\a` is not an RFC 8941 escape; `\\` and `\"` are, but decode to characters a key may not hold.
  assertCode(() => getIdempotencyKey(requestWith({ "Idempotency-Key": '"ab\\c"' })), "INVALID_KEY", 400);
  assertCode(() => getIdempotencyKey(requestWith({ "Idempotency-Key": '"ab\\\\c"' })), "INVALID_KEY", 400);
  assertCode(() => getIdempotencyKey(requestWith({ "Idempotency-Key": '"ab\\"c"' })), "INVALID_KEY", 400);
});

Deno.test("key: malformed quoting is INVALID_KEY", () => {
  for (const value of ['"abc', '"abc"x', '"abc";a=1', '"ab"c"']) {
    assertCode(() => getIdempotencyKey(requestWith({ "Idempotency-Key": value })), "INVALID_KEY", 400);
  }
});

Deno.test("key: both headers with different keys is KEY_CONFLICT", () => {
  assertCode(
    () => getIdempotencyKey(requestWith({ "Idempotency-Key": "abc", "X-Idempotency-Key": "abd" })),
    "KEY_CONFLICT",
    400,
  );
});

Deno.test("key: lengths 3 and 256 pass, 2 and 257 are INVALID_KEY", () => {
  for (const length of [3, 256]) {
    const key = "k".repeat(length);
    assert.equal(getIdempotencyKey(requestWith({ "Idempotency-Key": key })), key);
    assert.equal(isValidIdempotencyKey(key), true);
  }
  for (const length of [0, 2, 257]) {
    const key = "k".repeat(length);
    assert.equal(isValidIdempotencyKey(key), false);
    if (length > 0) {
      assertCode(() => getIdempotencyKey(requestWith({ "Idempotency-Key": key })), "INVALID_KEY", 400);
    }
  }
});

Deno.test("key: characters outside [A-Za-z0-9_-] are INVALID_KEY", () => {
  for (const key of ["abc def", "abc.def", "abc/def", "abc,def", "clé-123", "abc:def", "a+b=c"]) {
    assert.equal(isValidIdempotencyKey(key), false, key);
    assertCode(() => getIdempotencyKey(requestWith({ "Idempotency-Key": key })), "INVALID_KEY", 400);
  }
  assert.equal(isValidIdempotencyKey("Az09_-"), true);
});

Deno.test("key: an empty header value is INVALID_KEY, not 'no key'", () => {
  const req = new Request("http://localhost/fn", { headers: [["Idempotency-Key", ""]] });
  assertCode(() => getIdempotencyKey(req), "INVALID_KEY", 400);
});

Deno.test("key: isValidIdempotencyKey rejects non-strings", () => {
  for (const value of [null, undefined, 12345, ["abc"], { key: "abc" }]) {
    assert.equal(isValidIdempotencyKey(value), false);
  }
});

Deno.test("key: generateIdempotencyKey gives distinct valid idem_<uuid> keys", () => {
  const a = generateIdempotencyKey();
  const b = generateIdempotencyKey();
  assert.match(a, /^idem_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.notEqual(a, b);
  assert.equal(isValidIdempotencyKey(a), true);
});
