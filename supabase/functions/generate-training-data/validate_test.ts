import assert from "node:assert/strict";
import { assertInvalid } from "../_shared/validate_testing.ts";
import { datasetStats, generateExamples, seededRandom } from "./generate.ts";
import { DEFAULT_TEMPLATES, parseGenerateTrainingDataRequest } from "./validate.ts";

const parse = (value: unknown) => parseGenerateTrainingDataRequest(JSON.stringify(value));

Deno.test("generate-training-data: a valid request gets its defaults", () => {
  assert.deepEqual(parse({ name: " Reviews ", task: "classification", count: 10 }), {
    name: "Reviews",
    task: "classification",
    count: 10,
    seed: 1,
    template: DEFAULT_TEMPLATES.classification,
    labels: ["positive", "negative", "neutral"],
  });
  assert.deepEqual(parse({ name: "QA", task: "question_answering", count: 1, seed: 9 }).labels, []);
});

Deno.test("generate-training-data: each bad field is named", () => {
  assertInvalid(() => parseGenerateTrainingDataRequest("[]"), "body");
  assertInvalid(() => parse({ task: "classification", count: 1 }), "name");
  assertInvalid(() => parse({ name: "n", task: "translation", count: 1 }), "task");
  assertInvalid(() => parse({ name: "n", task: "summarization" }), "count");
  assertInvalid(() => parse({ name: "n", task: "summarization", count: 0 }), "count");
  assertInvalid(() => parse({ name: "n", task: "summarization", count: 1001 }), "count");
  assertInvalid(() => parse({ name: "n", task: "summarization", count: 1, seed: -1 }), "seed");
  assertInvalid(
    () => parse({ name: "n", task: "summarization", count: 1, template: "no placeholder" }),
    "template",
  );
  assertInvalid(() => parse({ name: "n", task: "summarization", count: 1, labels: ["a", "b"] }), "labels");
  assertInvalid(() => parse({ name: "n", task: "classification", count: 1, labels: ["only"] }), "labels");
});

Deno.test("generate-training-data: examples are a pure function of the input", () => {
  const input = parse({ name: "n", task: "classification", count: 50, seed: 7, labels: ["spam", "ham"] });
  const a = generateExamples(input);
  assert.deepEqual(a, generateExamples(input));
  assert.equal(a.length, 50);
  assert.ok(a.every((e) => e.label === "spam" || e.label === "ham"));
  assert.ok(a.every((e) => e.prompt.startsWith("Classify the sentiment of this review: ")));
  assert.notDeepEqual(a, generateExamples({ ...input, seed: 8 }));
  const stats = datasetStats(a);
  assert.equal(stats.example_count, 50);
  assert.equal((stats.label_counts.spam ?? 0) + (stats.label_counts.ham ?? 0), 50);
  assert.ok(stats.avg_prompt_chars > stats.avg_completion_chars);
});

Deno.test("generate-training-data: templates fill every placeholder", () => {
  const input = parse({
    name: "n",
    task: "question_answering",
    count: 2,
    template: "#{index} {subject}/{aspect}",
  });
  const [first, second] = generateExamples(input);
  assert.match(first!.prompt, /^#1 the [a-z ]+\/[a-z]+$/);
  assert.match(second!.prompt, /^#2 /);
  assert.match(first!.completion, /^The [a-z]+ of the [a-z ]+ is rated \d+ out of 10\.$/);
});

Deno.test("seededRandom: same seed, same sequence, within [0, 1)", () => {
  const a = seededRandom(42), b = seededRandom(42);
  const xs = Array.from({ length: 100 }, () => a());
  assert.deepEqual(xs, Array.from({ length: 100 }, () => b()));
  assert.ok(xs.every((x) => x >= 0 && x < 1));
});
