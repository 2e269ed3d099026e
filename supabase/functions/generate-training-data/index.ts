/**
 * generate-training-data: generates a deterministic synthetic dataset (1-1000 examples) and its figures.
 *
 *   POST /functions/v1/generate-training-data
 *     { "name", "task", "count", "seed"?, "template"?, "labels"? }
 *   → 201 { dataset_id, name, task, seed, example_count, stats, preview }
 *
 * Send `Idempotency-Key` to make retries safe: the dataset, its stats and the stored answer commit in one
 * transaction, so the work happens once and retries get its answer back.
 */

import { rowOwner } from "../_shared/caller.ts";
import { jsonResponse, requireMethod, respond } from "../_shared/http.ts";
import { type TransactionContext, withIdempotentTransaction } from "../_shared/idempotency.ts";
import { generateTrainingData } from "./dataset.ts";
import { parseGenerateTrainingDataRequest } from "./validate.ts";

/** The work: validate, then generate and store through the given transaction. */
export function work(req: Request, { tx, caller }: TransactionContext): Promise<Response> {
  return respond(async () => {
    requireMethod(req, "POST");
    const owner = rowOwner(caller);
    const input = parseGenerateTrainingDataRequest(await req.text());
    return jsonResponse(await generateTrainingData(tx, owner, input), 201);
  });
}

/**
 * The function as deployed: exactly once per user and key, rows and answer in one transaction. Supabase's runtime (and `deno serve`, and the local gateway) serves
 * this default export.
 */
const handler = withIdempotentTransaction(work, { functionName: "generate-training-data" });

export default { fetch: handler } satisfies Deno.ServeDefaultExport;
