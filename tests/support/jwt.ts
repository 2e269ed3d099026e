/** Test support: HS256 tokens signed with the local stack's JWT secret, as Supabase issues them. */

import { signHs256 } from "../../supabase/functions/_shared/idempotency/auth_testing.ts";

/** The local stack's JWT secret (Supabase's local default). */
export const JWT_SECRET = Deno.env.get("SUPABASE_JWT_SECRET") ??
  "super-secret-jwt-token-with-at-least-32-characters-long";

/** Signs `claims` (an hour's `exp` added unless given) with `secret`. */
export function signJwt(claims: Record<string, unknown>, secret = JWT_SECRET): Promise<string> {
  return signHs256(claims, secret);
}
