/**
 * The work of start-training: check the dataset belongs to the caller, hand the job to the external trainer
 * (a resumable step), then queue the job row; the rows commit with the stored answer.
 */

import { jsonb, type Tx } from "../_shared/db.ts";
import { FunctionError } from "../_shared/http.ts";
import type { Hyperparameters, StartTrainingInput } from "./validate.ts";

/** What start-training answers with (201). */
export interface StartTrainingResult {
  job_id: string;
  status: "queued";
  model_name: string;
  dataset_id: string | null;
  hyperparameters: Hyperparameters;
  /** The job's id at the external trainer; `null` when no trainer is configured. */
  trainer_job_id: string | null;
  created_at: string;
}

/**
 * Throws 404 NOT_FOUND unless `input.datasetId` (when given) names a dataset in the caller's scope (the
 * user's own, or a service-created one for service calls). The row is share-locked until the transaction
 * ends, so it cannot vanish before the job references it.
 */
export async function checkDataset(tx: Tx, userId: string | null, input: StartTrainingInput): Promise<void> {
  if (input.datasetId === null) return;
  const found = await tx`
    select 1 from public.training_datasets
    where id = ${input.datasetId} and user_id is not distinct from ${userId}::uuid
    for share`;
  if (found.length === 0) {
    throw new FunctionError("NOT_FOUND", `dataset_id: no dataset ${input.datasetId} of this caller`);
  }
}

/**
 * Submits the job to the external trainer at `trainerUrl` (POST `<url>/jobs`), sending `stepKey` as its
 * `Idempotency-Key` so that a call repeated after a crash starts no second job there.
 *
 * @returns The trainer's job id.
 */
export async function submitToTrainer(
  trainerUrl: string,
  stepKey: string,
  input: StartTrainingInput,
): Promise<string> {
  const response = await fetch(`${trainerUrl.replace(/\/$/, "")}/jobs`, {
    method: "POST",
    headers: { "content-type": "application/json", "idempotency-key": stepKey },
    body: JSON.stringify({ model_name: input.modelName, hyperparameters: input.hyperparameters }),
    signal: AbortSignal.timeout(10_000),
  });
  const body = await response.json().catch(() => null) as { id?: unknown } | null;
  if (!response.ok || typeof body?.id !== "string") {
    throw new Error(`the trainer answered ${response.status}`);
  }
  return body.id;
}

/** Inserts the queued training job for `userId` (null: a service call) through `tx`. */
export async function queueTrainingJob(
  tx: Tx,
  userId: string | null,
  input: StartTrainingInput,
  trainerJobId: string | null,
): Promise<StartTrainingResult> {
  const [job] = await tx<{ id: string; created_at: Date }[]>`
    insert into public.training_jobs (user_id, model_name, dataset_id, hyperparameters, status, trainer_job_id)
    values (${userId}, ${input.modelName}, ${input.datasetId}, ${
    jsonb(tx, input.hyperparameters)
  }, 'queued', ${trainerJobId})
    returning id, created_at`;
  return {
    job_id: job!.id,
    status: "queued",
    model_name: input.modelName,
    dataset_id: input.datasetId,
    hyperparameters: input.hyperparameters,
    trainer_job_id: trainerJobId,
    created_at: job!.created_at.toISOString(),
  };
}
