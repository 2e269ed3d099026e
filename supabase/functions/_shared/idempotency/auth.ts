/**
 * Who is calling: the user a key is scoped to. By default the `sub` of the Supabase JWT in
 * `Authorization: Bearer <jwt>`, verified (jwt.ts) with the project's signing keys (ES256/RS256, from its
 * JWKS) or the legacy secret (HS256) when those are known.
 */

import { bearerToken, checkTimes, createJwtVerifier, decodeJwt, type JwtClaims, JwtError } from "./jwt.ts";

/**
 * Finds the user of a request: an id, or `null` for a call without a user.
 *
 * @example Scope keys by a header your own gateway sets
 * ```ts
 * import type { GetUserId } from "./auth.ts";
 *
 * const getUserId: GetUserId = (req) => req.headers.get("x-verified-user");
 * console.assert(getUserId(new Request("http://localhost/")) === null);
 * ```
 */
export type GetUserId = (req: Request) => string | null | Promise<string | null>;

/**
 * Options for {@link createJwtUserResolver}.
 *
 * @example Verify with an explicit JWKS
 * ```ts
 * import { createJwtUserResolver } from "./auth.ts";
 *
 * const getUserId = createJwtUserResolver({ jwksUrl: "https://project.supabase.co/auth/v1/.well-known/jwks.json" });
 * console.assert((await getUserId(new Request("http://localhost/"))) === null);
 * ```
 */
export interface JwtUserResolverOptions {
  /**
   * The legacy HS256 secret. Without it, an HS256 token is decoded unverified: the platform must have
   * verified it (`verify_jwt = true`).
   * @default {Deno.env.get("SUPABASE_JWT_SECRET")} read on each call
   */
  jwtSecret?: string;
  /**
   * The project's public signing keys (ES256/RS256). Without it, such a token is decoded unverified (the
   * platform verified it), unless a `jwtSecret` is set: then it is refused, as before signing keys existed.
   * @default {`${Deno.env.get("SUPABASE_URL")}/auth/v1/.well-known/jwks.json`} read on each call
   */
  jwksUrl?: string;
  /**
   * The clock in epoch milliseconds, for `exp` and `nbf`.
   * @default {Date.now}
   */
  now?: () => number;
}

/**
 * Who is calling. `service` is the project's own backend: a verified `service_role` key, which has no
 * `sub`. Its calls share the scope of calls without a user; the caller kind is part of the request
 * fingerprint, so with `anonymous: "shared"` an anonymous call reusing a service call's key gets 422, never
 * the service's stored response.
 * `anonymous` is everyone else without a user (no token, or the public anon key).
 *
 * @example Branch on the caller
 * ```ts
 * import { type Caller, createJwtCallerResolver } from "./auth.ts";
 *
 * const resolve = createJwtCallerResolver();
 * const caller: Caller = await resolve(new Request("http://localhost/"));
 * console.assert(caller.kind === "anonymous");
 * ```
 */
export type Caller = { kind: "user"; userId: string } | { kind: "service" } | { kind: "anonymous" };

/**
 * The default caller resolver: the bearer JWT's `sub` makes a user, `role: "service_role"` without a `sub`
 * the service, anything else (no token, the anon key) anonymous. It keeps one {@link JwtVerifier} (and its
 * cached signing keys) for as long as it lives.
 *
 * @param options Key material and clock.
 * @returns The resolver; it rejects with a {@link JwtError} (`AUTH_REQUIRED`) when the token is malformed,
 * badly signed, signed by an unknown key, or expired.
 *
 * @throws {JwtError} (as a rejection of the resolver) when the token is refused.
 * @example Who owns the rows a function writes
 * ```ts
 * import { createJwtCallerResolver } from "./auth.ts";
 *
 * const resolve = createJwtCallerResolver();
 * async function ownerOf(req: Request): Promise<string | null> {
 *   const caller = await resolve(req);
 *   return caller.kind === "user" ? caller.userId : null;
 * }
 * console.assert((await ownerOf(new Request("http://localhost/"))) === null);
 * ```
 */
