/**
 * start-training: queues a fine-tuning job for a model, optionally on one of the caller's datasets.
 *
 *   POST /functions/v1/start-training
 *     { "model_name", "hyperparameters": { "learning_rate", "epochs", "batch_size" }, "dataset_id"? }
 *   → 201 { job_id, status, model_name, dataset_id, hyperparameters, created_at }
 *
 * Send `Idempotency-Key` to make retries safe: the first request queues the job, retries get its answer.
 */

import { rowOwnerOf } from "../_shared/caller.ts";
import { db } from "../_shared/db.ts";
import { jsonResponse, requireMethod, respond } from "../_shared/http.ts";
import { withIdempotency } from "../_shared/idempotency.ts";
import { startTraining } from "./train.ts";
import { parseStartTrainingRequest } from "./validate.ts";

/** The function without idempotency: validate, then queue the job in one transaction. */
export function bareHandler(req: Request): Promise<Response> {
  return respond(async () => {
    requireMethod(req, "POST");
    const owner = await rowOwnerOf(req);
    const input = parseStartTrainingRequest(await req.text());
    return jsonResponse(await startTraining(db(), owner, input), 201);
  });
}

/**
 * The function as deployed: {@link bareHandler} made idempotent per user and key. Supabase's runtime (and
 * `deno serve`, and the local gateway) serves this default export.
 */
export default {
  fetch: withIdempotency(bareHandler, { functionName: "start-training" }),
} satisfies Deno.ServeDefaultExport;
