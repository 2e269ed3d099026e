import assert from "node:assert/strict";
import { assertInvalid } from "../_shared/validate_testing.ts";
import { sentences, sha256Hex, statistics, summarize, topKeywords, wordCount } from "./analyze.ts";
import { runOperations } from "./process.ts";
import { parseProcessDocumentRequest } from "./validate.ts";

const body = (value: unknown) => JSON.stringify(value);

Deno.test("process-document: a valid request gets defaults and operations in canonical order", () => {
  const input = parseProcessDocumentRequest(
    body({ title: "  Report ", content: "Hello.", operations: ["statistics", "summary"] }),
  );
  assert.deepEqual(input, {
    title: "Report",
    content: "Hello.",
    operations: ["summary", "statistics"],
    maxKeywords: 5,
  });
  assert.deepEqual(parseProcessDocumentRequest(body({ title: "T", content: "C" })).operations, [
    "summary",
    "keywords",
    "statistics",
  ]);
});

Deno.test("process-document: each bad field is named", () => {
  assertInvalid(() => parseProcessDocumentRequest("{"), "body");
  assertInvalid(() => parseProcessDocumentRequest(body({ content: "C" })), "title");
  assertInvalid(() => parseProcessDocumentRequest(body({ title: 5, content: "C" })), "title");
  assertInvalid(() => parseProcessDocumentRequest(body({ title: "T" })), "content");
  assertInvalid(
    () => parseProcessDocumentRequest(body({ title: "T", content: "x".repeat(100_001) })),
    "content",
  );
  assertInvalid(
    () => parseProcessDocumentRequest(body({ title: "T", content: "C", operations: ["translate"] })),
    "operations[0]",
  );
  assertInvalid(
    () => parseProcessDocumentRequest(body({ title: "T", content: "C", max_keywords: 0 })),
    "max_keywords",
  );
  assertInvalid(() => parseProcessDocumentRequest(body({ title: "T", content: "C", extra: 1 })), "extra");
});

Deno.test("analyze: words, sentences, summary, keywords, statistics", async () => {
  const text = "Revenue grew fast. Costs fell!  Revenue matters; revenue wins? The end";
  assert.equal(wordCount(text), 11);
  assert.equal(wordCount("   "), 0);
  assert.deepEqual(sentences(text), [
    "Revenue grew fast.",
    "Costs fell!",
    "Revenue matters; revenue wins?",
    "The end",
  ]);
  assert.equal(summarize(text), "Revenue grew fast.");
  assert.equal(summarize("one two three four", 10), "one two…");
  assert.deepEqual(topKeywords(text, 2), [{ word: "revenue", count: 3 }, { word: "grew", count: 1 }]);
  assert.deepEqual(statistics("ab cd."), { characters: 6, words: 2, sentences: 1, avgWordLength: 2 });
  assert.equal(
    await sha256Hex("abc"),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
});

Deno.test("process-document: only the asked operations run", () => {
  const result = runOperations({
    title: "T",
    content: "Alpha beta. Gamma.",
    operations: ["summary"],
    maxKeywords: 5,
  });
  assert.deepEqual(result, { summary: "Alpha beta." });
});