export function createJwtCallerResolver(
  options: JwtUserResolverOptions = {},
): (req: Request) => Promise<Caller> {
  const verifier = createJwtVerifier({
    ...(options.jwtSecret === undefined ? {} : { secret: options.jwtSecret }),
    ...(options.jwksUrl === undefined ? {} : { jwksUrl: options.jwksUrl }),
    ...(options.now === undefined ? {} : { now: options.now }),
  });
  const now = options.now ?? Date.now;
  const secretConfigured = () => (options.jwtSecret ?? readEnv("SUPABASE_JWT_SECRET")) !== undefined;
  return async (req) => {
    const token = bearerToken(req);
    if (token === null) return { kind: "anonymous" };
    const claims = verifier.canVerify(token)
      ? await verifier.verify(token)
      : platformVerifiedClaims(token, secretConfigured(), now());
    if (typeof claims.sub === "string" && claims.sub !== "") return { kind: "user", userId: claims.sub };
    return claims.role === "service_role" ? { kind: "service" } : { kind: "anonymous" };
  };
}

/**
 * The claims of a token this function has no key for, which the platform verified (`verify_jwt = true`).
 * Only Supabase's algorithms are taken; an ES256/RS256 token is refused where a secret says tokens are HS256.
 */
function platformVerifiedClaims(token: string, secretConfigured: boolean, nowMs: number): JwtClaims {
  const { header, claims } = decodeJwt(token);
  if (header.alg !== "HS256" && header.alg !== "ES256" && header.alg !== "RS256") {
    throw new JwtError(`the JWT's alg ${String(header.alg)} is not accepted`);
  }
  if (header.alg !== "HS256" && secretConfigured) throw new JwtError("the JWT is not signed with HS256");
  checkTimes(claims, nowMs);
  return claims;
}

/**
 * The JWT `sub` as a {@link GetUserId}: the user id, or `null` when there is no bearer token or it has no
 * `sub` (anon and service_role keys).
 *
 * @param options Key material and clock, as for {@link createJwtCallerResolver}.
 * @returns The resolver; it rejects with a {@link JwtError} when the token is refused.
 *
 * @throws {JwtError} (as a rejection of the resolver) when the token is refused.
 * @example Pass the default resolver explicitly
 * ```ts
 * import { createJwtUserResolver } from "./auth.ts";
 * import { withIdempotency } from "./middleware.ts";
 * import { MemoryStore } from "./stores/memory.ts";
 *
 * const getUserId = createJwtUserResolver({ jwtSecret: "a-legacy-secret-of-at-least-32-characters" });
 * const fetch = withIdempotency(() => new Response("ok"), { functionName: "f", store: new MemoryStore(), getUserId });
 * console.assert(typeof fetch === "function");
 * ```
 */
export function createJwtUserResolver(options: JwtUserResolverOptions = {}): GetUserId {
  const resolveCaller = createJwtCallerResolver(options);
  return async (req) => {
    const caller = await resolveCaller(req);
    return caller.kind === "user" ? caller.userId : null;
  };
}

/**
 * A custom {@link GetUserId} as a caller resolver: an id is a user, `null` is anonymous.
 *
 * @param getUserId The custom resolver.
 * @returns The caller resolver.
 *
 * @example A custom resolver as a caller resolver
 * ```ts
 * import { callerFromUserId } from "./auth.ts";
 *
 * const resolve = callerFromUserId(() => "user-1");
 * console.assert((await resolve(new Request("http://localhost/"))).kind === "user");
 * ```
 */
export function callerFromUserId(getUserId: GetUserId): (req: Request) => Promise<Caller> {
  return async (req) => {
    const userId = await getUserId(req);
    return userId === null ? { kind: "anonymous" } : { kind: "user", userId };
  };
}

/** An environment variable, or `undefined` when it is unset, empty, or env access is not permitted. */
function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}
