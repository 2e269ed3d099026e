/**
 * HS256 JWT verification, as the Supabase gateway does before a function with verify_jwt runs. The token's
 * header, algorithm, signature and payload are the shared helper's work ({@link verifyHs256Jwt}); the
 * gateway adds what it requires on top: an `exp` that has not passed and an `nbf` that has.
 */

import { IdempotencyError, verifyHs256Jwt } from "../../supabase/functions/_shared/idempotency.ts";

/** Why a token was refused; the message is safe to show the caller. */
export class JwtError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "JwtError";
  }
}

/** The verified claims of a token. */
export type JwtClaims = Record<string, unknown> & { exp: number; role?: string; sub?: string };

/** Verifies tokens signed with one secret. */
export interface JwtVerifier {
  /** The claims of `token` when its HS256 signature is valid and it has not expired; else throws JwtError. */
  verify(token: string): Promise<JwtClaims>;
}

/**
 * A verifier for HS256 tokens signed with `secret`. `now` (seconds) is for tests. The signature is checked
 * (constant time) before any claim is trusted; `exp` is required and checked, `nbf` is checked when present.
 */
export function createJwtVerifier(
  secret: string,
  now: () => number = () => Math.floor(Date.now() / 1000),
): Promise<JwtVerifier> {
  if (secret.length < 32) return Promise.reject(new Error("the JWT secret must have at least 32 characters"));
  return Promise.resolve({
    // the executor's throw becomes a rejection, as callers of `verify` expect
    verify: (token) => new Promise((resolve) => resolve(verifyClaims(token, secret, now))),
  });
}

/** The claims of `token` at `now()` (seconds); throws JwtError when it is refused. */
function verifyClaims(token: string, secret: string, now: () => number): JwtClaims {
  const claims = signedClaims(token, secret);
  if (typeof claims.exp !== "number") throw new JwtError("the token has no expiry (exp)");
  const at = now();
  if (claims.exp <= at) throw new JwtError("the token has expired");
  if (typeof claims.nbf === "number" && claims.nbf > at) throw new JwtError("the token is not valid yet");
  return claims as JwtClaims;
}

/** {@link verifyHs256Jwt}, its refusal (a malformed token, another `alg`, a bad signature) as a JwtError. */
function signedClaims(token: string, secret: string): Record<string, unknown> {
  try {
    return verifyHs256Jwt(token, secret);
  } catch (error) {
    if (error instanceof IdempotencyError && error.code === "AUTH_REQUIRED") {
      throw new JwtError(error.message, { cause: error });
    }
    throw error;
  }
}
