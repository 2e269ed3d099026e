import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { IdempotencyError } from "../errors.ts";
import {
  generateActionKey,
  generateIdempotencyKey,
  hashParams,
  metaFromKey,
  paramsAreEquivalent,
  parseIdempotencyKey,
  toolKey,
} from "./keys.ts";

const invalid = (e: unknown) =>
  e instanceof IdempotencyError && e.code === "INVALID_ACTION" && e.status === 400;

Deno.test("action key: signalId:actionType:target:first 16 hex of SHA-256 over canonical JSON", () => {
  const key = generateActionKey({
    signalId: "signal-123",
    actionType: "create_task",
    target: "trello",
    params: { name: "Review", id: 1 },
  });
  const expected = createHash("sha256").update('{"id":1,"name":"Review"}').digest("hex").slice(0, 16);
  assert.equal(key, `signal-123:create_task:trello:${expected}`);
  assert.equal(
    generateIdempotencyKey({
      signalId: "signal-123",
      action: "create_task",
      target: "trello",
      params: { id: 1, name: "Review" },
    }),
    key,
    "the seeds' name and field `action`; key order does not matter",
  );
  assert.notEqual(
    generateActionKey({
      signalId: "signal-123",
      actionType: "create_task",
      target: "trello",
      params: { id: 2, name: "Review" },
    }),
    key,
  );
  assert.equal(hashParams(undefined), hashParams({}));
});

Deno.test("parseIdempotencyKey round-trips any part, ':' and '%' included", () => {
  const parts = { signalId: "training_datasets:INSERT:42", actionType: "a%b", target: "t", params: [1] };
  const key = generateActionKey(parts);
  assert.equal(key.split(":").length, 4);
  assert.deepEqual(parseIdempotencyKey(key), {
    signalId: "training_datasets:INSERT:42",
    actionType: "a%b",
    target: "t",
    paramsHash: hashParams([1]),
  });
  assert.deepEqual(metaFromKey(key), parseIdempotencyKey(key));
});

Deno.test("parseIdempotencyKey: a clear INVALID_ACTION error for malformed keys", () => {
  for (
    const bad of [
      "",
      "a:b:c",
      "a:b:c:d:e",
      ":b:c:0123456789abcdef",
      "a:b:c:0123",
      "a:b:c:0123456789ABCDEF",
      "a%zz:b:c:0123456789abcdef",
    ]
  ) {
    assert.throws(() => parseIdempotencyKey(bad), invalid, bad);
  }
});

Deno.test("paramsAreEquivalent ignores key order and whitespace, not values", () => {
  assert.equal(paramsAreEquivalent({ name: "Task", id: 123 }, { id: 123, name: "Task" }), true);
  assert.equal(
    paramsAreEquivalent(JSON.parse('{ "a" : [1, {"c":1,"b":2}] }'), { a: [1, { b: 2, c: 1 }] }),
    true,
  );
  assert.equal(paramsAreEquivalent({ a: [1, 2] }, { a: [2, 1] }), false);
  assert.equal(paramsAreEquivalent({ a: 1 }, { a: "1" }), false);
});

Deno.test("tool keys: tool name plus input; explicit metadata from the key", () => {
  const key = toolKey("fs_write", { path: "a", content: "x" });
  assert.equal(key, toolKey("fs_write", { content: "x", path: "a" }));
  assert.match(key, /^tool:fs_write:[0-9a-f]{16}$/);
  assert.deepEqual(metaFromKey(key), {
    actionType: "fs_write",
    target: "tool",
    signalId: null,
    paramsHash: key.slice(-16),
  });
  assert.deepEqual(metaFromKey("invoice-42"), {
    actionType: null,
    target: null,
    signalId: null,
    paramsHash: null,
  });
});

Deno.test("key parts are checked: empty parts, control characters, over 512 characters", () => {
  assert.throws(() => generateActionKey({ signalId: "", actionType: "a", target: "t" }), invalid);
  assert.throws(() => generateActionKey({ signalId: "s", target: "t" }), invalid);
  assert.throws(() => generateActionKey({ signalId: "s\n", actionType: "a", target: "t" }), invalid);
  assert.throws(
    () => generateActionKey({ signalId: "s".repeat(600), actionType: "a", target: "t" }),
    invalid,
  );
  assert.throws(() => toolKey("", {}), invalid);
});
