/**
 * Supabase JWTs: parsing, and verification of both kinds of signing key a project can have.
 *
 * - **Asymmetric signing keys** (ES256, RS256; new projects): the public keys are published as a JWKS at
 *   `<SUPABASE_URL>/auth/v1/.well-known/jwks.json`. They are fetched on first use and cached; a token whose
 *   `kid` is not in the cached set makes one refetch (rotated keys are picked up at once), and a `kid` that is
 *   still unknown after it is rejected.
 * - **The legacy JWT secret** (HS256): checked with the secret, in constant time.
 *
 * Every refusal is a {@link JwtError}: an {@link IdempotencyError} with code `AUTH_REQUIRED` (401). A key set
 * that cannot be fetched is an outage, not a refusal: `AUTH_UNAVAILABLE` (503, `Retry-After: 1`).
 *
 * @module
 */

import { createHmac, timingSafeEqual } from "node:crypto";
import { IdempotencyError } from "./errors.ts";

/**
 * The JWT claims this toolkit reads; every other claim is kept as it is.
 *
 * @example Read the role of verified claims
 * ```ts
 * import type { JwtClaims } from "./jwt.ts";
 *
 * const isService = (claims: JwtClaims) => claims.role === "service_role" && claims.sub === undefined;
 * console.assert(isService({ role: "service_role" }));
 * ```
 */
export interface JwtClaims {
  /** The user id; absent on the anon and service_role keys. */
  sub?: string;
  /** Expiry, in seconds since the epoch. */
  exp?: number;
  /** Not before, in seconds since the epoch. */
  nbf?: number;
  /** `authenticated`, `anon` or `service_role` on Supabase tokens. */
  role?: string;
  /** Any other claim (`aud`, `email`, ...). */
  [claim: string]: unknown;
}

/**
 * A token that is refused: malformed, badly signed, signed by an unknown key, expired or not yet valid.
 *
 * @example Tell a refused token from other failures
 * ```ts
 * import { IdempotencyError } from "./errors.ts";
 * import { decodeJwt, JwtError } from "./jwt.ts";
 *
 * try {
 *   decodeJwt("not-a-jwt");
 * } catch (error) {
 *   console.assert(error instanceof JwtError && error instanceof IdempotencyError && error.status === 401);
 * }
 * ```
 */
export class JwtError extends IdempotencyError {
  /**
   * A refusal, with the code `AUTH_REQUIRED` (401).
   *
   * @param message Why the token was refused; safe to show the caller.
   * @param options.cause The underlying error, if any.
   */
  constructor(message: string, options: { cause?: unknown } = {}) {
    super("AUTH_REQUIRED", `Invalid authorization: ${message}`, options);
    this.name = "JwtError";
  }
}

/** One public key of a JWKS document (the members used here; others are ignored). */
interface Jwk {
  /** `EC` or `RSA`. */
  kty: string;
  /** The key id a token names in its header. */
  kid?: string;
  /** `ES256` or `RS256` when the document says. */
  alg?: string;
  /** `sig` when the document says. */
  use?: string;
  /** EC: `P-256`, and the coordinates. */
  crv?: string;
  x?: string;
  y?: string;
  /** RSA: modulus and exponent. */
  n?: string;
  e?: string;
}

/**
 * Options of {@link createJwtVerifier}.
 *
 * @example A verifier with a shorter cache
 * ```ts
 * import { createJwtVerifier } from "./jwt.ts";
 *
 * const verifier = createJwtVerifier({ jwksUrl: "https://project.supabase.co/auth/v1/.well-known/jwks.json", jwksCacheSeconds: 60 });
 * console.assert(typeof verifier.verify === "function");
 * ```
 */
