/** The pure input validator of generate-training-data. */

import {
  invalidField,
  optionalInteger,
  optionalString,
  optionalStringList,
  parseJsonObject,
  rejectUnknownFields,
  requireChoice,
  requireInteger,
  requireString,
} from "../_shared/validate.ts";

/** The kinds of dataset the generator makes. */
export const TASKS = ["classification", "question_answering", "summarization"] as const;

/** One of {@link TASKS}. */
export type Task = typeof TASKS[number];

/** The most examples one request may generate. */
export const MAX_EXAMPLES = 1000;

/** The placeholders a template may use; `{text}` is the generated passage. */
export const PLACEHOLDERS = ["{text}", "{subject}", "{aspect}", "{index}"] as const;

/** Labels of a classification dataset when none are given. */
export const DEFAULT_LABELS = ["positive", "negative", "neutral"] as const;

/** The prompt template of each task when none is given. */
export const DEFAULT_TEMPLATES: Record<Task, string> = {
  classification: "Classify the sentiment of this review: {text}",
  question_answering: "Question: how is the {aspect} of {subject} rated?",
  summarization: "Summarize in one sentence: {text}",
};

/** A valid generate-training-data request. */
export interface GenerateTrainingDataInput {
  /** The dataset's name, 1-200 characters. */
  name: string;
  /** What the examples teach. */
  task: Task;
  /** How many examples, 1-1000. */
  count: number;
  /** The generator's seed, 0 to 2^32-1; default 1. The same seed and settings give the same examples. */
  seed: number;
  /** The prompt template with {@link PLACEHOLDERS}; default per task. */
  template: string;
  /** Classification labels (2-20, distinct); empty for other tasks. */
  labels: string[];
}

/** Parses the request body; throws 400 INVALID_REQUEST naming the first bad field. */
export function parseGenerateTrainingDataRequest(body: string): GenerateTrainingDataInput {
  const object = parseJsonObject(body);
  rejectUnknownFields(object, ["name", "task", "count", "seed", "template", "labels"]);
  const name = requireString(object, "name", { max: 200 }).trim();
  const task = requireChoice(object, "task", TASKS);
  const count = requireInteger(object, "count", { min: 1, max: MAX_EXAMPLES });
  const seed = optionalInteger(object, "seed", 1, { min: 0, max: 0xffff_ffff });
  const template = optionalString(object, "template", DEFAULT_TEMPLATES[task], { max: 500 });
  if (!PLACEHOLDERS.some((p) => template.includes(p))) {
    throw invalidField("template", `must use at least one of ${PLACEHOLDERS.join(", ")}`);
  }
  if (task !== "classification" && object.labels !== undefined && object.labels !== null) {
    throw invalidField("labels", "only applies to task classification");
  }
  const labels = task === "classification"
    ? optionalStringList(object, "labels", DEFAULT_LABELS, { min: 2, max: 20, maxItemLength: 50 })
    : [];
  return { name, task, count, seed, template, labels };
}
