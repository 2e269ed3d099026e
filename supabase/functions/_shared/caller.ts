/**
 * Whose rows an edge function writes: the signed-in user's (the JWT's `sub`), or the service's (`null`).
 * Resolved with the idempotency helper's own caller resolver, so a function's rows and its idempotency
 * keys always belong to the same caller.
 */

import { FunctionError } from "./http.ts";
import { createJwtCallerResolver } from "./idempotency.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The helper's default resolver: the bearer JWT's `sub` is a user, a `service_role` key without one is the
 * service, anything else is anonymous. It verifies ES256/RS256 tokens against the project's JWKS
 * (`SUPABASE_URL`) and HS256 tokens when `SUPABASE_JWT_SECRET` is set (else the gateway did, as
 * `verify_jwt = true` asks). It caches the project's signing keys for the isolate's life.
 */
const resolveCaller = createJwtCallerResolver();

/**
 * The owner of the rows `req` creates: the user's id, or `null` for the service role. Anyone else (the
 * anon key alone, no token, a bad or expired token) is 401 AUTH_REQUIRED: these functions write rows that
 * belong to a user or to the service, never to the public. A refused token rejects with the resolver's
 * `JwtError`, itself a 401 `AUTH_REQUIRED` of the same error family.
 */
export async function rowOwnerOf(req: Request): Promise<string | null> {
  const caller = await resolveCaller(req);
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