export interface JwtVerifierOptions {
  /**
   * The legacy HS256 secret.
   * @default {Deno.env.get("SUPABASE_JWT_SECRET")} read at each call
   */
  secret?: string;
  /**
   * Where the project's public signing keys are published.
   * @default {`${Deno.env.get("SUPABASE_URL")}/auth/v1/.well-known/jwks.json`} read at each call
   */
  jwksUrl?: string;
  /**
   * How long a fetched key set is used before it is fetched again, in seconds.
   * @default {600}
   */
  jwksCacheSeconds?: number;
  /**
   * The least time between two fetches caused by an unknown `kid`, in seconds: a flood of tokens with made-up
   * key ids costs at most one fetch per this interval.
   * @default {30}
   */
  jwksRefetchSeconds?: number;
  /**
   * How the key set is fetched.
   * @default {globalThis.fetch}
   */
  fetch?: typeof fetch;
  /**
   * The clock, in epoch milliseconds (for `exp`, `nbf` and the cache).
   * @default {Date.now}
   */
  now?: () => number;
}

/**
 * Verifies tokens; created by {@link createJwtVerifier}.
 *
 * @example Depend on the interface
 * ```ts
 * import type { JwtVerifier } from "./jwt.ts";
 *
 * async function subOf(verifier: JwtVerifier, token: string): Promise<string | undefined> {
 *   return (await verifier.verify(token)).sub;
 * }
 * console.assert(typeof subOf === "function");
 * ```
 */
export interface JwtVerifier {
  /**
   * The claims of `token` once its signature, `exp` and `nbf` are checked.
   *
   * @param token A compact JWS (`header.payload.signature`).
   * @returns The verified claims.
   * @throws {JwtError} when the token is refused; an {@link IdempotencyError} `AUTH_UNAVAILABLE` when the
   * signing keys cannot be fetched.
   */
  verify(token: string): Promise<JwtClaims>;
  /**
   * Whether this verifier can check `token`'s algorithm (a secret for HS256, a JWKS URL for ES256/RS256).
   *
   * @param token A compact JWS.
   * @returns `false` when no key material for its algorithm is configured.
   * @throws {JwtError} when the token is not a JWT.
   */
  canVerify(token: string): boolean;
}

/**
 * The header and payload of a JWT, parsed but NOT verified.
 *
 * @example Look at a token's key id
 * ```ts
 * import { decodeJwt, type DecodedJwt } from "./jwt.ts";
 *
 * const part = (value: unknown) => btoa(JSON.stringify(value)).replace(/=+$/, "");
 * const jwt: DecodedJwt = decodeJwt(`${part({ alg: "ES256", kid: "k1" })}.${part({})}.`);
 * console.assert(jwt.header.kid === "k1");
 * ```
 */
export interface DecodedJwt {
  /** The JOSE header (`alg`, `kid`, `typ`). */
  header: { alg?: unknown; kid?: unknown; [name: string]: unknown };
  /** The claims. */
  claims: JwtClaims;
  /** `header.payload`, the bytes the signature covers. */
  signingInput: string;
  /** The signature bytes. */
  signature: Uint8Array<ArrayBuffer>;
}

/**
 * The Supabase path of a project's JWKS.
 *
 * @example A project's JWKS URL
 * ```ts
 * import { JWKS_PATH } from "./jwt.ts";
 *
 * console.assert(new URL(JWKS_PATH, "https://project.supabase.co").pathname === "/auth/v1/.well-known/jwks.json");
 * ```
 */
export const JWKS_PATH = "/auth/v1/.well-known/jwks.json";

/**
 * The token of `Authorization: Bearer <token>`.
 *
 * @param req The request.
 * @returns The token, or `null` without one.
 *
 * @example Read the bearer token
 * ```ts
 * import { bearerToken } from "./jwt.ts";
 *
 * const req = new Request("http://localhost/", { headers: { authorization: "Bearer abc" } });
 * console.assert(bearerToken(req) === "abc");
 * ```
 */
export function bearerToken(req: Request): string | null {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.get("authorization") ?? "");
  return match?.[1] ?? null;
}

/**
 * Splits and parses a JWT, NOT verifying it.
 *
 * @param token A compact JWS.
 * @returns Its header, claims, signing input and signature.
 * @throws {JwtError} when `token` is not three base64url parts whose first two are JSON objects.
 *
 * @example Read a token's header
 * ```ts
 * import { decodeJwt } from "./jwt.ts";
 *
 * const part = (value: unknown) => btoa(JSON.stringify(value)).replace(/=+$/, "");
 * const { header, claims } = decodeJwt(`${part({ alg: "HS256" })}.${part({ sub: "u1" })}.`);
 * console.assert(header.alg === "HS256" && claims.sub === "u1");
 * ```
 */
