/**
 * The client side of idempotency, for apps: browsers, Deno and Node 18+ (plain web APIs, no dependency).
 * Mint one key per operation, send it on every attempt, retry only what is safe.
 *
 * ```ts
 * import { createClient } from "@supabase/supabase-js";
 * import { invokeIdempotent } from "./client/mod.ts";
 *
 * const supabase = createClient(SUPABASE_URL, SUPABASE_ANON_KEY);
 * const { data, error, replayed, attempts } = await invokeIdempotent(supabase, "process-document", {
 *   body: { title: "Q3 report", content: "..." },
 * });
 * ```
 *
 * @module
 */

export {
  type AttemptOutcome,
  callIdempotent,
  type FunctionsInvoker,
  IdempotentCallError,
  type IdempotentCallErrorKind,
  idempotentFetch,
  type IdempotentFetchInit,
  type IdempotentResult,
  type InvokeBody,
  invokeIdempotent,
  type InvokeIdempotentOptions,
  type InvokeMethod,
  readBody,
  type ResendableBody,
  type RetryOptions,
  type SendAttempt,
} from "./call.ts";
export { backoffMs, isRetryableStatus, NEVER_RETRIED, nextDelayMs, serverDelayMs } from "./policy.ts";
export {
  generateIdempotencyKey,
  isValidIdempotencyKey,
} from "../supabase/functions/_shared/idempotency/key.ts";
