/**
 * Test support: tokens as Supabase issues them, HS256 with the local stack's legacy JWT secret, or ES256
 * with the stack's signing key (published by the gateway's JWKS).
 */

import {
  signAsymmetric,
  signHs256,
  type SigningKey,
} from "../../supabase/functions/_shared/idempotency/auth_testing.ts";

/** The local stack's JWT secret (Supabase's local default). */
export const JWT_SECRET = Deno.env.get("SUPABASE_JWT_SECRET") ??
  "super-secret-jwt-token-with-at-least-32-characters-long";

/** Signs `claims` (an hour's `exp` added unless given) with `secret`. */
export function signJwt(claims: Record<string, unknown>, secret = JWT_SECRET): Promise<string> {
  return signHs256(claims, secret);
}

/** The local stack's ES256 signing key (scripts/lib/env.sh exports where the gateway keeps it). */
async function stackSigningKey(): Promise<SigningKey> {
  const path = Deno.env.get("JWT_SIGNING_KEY_FILE") ?? ".local/auth/jwt-signing-key.json";
  const jwk = JSON.parse(await Deno.readTextFile(path)) as JsonWebKey & { kid: string };
  const privateKey = await crypto.subtle.importKey(
    "jwk",
    jwk,
    { name: "ECDSA", namedCurve: "P-256" },
    false,
    [
      "sign",
    ],
  );
  const { d: _d, key_ops: _ops, ...publicJwk } = jwk;
  return {
    alg: "ES256",
    kid: jwk.kid,
    privateKey,
    publicJwk: { ...publicJwk, kid: jwk.kid, alg: "ES256", use: "sig" },
  };
}

/** Signs `claims` (an hour's `exp` added unless given) with the stack's ES256 key, as new projects sign. */
export async function signEs256(claims: Record<string, unknown>): Promise<string> {
  return signAsymmetric(claims, await stackSigningKey());
}