export function decodeJwt(token: string): DecodedJwt {
  const [header, payload, signature] = jwtParts(token);
  return {
    header: parseJsonPart(header),
    claims: parseJsonPart(payload) as JwtClaims,
    signingInput: `${header}.${payload}`,
    signature: base64UrlDecode(signature),
  };
}

/**
 * The claims of a JWT, NOT verified. Use only where the platform verified the token already
 * (`verify_jwt = true`); otherwise anyone can claim any `sub`.
 *
 * @param token A compact JWS.
 * @returns Its claims.
 * @throws {JwtError} when `token` is not a JWT.
 *
 * @example Read a sub the gateway verified
 * ```ts
 * import { decodeJwtClaimsUnverified } from "./jwt.ts";
 *
 * const part = (value: unknown) => btoa(JSON.stringify(value)).replace(/=+$/, "");
 * console.assert(decodeJwtClaimsUnverified(`${part({ alg: "ES256" })}.${part({ sub: "u1" })}.`).sub === "u1");
 * ```
 */
export function decodeJwtClaimsUnverified(token: string): JwtClaims {
  // the payload alone: decoding the header and signature too would only repeat the verifier's work
  return parseJsonPart(jwtParts(token)[1]) as JwtClaims;
}

/** The three parts of a compact JWS. */
function jwtParts(token: string): [string, string, string] {
  const parts = token.split(".");
  if (parts.length !== 3) throw new JwtError("the bearer token is not a JWT");
  return parts as [string, string, string];
}

/**
 * The claims of an HS256 JWT whose signature `secret` verifies (constant-time compare). Synchronous:
 * node:crypto's HMAC is about eight times cheaper here than WebCrypto's, which hops to a thread pool. It does
 * not check `exp`; {@link createJwtVerifier} does.
 *
 * @param token A compact JWS.
 * @param secret The HS256 secret.
 * @returns The claims.
 * @throws {JwtError} for a malformed token, another `alg`, or a bad signature.
 *
 * @example Verify a legacy token
 * ```ts
 * import { createHmac } from "node:crypto";
 * import { verifyHs256Jwt } from "./jwt.ts";
 *
 * const part = (value: unknown) => btoa(JSON.stringify(value)).replace(/=+$/, "");
 * const input = `${part({ alg: "HS256" })}.${part({ sub: "u1" })}`;
 * const signature = createHmac("sha256", "secret").update(input).digest("base64url");
 * console.assert(verifyHs256Jwt(`${input}.${signature}`, "secret").sub === "u1");
 * ```
 */
export function verifyHs256Jwt(token: string, secret: string): JwtClaims {
  return hs256Claims(decodeJwt(token), secret);
}

function hs256Claims(jwt: DecodedJwt, secret: string): JwtClaims {
  if (jwt.header.alg !== "HS256") throw new JwtError("the JWT is not signed with HS256");
  const expected = createHmac("sha256", secret).update(jwt.signingInput).digest();
  if (jwt.signature.byteLength !== expected.byteLength || !timingSafeEqual(jwt.signature, expected)) {
    throw new JwtError("the JWT signature is invalid");
  }
  return jwt.claims;
}

/** WebCrypto parameters of each asymmetric algorithm. */
const ASYMMETRIC = {
  ES256: {
    import: { name: "ECDSA", namedCurve: "P-256" },
    verify: { name: "ECDSA", hash: "SHA-256" },
  },
  RS256: {
    import: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
    verify: { name: "RSASSA-PKCS1-v1_5" },
  },
} as const;

/** A fetched key set: imported keys by `kid`, and when it was fetched. */
interface KeySet {
  keys: Map<string, { alg: keyof typeof ASYMMETRIC; key: CryptoKey }>;
  fetchedAt: number;
}

