/** The work of generate-training-data: generate the examples, then store the dataset and its stats atomically. */

import { jsonb, type Tx } from "../_shared/db.ts";
import { type DatasetStats, datasetStats, type Example, generateExamples } from "./generate.ts";
import type { GenerateTrainingDataInput, Task } from "./validate.ts";

/** How many examples the response shows; the rest are in `training_datasets.examples`. */
export const PREVIEW_SIZE = 3;

/** What generate-training-data answers with (201). */
export interface GenerateTrainingDataResult {
  dataset_id: string;
  name: string;
  task: Task;
  seed: number;
  example_count: number;
  stats: DatasetStats;
  preview: Example[];
}

/**
 * Generates the examples and inserts the dataset with its stats row for `userId` (null: a service call)
 * through `tx`, so both commit together (with the stored answer, under the idempotency wrapper).
 */
export async function generateTrainingData(
  tx: Tx,
  userId: string | null,
  input: GenerateTrainingDataInput,
): Promise<GenerateTrainingDataResult> {
  const examples = generateExamples(input);
  const stats = datasetStats(examples);
  const [dataset] = await tx<{ id: string }[]>`
    insert into public.training_datasets (user_id, name, task, seed, template, example_count, examples)
    values (${userId}, ${input.name}, ${input.task}, ${input.seed}, ${input.template}, ${examples.length},
      ${jsonb(tx, examples)})
    returning id`;
  const datasetId = dataset!.id;
  await tx`
    insert into public.training_dataset_stats
      (dataset_id, user_id, example_count, avg_prompt_chars, avg_completion_chars, label_counts)
    values (${datasetId}, ${userId}, ${stats.example_count}, ${stats.avg_prompt_chars},
      ${stats.avg_completion_chars}, ${jsonb(tx, stats.label_counts)})`;
  return {
    dataset_id: datasetId,
    name: input.name,
    task: input.task,
    seed: input.seed,
    example_count: examples.length,
    stats,
    preview: examples.slice(0, PREVIEW_SIZE),
  };
}
