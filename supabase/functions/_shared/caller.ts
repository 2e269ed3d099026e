/**
 * Whose rows an edge function writes: the signed-in user's (the JWT's `sub`), or the service's (`null`).
 * Resolved with the idempotency helper's own caller resolver, so a function's rows and its idempotency
 * keys always belong to the same caller.
 */

import { FunctionError } from "./http.ts";
import { createJwtCallerResolver, IdempotencyError } from "./idempotency.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The helper's default resolver: the bearer JWT's `sub` is a user, a `service_role` key without one is the
 * service, anything else is anonymous. It checks the HS256 signature when `SUPABASE_JWT_SECRET` is set
 * (else the gateway did, as `verify_jwt = true` asks). Stateless.
 */
const resolveCaller = createJwtCallerResolver();

/**
 * The owner of the rows `req` creates: the user's id, or `null` for the service role. Anyone else (the
 * anon key alone, no token, a bad or expired token) is 401 AUTH_REQUIRED: these functions write rows that
 * belong to a user or to the service, never to the public.
 */
export async function rowOwnerOf(req: Request): Promise<string | null> {
  let caller;
  try {
    caller = await resolveCaller(req);
  } catch (error) {
    if (error instanceof IdempotencyError) throw new FunctionError("AUTH_REQUIRED", error.message);
    throw error;
  }
  switch (caller.kind) {
    case "user":
      if (!UUID.test(caller.userId)) {
        throw new FunctionError("AUTH_REQUIRED", "the token's sub is not a user id");
      }
      return caller.userId;
    case "service":
      return null;
    case "anonymous":
      throw new FunctionError("AUTH_REQUIRED", "sign in (a user's JWT) or call with the service role key");
  }
}