/**
 * A verifier for Supabase tokens: ES256 and RS256 through the project's JWKS, HS256 with the legacy secret.
 * It keeps the fetched key set (one per JWKS URL) for as long as it lives: create it once per isolate.
 *
 * @param options Key material, cache and clock.
 * @returns The verifier.
 *
 * @example Verify the caller's token
 * ```ts
 * import { bearerToken, createJwtVerifier } from "./jwt.ts";
 *
 * const verifier = createJwtVerifier({ jwksUrl: "https://project.supabase.co/auth/v1/.well-known/jwks.json" });
 * async function userOf(req: Request): Promise<string | undefined> {
 *   const token = bearerToken(req);
 *   return token === null ? undefined : (await verifier.verify(token)).sub;
 * }
 * ```
 */
export function createJwtVerifier(options: JwtVerifierOptions = {}): JwtVerifier {
  const now = options.now ?? Date.now;
  const cacheMs = (options.jwksCacheSeconds ?? 600) * 1000;
  const refetchMs = (options.jwksRefetchSeconds ?? 30) * 1000;
  const doFetch = options.fetch ?? globalThis.fetch;
  const sets = new Map<string, Promise<KeySet>>();
  const secret = () => options.secret ?? readEnv("SUPABASE_JWT_SECRET");
  const jwksUrl = () => options.jwksUrl ?? defaultJwksUrl();

  /**
   * The key set of `url`: the cached one, unless it is `stale` (then fetched again). Concurrent callers that
   * found the same set stale share one fetch.
   */
  function keySet(url: string, stale?: Promise<KeySet>): Promise<KeySet> {
    const cached = sets.get(url);
    if (cached && cached !== stale) return cached;
    const fetching = fetchKeySet(doFetch, url, now());
    sets.set(url, fetching);
    // a failed fetch is not cached: the next token tries again
    fetching.catch(() => sets.get(url) === fetching && sets.delete(url));
    return fetching;
  }

  async function publicKey(kid: string, alg: keyof typeof ASYMMETRIC) {
    const url = jwksUrl();
    if (url === undefined) throw new JwtError(`no JWKS URL is configured to verify ${alg} tokens`);
    let pending = keySet(url);
    let set = await pending;
    if (now() - set.fetchedAt >= cacheMs) set = await (pending = keySet(url, pending));
    let found = set.keys.get(kid);
    // an unknown kid: the keys may have rotated since the set was fetched
    if (!found && now() - set.fetchedAt >= refetchMs) found = (await keySet(url, pending)).keys.get(kid);
    if (!found) throw new JwtError("the JWT is signed by an unknown key (kid)");
    if (found.alg !== alg) throw new JwtError("the JWT's alg does not match its key");
    return found.key;
  }

  async function verifySignature(jwt: DecodedJwt): Promise<void> {
    const alg = jwt.header.alg;
    if (alg === "HS256") {
      const key = secret();
      if (key === undefined) throw new JwtError("no JWT secret is configured to verify HS256 tokens");
      hs256Claims(jwt, key);
      return;
    }
    if (alg !== "ES256" && alg !== "RS256") {
      throw new JwtError(`the JWT's alg ${String(alg)} is not accepted`);
    }
    if (typeof jwt.header.kid !== "string") throw new JwtError("the JWT has no key id (kid)");
    const key = await publicKey(jwt.header.kid, alg);
    const valid = await crypto.subtle.verify(
      ASYMMETRIC[alg].verify,
      key,
      jwt.signature,
      new TextEncoder().encode(jwt.signingInput),
    );
    if (!valid) throw new JwtError("the JWT signature is invalid");
  }

  return {
    async verify(token) {
      const jwt = decodeJwt(token);
      await verifySignature(jwt);
      checkTimes(jwt.claims, now());
      return jwt.claims;
    },
    canVerify(token) {
      const alg = parseJsonPart(jwtParts(token)[0]).alg; // the header alone: `verify` decodes the rest
      if (alg === "HS256") return secret() !== undefined;
      if (alg === "ES256" || alg === "RS256") return jwksUrl() !== undefined;
      return false;
    },
  };
}

/**
 * Rejects a token past its `exp` or before its `nbf` (`nowMs` in epoch milliseconds).
 *
 * @param claims The claims.
 * @param nowMs The clock, in epoch milliseconds.
 * @throws {JwtError} when the token has expired or is not valid yet.
 * @example Check the times of decoded claims
 * ```ts
 * import { checkTimes } from "./jwt.ts";
 *
 * checkTimes({ exp: 2_000_000_000 }, Date.UTC(2030, 0, 1)); // valid until 2033
 * ```
 */
