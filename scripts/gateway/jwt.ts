/** HS256 JWT verification with WebCrypto, as the Supabase gateway does before a function with verify_jwt runs. */

/** Why a token was refused; the message is safe to show the caller. */
export class JwtError extends Error {
  constructor(message: string) {
    super(message);
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

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** The bytes of base64url `text`; throws JwtError on anything else. */
function base64UrlBytes(text: string): Uint8Array<ArrayBuffer> {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) throw new JwtError("the token is not base64url");
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
  try {
    return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  } catch {
    throw new JwtError("the token is not base64url");
  }
}

/** The JSON object in base64url `part`; throws JwtError otherwise. */
function jsonPart(part: string, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(base64UrlBytes(part)));
  } catch (error) {
    if (error instanceof JwtError) throw error;
    throw new JwtError(`the token's ${what} is not JSON`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new JwtError(`the token's ${what} is not a JSON object`);
  }
  return value as Record<string, unknown>;
}

/**
 * A verifier for HS256 tokens signed with `secret`. `now` (seconds) is for tests. The signature is checked
 * with `crypto.subtle.verify` (constant time) before any claim is trusted; `exp` is required and checked,
 * `nbf` is checked when present.
 */
export async function createJwtVerifier(
  secret: string,
  now: () => number = () => Math.floor(Date.now() / 1000),
): Promise<JwtVerifier> {
  if (secret.length < 32) throw new Error("the JWT secret must have at least 32 characters");
  const key = await crypto.subtle.importKey(
    "raw",
    encoder.encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["verify"],
  );
  return {
    async verify(token: string): Promise<JwtClaims> {
      const parts = token.split(".");
      if (parts.length !== 3) throw new JwtError("the token is not a JWT");
      const header = jsonPart(parts[0], "header");
      if (header.alg !== "HS256") {
        throw new JwtError(`the token's algorithm must be HS256, not ${header.alg}`);
      }
      const signature = base64UrlBytes(parts[2]);
      const valid = await crypto.subtle.verify(
        "HMAC",
        key,
        signature,
        encoder.encode(`${parts[0]}.${parts[1]}`),
      );
      if (!valid) throw new JwtError("the token's signature is invalid");
      const claims = jsonPart(parts[1], "payload");
      if (typeof claims.exp !== "number") throw new JwtError("the token has no expiry (exp)");
      const at = now();
      if (claims.exp <= at) throw new JwtError("the token has expired");
      if (typeof claims.nbf === "number" && claims.nbf > at) throw new JwtError("the token is not valid yet");
      return claims as JwtClaims;
    },
  };
}

/** The token in an `Authorization: Bearer <token>` header, or `null`. */
export function bearerToken(authorization: string | null): string | null {
  if (!authorization) return null;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
  return match ? match[1] : null;
}
