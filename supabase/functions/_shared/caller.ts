/**
 * Whose rows an edge function writes: the signed-in user's (the JWT's `sub`), or the service's (`null`).
 * The caller comes verified from the idempotency wrapper (`withIdempotentTransaction`), so a function's rows
 * and its idempotency keys always belong to the same caller and the JWT is checked once.
 */

import { FunctionError } from "./http.ts";
import type { TransactionCaller } from "./idempotency.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The owner of the rows a request creates: the user's id, or `null` for the service role. Anyone else (the
 * anon key alone, no token) is 401 AUTH_REQUIRED: these functions write rows that belong to a user or to
 * the service, never to the public.
 *
 * @param caller The verified caller the wrapper hands the handler.
 * @returns The user id, or `null` for the service.
 * @throws {FunctionError} `AUTH_REQUIRED` for an anonymous caller or a `sub` that is not a user id.
 * @example
 * ```ts
 * const owner = rowOwner({ kind: "service", userId: null, role: "service_role" }); // null
 * ```
 */
export function rowOwner(caller: TransactionCaller): string | null {
  switch (caller.kind) {
    case "user":
      if (caller.userId === null || !UUID.test(caller.userId)) {
        throw new FunctionError("AUTH_REQUIRED", "the token's sub is not a user id");
      }
      return caller.userId;
    case "service":
      return null;
    case "anonymous":
      throw new FunctionError("AUTH_REQUIRED", "sign in (a user's JWT) or call with the service role key");
  }
}
