/**
 * run-actions: the target of Supabase Database Webhooks. It receives `{ type, table, schema, record,
 * old_record }` and performs each event's follow-up actions exactly once, however often the webhook is
 * delivered (at least once, possibly concurrently): each action's key comes from the event, and its work
 * commits in the same transaction that records it.
 *
 *   POST /functions/v1/run-actions   Authorization: Bearer <service_role key>
 *   → 200 { event, actions: [{ action, key, replayed, attempt, result }] }
 *
 * Handled: INSERT into public.training_datasets → queue a baseline training job, then notify the owner.
 * Other events are acknowledged with `actions: []` so the webhook does not retry them.
 */

import { ActionIdempotency } from "../_shared/actions.ts";
import { PostgresActionStore } from "../_shared/actions_postgres.ts";
import { FunctionError, jsonResponse, requireMethod, respond } from "../_shared/http.ts";
import { createJwtCallerResolver } from "../_shared/idempotency/auth.ts";
import { errorResponse, IdempotencyError } from "../_shared/idempotency/errors.ts";
import { type PostgresTransaction, sharedPool } from "../_shared/idempotency/pool.ts";
import { parseWebhookEvent } from "./event.ts";
import { followUpsFor } from "./followups.ts";

const resolveCaller = createJwtCallerResolver();

/**
 * The action API on the isolate's one pool (pool.ts), shared by the action store and the actions' own
 * writes: it survives database restarts and follows the pooler rule (`?prepare=false`, port 6543).
 */
const isolate: { actions?: ActionIdempotency } = {};

function actions(): ActionIdempotency {
  isolate.actions ??= new ActionIdempotency({ store: new PostgresActionStore({ sql: sharedPool() }) });
  return isolate.actions;
}

/** Only the service role may trigger actions: a Database Webhook sends its key in `Authorization`. */
async function requireServiceRole(req: Request): Promise<void> {
  let kind: string;
  try {
    kind = (await resolveCaller(req)).kind;
  } catch (error) {
    if (error instanceof IdempotencyError) {
      throw new FunctionError("AUTH_REQUIRED", error.message);
    }
    throw error;
  }
  if (kind !== "service") {
    throw new FunctionError(
      "AUTH_REQUIRED",
      "run-actions accepts only the service_role key (a Database Webhook)",
    );
  }
}

/**
 * The function: validate, then run the event's follow-ups in order, each once.
 *
 * @param req The webhook request.
 * @returns 200 with each action's outcome; 400/401/405 for bad calls; 409 while a redelivery of the same
 * event is still running an action, 503 with `Retry-After` when the database is down (the webhook retries).
 */
export function handler(req: Request): Promise<Response> {
  return respond(async () => {
    requireMethod(req, "POST");
    await requireServiceRole(req);
    const event = parseWebhookEvent(await req.text());
    const followUps = followUpsFor(event);
    const previous: Record<string, unknown> = {};
    const done = [];
    for (const followUp of followUps) {
      try {
        const outcome = await actions().executeInTransaction<unknown, PostgresTransaction>(
          followUp.action,
          (tx) => followUp.run(tx, previous),
        );
        previous[followUp.action.actionType] = outcome.result;
        done.push({ action: followUp.action.actionType, ...outcome });
      } catch (error) {
        const answer = idempotencyErrorOf(error);
        if (answer) return errorResponse(answer);
        throw error;
      }
    }
    return jsonResponse({
      event: { type: event.type, schema: event.schema, table: event.table },
      actions: done,
    });
  });
}

/**
 * The answer for an error of the action API: its own (409 while a redelivery still runs an action), or 503
 * `STORE_UNAVAILABLE` with `Retry-After` when the database cannot be reached, so the webhook retries later.
 * `undefined` for anything else (a 500).
 */
function idempotencyErrorOf(error: unknown): IdempotencyError | undefined {
  if (error instanceof IdempotencyError) return error;
  for (let e: unknown = error; e instanceof Error; e = e.cause) {
    const code = String((e as { code?: unknown }).code ?? "");
    if (
      /^(ECONN|EPIPE|ETIMEDOUT|CONNECT_TIMEOUT|CONNECTION_|08|57P)/.test(code) ||
      e instanceof Deno.errors.ConnectionRefused
    ) {
      return new IdempotencyError("STORE_UNAVAILABLE", "the database is unreachable; retry later", {
        retryAfterSeconds: 5,
        cause: error,
      });
    }
  }
  return undefined;
}

export default { fetch: handler } satisfies Deno.ServeDefaultExport;
