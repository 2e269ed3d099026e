/**
 * Who is calling: the user a key is scoped to. By default the `sub` of the Supabase JWT in
 * `Authorization: Bearer <jwt>`, verified with HS256 when the JWT secret is known.
 */

import { createHmac, timingSafeEqual } from "node:crypto";
import { IdempotencyError } from "./errors.ts";

/** Finds the user of a request: an id, or `null` for a call without a user. */
export type GetUserId = (req: Request) => string | null | Promise<string | null>;

/** The JWT claims this module reads. */
export interface JwtClaims {
  /** The user id; absent on the anon and service_role keys. */
  sub?: string;
  /** Expiry, in seconds since the epoch. */
  exp?: number;
  /** Any other claim (`role`, `aud`, `email`, ...). */
  [claim: string]: unknown;
}

/** Options for {@link createJwtUserResolver}. */
export interface JwtUserResolverOptions {
  /**
   * The HS256 secret that signs the project's JWTs. Default: `SUPABASE_JWT_SECRET` from the environment,
   * read on each call. Without either, claims are decoded unverified (see {@link decodeJwtClaimsUnverified}).
   */
  jwtSecret?: string;
  /** The clock in epoch milliseconds, for `exp`; default `Date.now`. */
  now?: () => number;
}

/**
 * Who is calling. `service` is the project's own backend: a verified `service_role` key, which has no
 * `sub`. Its calls share the scope of calls without a user; the caller kind is part of the request
 * fingerprint, so with `anonymous: "shared"` an anonymous call reusing a service call's key gets 422, never
 * the service's stored response.
 * `anonymous` is everyone else without a user (no token, or the public anon key).
 */
export type Caller = { kind: "user"; userId: string } | { kind: "service" } | { kind: "anonymous" };

/**
 * The default caller resolver: the bearer JWT's `sub` makes a user, `role: "service_role"` without a `sub`
 * the service, anything else (no token, the anon key) anonymous.
 *
 * @throws {IdempotencyError} `AUTH_REQUIRED` when the token is malformed, badly signed or expired.
 */
export function createJwtCallerResolver(
  options: JwtUserResolverOptions = {},
): (req: Request) => Promise<Caller> {
  // the executor's throw becomes a rejection, as callers of an async resolver expect
  return (req) => new Promise((resolve) => resolve(callerOf(req, options)));
}

function callerOf(req: Request, options: JwtUserResolverOptions): Caller {
  const token = bearerToken(req);
  if (token === null) return { kind: "anonymous" };
  const secret = options.jwtSecret ?? readEnv("SUPABASE_JWT_SECRET");
  const claims = secret ? verifyHs256Jwt(token, secret) : decodeJwtClaimsUnverified(token);
  checkExpiry(claims, (options.now ?? Date.now)());
  if (typeof claims.sub === "string" && claims.sub !== "") return { kind: "user", userId: claims.sub };
  return claims.role === "service_role" ? { kind: "service" } : { kind: "anonymous" };
}

/**
 * The JWT `sub` as a {@link GetUserId}: the user id, or `null` when there is no bearer token or it has no
 * `sub` (anon and service_role keys).
 *
 * @throws {IdempotencyError} `AUTH_REQUIRED` when the token is malformed, badly signed or expired.
 */
export function createJwtUserResolver(options: JwtUserResolverOptions = {}): GetUserId {
  const resolveCaller = createJwtCallerResolver(options);
  return async (req) => {
    const caller = await resolveCaller(req);
    return caller.kind === "user" ? caller.userId : null;
  };
}

/** A custom {@link GetUserId} as a caller resolver: an id is a user, `null` is anonymous. */
export function callerFromUserId(getUserId: GetUserId): (req: Request) => Promise<Caller> {
  return async (req) => {
    const userId = await getUserId(req);
    return userId === null ? { kind: "anonymous" } : { kind: "user", userId };
  };
}

/** The token of `Authorization: Bearer <token>`, or `null` without one. */
export function bearerToken(req: Request): string | null {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.get("authorization") ?? "");
  return match ? match[1] : null;
}

/**
 * The claims of an HS256 JWT whose signature `secret` verifies (constant-time compare). node:crypto's
 * HMAC is synchronous and about eight times cheaper here than WebCrypto's, which hops to a thread pool.
 *
 * @throws {IdempotencyError} `AUTH_REQUIRED` for a malformed token, another `alg`, or a bad signature.
 */
export function verifyHs256Jwt(token: string, secret: string): JwtClaims {
  const [header, payload, signature] = splitJwt(token);
  if (parseJsonPart(header).alg !== "HS256") throw invalidJwt("the JWT is not signed with HS256");
  // Compared as text, not as decoded bytes: base64url's last character carries unused bits, so several
  // spellings decode to the same signature, and a changed token must never verify (a fast-check finding).
  const expected = new TextEncoder().encode(
    createHmac("sha256", secret).update(`${header}.${payload}`).digest("base64url"),
  );
  const given = new TextEncoder().encode(signature);
  if (given.byteLength !== expected.byteLength || !timingSafeEqual(given, expected)) {
    throw invalidJwt("the JWT signature is invalid");
  }
  return parseJsonPart(payload) as JwtClaims;
}

/**
 * The claims of a JWT, NOT verified. Used only when no JWT secret is configured: then the Supabase gateway
 * must verify the token before the function runs (`verify_jwt = true`, the default), or anyone can claim
 * any `sub`.
 *
 * @throws {IdempotencyError} `AUTH_REQUIRED` when the token is not a JWT.
 */
export function decodeJwtClaimsUnverified(token: string): JwtClaims {
  return parseJsonPart(splitJwt(token)[1]) as JwtClaims;
}

/** Rejects a token whose `exp` has passed (`nowMs` in epoch milliseconds). */
function checkExpiry(claims: JwtClaims, nowMs: number): void {
  if (claims.exp === undefined) return;
  if (typeof claims.exp !== "number" || claims.exp * 1000 <= nowMs) throw invalidJwt("the JWT has expired");
}

function splitJwt(token: string): [string, string, string] {
  const parts = token.split(".");
  if (parts.length !== 3) throw invalidJwt("the bearer token is not a JWT");
  return parts as [string, string, string];
}

/** One base64url JSON part of a JWT, which must be an object. */
function parseJsonPart(part: string): Record<string, unknown> {
  try {
    const value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(base64UrlDecode(part)));
    if (value !== null && typeof value === "object" && !Array.isArray(value)) return value;
  } catch {
    // falls through to the error below
  }
  throw invalidJwt("the bearer token is not a JWT");
}

function base64UrlDecode(text: string): Uint8Array<ArrayBuffer> {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) throw invalidJwt("the bearer token is not a JWT");
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  try {
    const binary = atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, "="));
    return Uint8Array.from(binary, (char) => char.charCodeAt(0));
  } catch {
    throw invalidJwt("the bearer token is not a JWT");
  }
}

function invalidJwt(message: string): IdempotencyError {
  return new IdempotencyError("AUTH_REQUIRED", `Invalid authorization: ${message}`);
}

/** An environment variable, or `undefined` when it is unset or env access is not permitted. */
function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}
