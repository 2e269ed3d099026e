/**
 * process-document: stores a document and runs simple processing on it (summary, keywords, statistics).
 *
 *   POST /functions/v1/process-document   { "title", "content", "operations"?, "max_keywords"? }
 *   → 201 { document_id, job_id, status, title, word_count, content_sha256, operations, result }
 *
 * Send `Idempotency-Key` to make retries safe: the first request runs, retries get its answer back.
 */

import { rowOwnerOf } from "../_shared/caller.ts";
import { db } from "../_shared/db.ts";
import { jsonResponse, requireMethod, respond } from "../_shared/http.ts";
import { withIdempotency } from "../_shared/idempotency.ts";
import { processDocument } from "./process.ts";
import { parseProcessDocumentRequest } from "./validate.ts";

/** The function without idempotency: validate, then do the work in one transaction. */
export function bareHandler(req: Request): Promise<Response> {
  return respond(async () => {
    requireMethod(req, "POST");
    const owner = await rowOwnerOf(req);
    const input = parseProcessDocumentRequest(await req.text());
    return jsonResponse(await processDocument(db(), owner, input), 201);
  });
}

/**
 * The function as deployed: {@link bareHandler} made idempotent per user and key. Supabase's runtime (and
 * `deno serve`, and the local gateway) serves this default export.
 */
export default {
  fetch: withIdempotency(bareHandler, { functionName: "process-document" }),
} satisfies Deno.ServeDefaultExport;
