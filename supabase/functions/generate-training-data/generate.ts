/** The pure, deterministic generator of synthetic training examples and their figures. */

import type { GenerateTrainingDataInput } from "./validate.ts";

/** One training example. */
export interface Example {
  /** The model's input. */
  prompt: string;
  /** The expected output. */
  completion: string;
  /** The class (classification), aspect (question answering) or tone (summarization) of the example. */
  label: string;
}

/** The figures of a generated dataset. */
export interface DatasetStats {
  example_count: number;
  /** Mean prompt length in characters, two decimals. */
  avg_prompt_chars: number;
  /** Mean completion length in characters, two decimals. */
  avg_completion_chars: number;
  /** Examples per label. */
  label_counts: Record<string, number>;
}

const SUBJECTS = [
  "the new phone",
  "the hotel stay",
  "the delivery",
  "the support call",
  "the software update",
  "the museum tour",
  "the cooking class",
  "the concert",
  "the laptop",
  "the train ride",
  "the coffee machine",
  "the online course",
];
const ASPECTS = ["price", "quality", "service", "design", "speed", "reliability", "comfort", "value"];
/** Phrases of the default labels; any other label gets a neutral phrase naming it. */
const PHRASES: Record<string, string[]> = {
  positive: ["exceeded every expectation", "was a real delight", "worked flawlessly", "made the day better"],
  negative: [
    "was a letdown",
    "stopped working within a day",
    "felt badly overpriced",
    "caused nothing but trouble",
  ],
  neutral: ["was as described", "did the job", "was fine overall", "met the basic needs"],
};
const TONES = ["positive", "negative", "neutral"];

/** A seeded 32-bit PRNG (mulberry32): the same seed gives the same sequence on every runtime. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fills `{text}`, `{subject}`, `{aspect}` and `{index}` in `template`. */
export function fillTemplate(template: string, values: Record<string, string>): string {
  return template.replace(/\{(text|subject|aspect|index)\}/g, (_, name: string) => values[name] ?? "");
}

const capitalize = (s: string) => s.charAt(0).toUpperCase() + s.slice(1);

/** The `input.count` examples for `input`: a pure function of task, count, seed, template and labels. */
export function generateExamples(input: GenerateTrainingDataInput): Example[] {
  const random = seededRandom(input.seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const examples: Example[] = [];
  for (let i = 0; i < input.count; i++) {
    const subject = pick(SUBJECTS);
    const aspect = pick(ASPECTS);
    const score = 1 + Math.floor(random() * 10);
    const tone = input.task === "classification" ? pick(input.labels) : pick(TONES);
    const phrase = PHRASES[tone] ? pick(PHRASES[tone]) : `fits the "${tone}" category`;
    const text = `${capitalize(subject)} ${phrase}. The ${aspect} stood out. It rated ${score} out of 10.`;
    const prompt = fillTemplate(input.template, { text, subject, aspect, index: String(i + 1) });
    if (input.task === "classification") {
      examples.push({ prompt, completion: tone, label: tone });
    } else if (input.task === "question_answering") {
      examples.push({
        prompt,
        completion: `The ${aspect} of ${subject} is rated ${score} out of 10.`,
        label: aspect,
      });
    } else {
      examples.push({ prompt, completion: `${capitalize(subject)} ${phrase}.`, label: tone });
    }
  }
  return examples;
}

const mean = (values: number[]) =>
  values.length === 0 ? 0 : Math.round((values.reduce((a, b) => a + b, 0) / values.length) * 100) / 100;

/** The figures of `examples`. */
export function datasetStats(examples: Example[]): DatasetStats {
  const labelCounts: Record<string, number> = {};
  for (const e of examples) labelCounts[e.label] = (labelCounts[e.label] ?? 0) + 1;
  return {
    example_count: examples.length,
    avg_prompt_chars: mean(examples.map((e) => e.prompt.length)),
    avg_completion_chars: mean(examples.map((e) => e.completion.length)),
    label_counts: labelCounts,
  };
}
