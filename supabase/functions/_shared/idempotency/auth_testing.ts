/** Test support (imported by tests only, never by a function): JWTs signed with WebCrypto. */

const b64url = (bytes: Uint8Array) =>
  btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

/** One base64url JSON part of a JWT. */
export const jsonPart = (value: unknown): string => b64url(new TextEncoder().encode(JSON.stringify(value)));

/** An HS256 JWT of `claims` signed with `secret`; `exp` is an hour from now unless `claims` sets it. */
export async function signHs256(claims: Record<string, unknown>, secret: string): Promise<string> {
  const payload = { exp: Math.floor(Date.now() / 1000) + 3600, ...claims };
  const input = `${jsonPart({ alg: "HS256", typ: "JWT" })}.${jsonPart(payload)}`;
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const signature = await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(input));
  return `${input}.${b64url(new Uint8Array(signature))}`;
}

/** An asymmetric signing key as a Supabase project has one: the private key, and its public JWK. */
export interface SigningKey {
  /** `ES256` or `RS256`. */
  alg: "ES256" | "RS256";
  /** The key id tokens name. */
  kid: string;
  /** Signs. */
  privateKey: CryptoKey;
  /** What the project's JWKS publishes. */
  publicJwk: JsonWebKey & { kid: string; alg: string; use: string };
}

const PARAMS = {
  ES256: { generate: { name: "ECDSA", namedCurve: "P-256" }, sign: { name: "ECDSA", hash: "SHA-256" } },
  RS256: {
    generate: {
      name: "RSASSA-PKCS1-v1_5",
      modulusLength: 2048,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: "SHA-256",
    },
    sign: { name: "RSASSA-PKCS1-v1_5" },
  },
} as const;

/** A new key pair for `alg`, named `kid` (random unless given). */
export async function generateSigningKey(
  alg: "ES256" | "RS256",
  kid: string = crypto.randomUUID(),
): Promise<SigningKey> {
  const pair = await crypto.subtle.generateKey(PARAMS[alg].generate, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const jwk = await crypto.subtle.exportKey("jwk", pair.publicKey);
  return { alg, kid, privateKey: pair.privateKey, publicJwk: { ...jwk, kid, alg, use: "sig" } };
}

/** A JWKS document of `keys`' public halves. */
export function jwks(...keys: SigningKey[]): { keys: SigningKey["publicJwk"][] } {
  return { keys: keys.map((key) => key.publicJwk) };
}

/**
 * A JWT of `claims` signed with `key` (its `alg` and `kid` in the header, unless `header` overrides them);
 * `exp` is an hour from now unless `claims` sets it.
 */
export async function signAsymmetric(
  claims: Record<string, unknown>,
  key: SigningKey,
  header: Record<string, unknown> = {},
): Promise<string> {
  const payload = { exp: Math.floor(Date.now() / 1000) + 3600, ...claims };
  const input = `${jsonPart({ alg: key.alg, typ: "JWT", kid: key.kid, ...header })}.${jsonPart(payload)}`;
  const signature = await crypto.subtle.sign(
    PARAMS[key.alg].sign,
    key.privateKey,
    new TextEncoder().encode(input),
  );
  return `${input}.${b64url(new Uint8Array(signature))}`;
}
