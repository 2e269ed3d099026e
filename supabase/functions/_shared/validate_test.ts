import assert from "node:assert/strict";
import {
  optionalStringList,
  optionalUuid,
  parseJsonObject,
  rejectUnknownFields,
  requireInteger,
  requireNumber,
  requireString,
} from "./validate.ts";
import { assertInvalid } from "./validate_testing.ts";

Deno.test("parseJsonObject: objects only, bad JSON and other values name the body", () => {
  assert.deepEqual(parseJsonObject('{"a":1}'), { a: 1 });
  assertInvalid(() => parseJsonObject(""), "body");
  assertInvalid(() => parseJsonObject("{not json"), "body");
  assertInvalid(() => parseJsonObject("[1,2]"), "body");
  assertInvalid(() => parseJsonObject("null"), "body");
  assertInvalid(() => parseJsonObject('"text"'), "body");
});

Deno.test("requireString: missing, wrong type, blank, too long, pattern", () => {
  assert.equal(requireString({ a: "x" }, "a"), "x");
  assertInvalid(() => requireString({}, "a"), "a");
  assertInvalid(() => requireString({ a: 3 }, "a"), "a");
  assertInvalid(() => requireString({ a: "   " }, "a"), "a");
  assertInvalid(() => requireString({ a: "abcd" }, "a", { max: 3 }), "a");
  assertInvalid(
    () => requireString({ a: "a b" }, "a", { pattern: { regex: /^\w+$/, description: "a word" } }),
    "a",
  );
});

Deno.test("requireNumber and requireInteger: bounds, finiteness, whole numbers, dotted paths", () => {
  assert.equal(requireNumber({ n: 0.5 }, "n", { greaterThan: 0 }), 0.5);
  assertInvalid(() => requireNumber({ n: 0 }, "n", { greaterThan: 0 }), "n");
  assertInvalid(() => requireNumber({ n: "1" }, "n"), "n");
  assertInvalid(() => requireNumber({ n: 11 }, "n", { max: 10 }), "n");
  assert.equal(requireInteger({ n: 7 }, "n", { min: 1, max: 10 }), 7);
  assertInvalid(() => requireInteger({ n: 1.5 }, "n"), "n");
  assertInvalid(() => requireInteger({ n: 0 }, "n", { min: 1 }, "hp.n"), "hp.n");
});

Deno.test("optionalStringList: fallback, choices, duplicates and bad items name the item", () => {
  assert.deepEqual(optionalStringList({}, "l", ["a"]), ["a"]);
  assert.deepEqual(optionalStringList({ l: ["b", "a"] }, "l", [], { choices: ["a", "b"] }), ["b", "a"]);
  assertInvalid(() => optionalStringList({ l: "a" }, "l", []), "l");
  assertInvalid(() => optionalStringList({ l: [] }, "l", []), "l");
  assertInvalid(() => optionalStringList({ l: ["a", 1] }, "l", []), "l[1]");
  assertInvalid(() => optionalStringList({ l: ["a", "a"] }, "l", []), "l[1]");
  assertInvalid(() => optionalStringList({ l: ["c"] }, "l", [], { choices: ["a"] }), "l[0]");
});

Deno.test("optionalUuid and rejectUnknownFields", () => {
  assert.equal(optionalUuid({}, "id"), null);
  assert.equal(
    optionalUuid({ id: "6F1B3C2E-0000-4000-8000-00000000ABCD" }, "id"),
    "6f1b3c2e-0000-4000-8000-00000000abcd",
  );
  assertInvalid(() => optionalUuid({ id: "nope" }, "id"), "id");
  rejectUnknownFields({ a: 1 }, ["a", "b"]);
  assertInvalid(() => rejectUnknownFields({ a: 1, zz: 2 }, ["a"]), "zz");
  assertInvalid(() => rejectUnknownFields({ zz: 2 }, ["a"], "hp."), "hp.zz");
});
