/** The work of start-training: check the dataset belongs to the caller, then queue the job, atomically. */

import { jsonb, type Sql } from "../_shared/db.ts";
import { FunctionError } from "../_shared/http.ts";
import type { Hyperparameters, StartTrainingInput } from "./validate.ts";

/** What start-training answers with (201). */
export interface StartTrainingResult {
  job_id: string;
  status: "queued";
  model_name: string;
  dataset_id: string | null;
  hyperparameters: Hyperparameters;
  created_at: string;
}

/**
 * Inserts a queued training job for `userId` (null: a service call). A `datasetId` must name a dataset in
 * the same scope (the user's own, or a service-created one for service calls), else 404 NOT_FOUND; the
 * dataset row is share-locked until the job is in, so it cannot vanish in between.
 */
export async function startTraining(
  sql: Sql,
  userId: string | null,
  input: StartTrainingInput,
): Promise<StartTrainingResult> {
  const job = await sql.begin(async (tx) => {
    if (input.datasetId !== null) {
      const found = await tx`
        select 1 from public.training_datasets
        where id = ${input.datasetId} and user_id is not distinct from ${userId}::uuid
        for share`;
      if (found.length === 0) {
        throw new FunctionError("NOT_FOUND", `dataset_id: no dataset ${input.datasetId} of this caller`);
      }
    }
    const [row] = await tx<{ id: string; created_at: Date }[]>`
      insert into public.training_jobs (user_id, model_name, dataset_id, hyperparameters, status)
      values (${userId}, ${input.modelName}, ${input.datasetId}, ${
      jsonb(tx, input.hyperparameters)
    }, 'queued')
      returning id, created_at`;
    return row!;
  });
  return {
    job_id: job.id,
    status: "queued",
    model_name: input.modelName,
    dataset_id: input.datasetId,
    hyperparameters: input.hyperparameters,
    created_at: job.created_at.toISOString(),
  };
}
