/** Test support: HS256 tokens signed with the local stack's JWT secret, as Supabase issues them. */

/** The local stack's JWT secret (Supabase's local default). */
export const JWT_SECRET = Deno.env.get("SUPABASE_JWT_SECRET") ??
  "super-secret-jwt-token-with-at-least-32-characters-long";

const b64url = (bytes: Uint8Array) =>
  btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const encodeJson = (value: unknown) => b64url(new TextEncoder().encode(JSON.stringify(value)));

/** Signs `claims` (an hour's `exp` added unless given) with `secret`. */
export async function signJwt(claims: Record<string, unknown>, secret = JWT_SECRET): Promise<string> {
  const body = { exp: Math.floor(Date.now() / 1000) + 3600, ...claims };
  const input = `${encodeJson({ alg: "HS256", typ: "JWT" })}.${encodeJson(body)}`;
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const signature = new Uint8Array(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(input)));
  return `${input}.${b64url(signature)}`;
}
