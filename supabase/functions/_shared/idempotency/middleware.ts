/**
 * `withIdempotency`: wraps an Edge Function handler so that a request with an idempotency key runs once,
 * and every retry of it gets the first response back.
 */

import { callerFromUserId, createJwtCallerResolver } from "./auth.ts";
import { toStoredResponse } from "./_codec.ts";
import type { IdempotencyMetrics } from "./metrics.ts";
import {
  createPipeline,
  firstResponse,
  freshRequest,
  type HandlerOutcome,
  isStorable,
  leaseLost,
  type LeaseState,
  type Pipeline,
  releaseKey,
  runHandler,
  type RunMode,
  startRenewal,
  storeFailed,
} from "./_pipeline.ts";
import { defaultStore, type IdempotencyOptions, resolveOptions } from "./options.ts";
import type { Lease } from "./store.ts";

/**
 * An Edge Function handler, as `Deno.serve` calls it.
 *
 * @example A handler to wrap
 * ```ts
 * import type { Handler } from "./middleware.ts";
 *
 * const handler: Handler = async (req) => Response.json({ received: (await req.json()).amount }, { status: 201 });
 * console.assert(typeof handler === "function");
 * ```
 */
export type Handler = (req: Request, info?: Deno.ServeHandlerInfo) => Response | Promise<Response>;

/** Plain counters of what the wrapper did since it was created (defined with the metrics hook). */
export type { IdempotencyMetrics } from "./metrics.ts";

/**
 * The wrapped handler, with its live {@link IdempotencyMetrics}.
 *
 * @example Serve the wrapped handler
 * ```ts
 * import { type IdempotentHandler, withIdempotency } from "./middleware.ts";
 * import { MemoryStore } from "./stores/memory.ts";
 *
 * const fetch: IdempotentHandler = withIdempotency(() => new Response("ok"), { functionName: "f", store: new MemoryStore() });
 * const entry = { fetch } satisfies Deno.ServeDefaultExport; // `export default entry;` in index.ts
 * console.assert(typeof entry.fetch === "function");
 * ```
 */
export type IdempotentHandler = ((req: Request, info?: Deno.ServeHandlerInfo) => Promise<Response>) & {
  readonly metrics: Readonly<IdempotencyMetrics>;
};

/**
 * Wraps `handler`: a request with an `Idempotency-Key` (or `X-Idempotency-Key`) runs once per user and
 * key; retries get the stored response with `X-Idempotency-Replay: true`. Calls without a key run as before.
 *
 * @param handler The function's handler; it runs at most once per user and key.
 * @param options `functionName` and any option to change (see `IdempotencyOptions`).
 * @returns The wrapped handler, with live `metrics`.
 * @throws {TypeError | RangeError} at wrap time when `options` are invalid.
 * @example A function that charges once
 * ```ts
 * import { withIdempotency } from "./middleware.ts";
 * import { MemoryStore } from "./stores/memory.ts";
 *
 * let charges = 0;
 * const fetch = withIdempotency(() => Response.json({ charge: ++charges }, { status: 201 }), {
 *   functionName: "charge",
 *   store: new MemoryStore(), // the default is the Postgres store on SUPABASE_DB_URL
 *   anonymous: "shared",
 * });
 * const send = () => fetch(new Request("http://localhost/charge", { method: "POST", headers: { "Idempotency-Key": "order-42" } }));
 * await (await send()).text();
 * const retry = await send();
 * console.assert(retry.headers.get("x-idempotency-replay") === "true" && charges === 1);
 * await retry.text();
 * ```
 */
export function withIdempotency(handler: Handler, options: IdempotencyOptions): IdempotentHandler {
  const resolved = resolveOptions(options);
  const getCaller = resolved.getUserId
    ? callerFromUserId(resolved.getUserId)
    : createJwtCallerResolver(resolved.jwtSecret === undefined ? {} : { jwtSecret: resolved.jwtSecret });
  return createPipeline(storeMode(handler, resolved.store), resolved, getCaller);
}

/** Response-only: the handler runs, then its outcome is stored (or the key released) in a second call. */
function storeMode(handler: Handler, store: IdempotencyOptions["store"]): RunMode {
  return {
    store: () => store ?? defaultStore(),
    unprotected: (_ctx, req, info) => Promise.resolve(handler(req, info)),
    runClaimed: async (ctx, { lease, read }) => {
      const state: LeaseState = { lost: false };
      const renewal = startRenewal(ctx, lease, state);
      let outcome: HandlerOutcome;
      try {
        outcome = await runHandler(ctx, () => handler(freshRequest(read), read.info));
      } finally {
        await renewal.stop();
      }
      await finish(ctx, lease, outcome, state); // never throws: store failures are logged and counted
      return firstResponse(outcome);
    },
  };
}

/** Stores a final outcome, or releases the key so a retry runs again. */
async function finish(
  ctx: Pipeline,
  lease: Lease,
  outcome: HandlerOutcome,
  state: LeaseState,
): Promise<void> {
  if (!isStorable(outcome.status, ctx.options)) return await releaseKey(ctx, lease, outcome, state);
  try {
    if (!(await ctx.store().complete(lease, await toStoredResponse(outcome, ctx.options)))) {
      leaseLost(ctx, state, "complete");
    }
  } catch (error) {
    storeFailed(ctx, "complete", error);
  }
}