export function checkTimes(claims: JwtClaims, nowMs: number): void {
  if (claims.exp !== undefined && (typeof claims.exp !== "number" || claims.exp * 1000 <= nowMs)) {
    throw new JwtError("the JWT has expired");
  }
  if (claims.nbf !== undefined && (typeof claims.nbf !== "number" || claims.nbf * 1000 > nowMs)) {
    throw new JwtError("the JWT is not valid yet");
  }
}

async function fetchKeySet(doFetch: typeof fetch, url: string, fetchedAt: number): Promise<KeySet> {
  let document: unknown;
  try {
    const res = await doFetch(url, { headers: { accept: "application/json" } });
    if (!res.ok) {
      await res.body?.cancel();
      throw new Error(`HTTP ${res.status}`);
    }
    document = await res.json();
  } catch (error) {
    // an outage, not a bad token: 503 with Retry-After, so the client retries instead of signing in again
    throw new IdempotencyError("AUTH_UNAVAILABLE", `The signing keys could not be fetched from ${url}`, {
      retryAfterSeconds: 1,
      cause: error,
    });
  }
  const keys: KeySet["keys"] = new Map();
  const list = (document as { keys?: unknown })?.keys;
  for (const jwk of Array.isArray(list) ? list as Jwk[] : []) {
    const alg = algorithmOf(jwk);
    if (alg === undefined || typeof jwk.kid !== "string") continue;
    try {
      const key = await crypto.subtle.importKey("jwk", jwk as JsonWebKey, ASYMMETRIC[alg].import, false, [
        "verify",
      ]);
      keys.set(jwk.kid, { alg, key });
    } catch {
      // a key this runtime cannot import verifies nothing; the others still do
    }
  }
  return { keys, fetchedAt };
}

/** The algorithm a JWK is for, or `undefined` for keys that do not sign ES256/RS256 tokens. */
function algorithmOf(jwk: Jwk): keyof typeof ASYMMETRIC | undefined {
  if (jwk.use !== undefined && jwk.use !== "sig") return undefined;
  if (jwk.kty === "EC" && jwk.crv === "P-256" && (jwk.alg ?? "ES256") === "ES256") return "ES256";
  if (jwk.kty === "RSA" && (jwk.alg ?? "RS256") === "RS256") return "RS256";
  return undefined;
}

/** `<SUPABASE_URL>/auth/v1/.well-known/jwks.json`, or `undefined` when `SUPABASE_URL` is unset. */
function defaultJwksUrl(): string | undefined {
  const base = readEnv("SUPABASE_URL");
  return base === undefined ? undefined : `${base.replace(/\/+$/, "")}${JWKS_PATH}`;
}

/** Stateless between calls (`decode` without `stream`), so one instance serves every token. */
const UTF8 = new TextDecoder("utf-8", { fatal: true });

/** One base64url JSON part of a JWT, which must be an object. */
function parseJsonPart(part: string): Record<string, unknown> {
  try {
    const value = JSON.parse(UTF8.decode(base64UrlDecode(part)));
    if (value !== null && typeof value === "object" && !Array.isArray(value)) return value;
  } catch {
    // falls through to the error below
  }
  throw new JwtError("the bearer token is not a JWT");
}

function base64UrlDecode(text: string): Uint8Array<ArrayBuffer> {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) throw new JwtError("the bearer token is not a JWT");
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  let binary: string;
  try {
    binary = atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, "="));
  } catch {
    throw new JwtError("the bearer token is not a JWT");
  }
  // Only the canonical spelling is accepted: base64url's last character carries unused bits, so several
  // spellings decode to the same bytes, and a changed token must never verify (a fast-check finding).
  if (btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "") !== text) {
    throw new JwtError("the bearer token is not a JWT");
  }
  // a plain loop: `Uint8Array.from(binary, mapFn)` walks the string's iterator with a call per character,
  // twenty times slower, and every authenticated request decodes its token's parts
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** An environment variable, or `undefined` when it is unset, empty, or env access is not permitted. */
function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}
