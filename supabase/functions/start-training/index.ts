/**
 * start-training: queues a fine-tuning job for a model, optionally on one of the caller's datasets, and
 * hands it to the external trainer at `TRAINER_URL` (when set).
 *
 *   POST /functions/v1/start-training
 *     { "model_name", "hyperparameters": { "learning_rate", "epochs", "batch_size" }, "dataset_id"? }
 *   → 201 { job_id, status, model_name, dataset_id, hyperparameters, trainer_job_id, created_at }
 *
 * Send `Idempotency-Key` to make retries safe: the trainer call is a recorded step (a retry reuses its
 * result, and the trainer gets a derived key so a call repeated after a crash is deduplicated there), and the
 * job row commits with the stored answer.
 */

import { rowOwner } from "../_shared/caller.ts";
import { jsonResponse, requireMethod, respond } from "../_shared/http.ts";
import { type TransactionContext, withIdempotentTransaction } from "../_shared/idempotency.ts";
import { checkDataset, queueTrainingJob, submitToTrainer } from "./train.ts";
import { parseStartTrainingRequest } from "./validate.ts";

/** The step that calls the external trainer; its name is recorded with the key. */
export const TRAINER_STEP = "submit-to-trainer";

/** The work: validate, check the dataset, call the trainer once per key, then queue the job row. */
export function work(req: Request, { tx, caller, step }: TransactionContext): Promise<Response> {
  return respond(async () => {
    requireMethod(req, "POST");
    const owner = rowOwner(caller);
    const input = parseStartTrainingRequest(await req.text());
    await checkDataset(tx, owner, input);
    const trainerUrl = Deno.env.get("TRAINER_URL");
    const trainerJobId = trainerUrl
      ? await step(TRAINER_STEP, (stepKey) => submitToTrainer(trainerUrl, stepKey, input))
      : null;
    return jsonResponse(await queueTrainingJob(tx, owner, input, trainerJobId), 201);
  });
}

/**
 * The function as deployed: exactly once per user and key (the trainer call is a recorded step, the job row and answer one transaction). Supabase's runtime (and `deno serve`, and the local gateway) serves
 * this default export.
 */
const handler = withIdempotentTransaction(work, { functionName: "start-training" });

export default { fetch: handler } satisfies Deno.ServeDefaultExport;
