/** Test support (imported by tests only, never by a function): HS256 JWTs signed with WebCrypto. */

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
