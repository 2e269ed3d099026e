/** The benchmark's "bare" form of a function: the same handler with any idempotency key removed. */

import { IDEMPOTENCY_KEY_HEADERS } from "./idempotency/key.ts";

/**
 * `handler` called without the idempotency key headers: the work runs on every call, unprotected.
 *
 * @param handler A function's deployed handler.
 * @returns The handler without idempotency.
 * @example
 * ```ts
 * const bare = withoutKey((req) => new Response(req.headers.get("idempotency-key")));
 * ```
 */
export function withoutKey(
  handler: (req: Request) => Promise<Response>,
): (req: Request) => Promise<Response> {
  return (req) => {
    const headers = new Headers(req.headers);
    for (const name of IDEMPOTENCY_KEY_HEADERS) headers.delete(name);
    return handler(new Request(req, { headers }));
  };
}
