/**
 * generate-training-data: generates a deterministic synthetic dataset (1-1000 examples) and its figures.
 *
 *   POST /functions/v1/generate-training-data
 *     { "name", "task", "count", "seed"?, "template"?, "labels"? }
 *   → 201 { dataset_id, name, task, seed, example_count, stats, preview }
 *
 * Send `Idempotency-Key` to make retries safe: the first request generates, retries get its answer.
 */

import { rowOwnerOf } from "../_shared/caller.ts";
import { db } from "../_shared/db.ts";
import { jsonResponse, requireMethod, respond } from "../_shared/http.ts";
import { withIdempotency } from "../_shared/idempotency.ts";
import { generateTrainingData } from "./dataset.ts";
import { parseGenerateTrainingDataRequest } from "./validate.ts";

/** The function without idempotency: validate, then generate and store in one transaction. */
export function bareHandler(req: Request): Promise<Response> {
  return respond(async () => {
    requireMethod(req, "POST");
    const owner = await rowOwnerOf(req);
    const input = parseGenerateTrainingDataRequest(await req.text());
    return jsonResponse(await generateTrainingData(db(), owner, input), 201);
  });
}

/**
 * The function as deployed: {@link bareHandler} made idempotent per user and key. Supabase's runtime (and
 * `deno serve`, and the local gateway) serves this default export.
 */
export default {
  fetch: withIdempotency(bareHandler, { functionName: "generate-training-data" }),
} satisfies Deno.ServeDefaultExport;
