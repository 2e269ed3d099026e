/**
 * JWT verification at the gateway, as the Supabase gateway does before a function with verify_jwt runs:
 * the shared verifier (`_shared/idempotency/jwt.ts`) checks ES256/RS256 tokens against the project's JWKS
 * and HS256 tokens with the legacy secret; the gateway adds what it requires on top, an `exp`.
 *
 * The local stack is its own auth server for keys: {@link loadSigningKey} keeps one ES256 key pair in a file
 * (made on first start), the gateway publishes its public half at `/auth/v1/.well-known/jwks.json`, and the
 * verifier fetches that document like any project's, so local runs take the same path as production.
 */

import {
  createJwtVerifier as createSharedVerifier,
  type JwtClaims,
  JwtError,
  type JwtVerifierOptions,
} from "../../supabase/functions/_shared/idempotency/jwt.ts";

export { JwtError };

/** The verified claims of a token; `exp` is required at the gateway. */
export type GatewayClaims = JwtClaims & { exp: number };

/** Verifies tokens for the gateway. */
export interface GatewayJwtVerifier {
  /** The claims of `token` when it verifies and carries an `exp`; else throws JwtError. */
  verify(token: string): Promise<GatewayClaims>;
}

/**
 * A verifier for HS256 tokens signed with `secret` and, when `jwksUrl` is given, ES256/RS256 tokens of the
 * keys published there. `now` (seconds) is for tests.
 */
export function createJwtVerifier(
  secret: string,
  now: () => number = () => Math.floor(Date.now() / 1000),
  options: Pick<JwtVerifierOptions, "jwksUrl" | "fetch"> = {},
): Promise<GatewayJwtVerifier> {
  if (secret.length < 32) return Promise.reject(new Error("the JWT secret must have at least 32 characters"));
  const verifier = createSharedVerifier({ ...options, secret, now: () => now() * 1000 });
  return Promise.resolve({
    async verify(token) {
      const claims = await verifier.verify(token);
      if (typeof claims.exp !== "number") throw new JwtError("the token has no expiry (exp)");
      return claims as GatewayClaims;
    },
  });
}

/** The local stack's signing key: a private JWK (with `kid` and `alg`), and the JWKS of its public half. */
export interface LocalSigningKey {
  /** The private key as a JWK, for test and demo signers. */
  privateJwk: JsonWebKey & { kid: string; alg: "ES256" };
  /** `{ keys: [public JWK] }`, what `/auth/v1/.well-known/jwks.json` serves. */
  jwks: { keys: JsonWebKey[] };
}

/** Reads the key pair in `path`, or makes an ES256 one and writes it there (mode 0600) on first use. */
export async function loadSigningKey(path: string): Promise<LocalSigningKey> {
  let privateJwk: LocalSigningKey["privateJwk"];
  try {
    privateJwk = JSON.parse(await Deno.readTextFile(path));
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
      "sign",
      "verify",
    ]);
    const jwk = await crypto.subtle.exportKey("jwk", pair.privateKey);
    privateJwk = { ...jwk, kid: crypto.randomUUID(), alg: "ES256" };
    await Deno.writeTextFile(path, JSON.stringify(privateJwk), { mode: 0o600 });
  }
  const { d: _private, key_ops: _ops, ...publicJwk } = privateJwk;
  return { privateJwk, jwks: { keys: [{ ...publicJwk, use: "sig", key_ops: ["verify"] }] } };
}
