import assert from "node:assert/strict";
import {
  generateSigningKey,
  jsonPart,
  jwks,
  signAsymmetric,
  signHs256,
  type SigningKey,
} from "./auth_testing.ts";
import { IdempotencyError } from "./errors.ts";
import { createJwtVerifier, decodeJwt, JwtError, type JwtVerifierOptions } from "./jwt.ts";

const URL_ = "https://project.test/auth/v1/.well-known/jwks.json";
const SECRET = "jwt-test-secret-with-at-least-32-characters";

/** A JWKS endpoint whose key set a test can change, counting its fetches. */
function jwksEndpoint(...keys: SigningKey[]) {
  const state = { keys, fetches: 0, down: false };
  const fetch = (input: string | URL | Request): Promise<Response> => {
    assert.equal(String(input), URL_);
    state.fetches++;
    if (state.down) return Promise.resolve(new Response("down", { status: 503 }));
    return Promise.resolve(Response.json(jwks(...state.keys)));
  };
  return { state, fetch: fetch as typeof globalThis.fetch };
}

function verifierFor(endpoint: ReturnType<typeof jwksEndpoint>, options: JwtVerifierOptions = {}) {
  return createJwtVerifier({ jwksUrl: URL_, fetch: endpoint.fetch, secret: SECRET, ...options });
}

async function refused(promise: Promise<unknown>, message: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof JwtError, "a JwtError");
    assert.ok(error instanceof IdempotencyError, "within the one error family");
    assert.equal(error.code, "AUTH_REQUIRED");
    assert.equal(error.status, 401);
    assert.match(error.message, message);
    return true;
  });
}

for (const alg of ["ES256", "RS256"] as const) {
  Deno.test(`jwt: ${alg} tokens verify against the project's JWKS`, async () => {
    const key = await generateSigningKey(alg);
    const verifier = verifierFor(jwksEndpoint(key));
    const claims = await verifier.verify(await signAsymmetric({ sub: "user-1", role: "authenticated" }, key));
    assert.equal(claims.sub, "user-1");
  });

  Deno.test(`jwt: an ${alg} token signed by another key with the same kid is refused`, async () => {
    const published = await generateSigningKey(alg, "kid-1");
    const attacker = await generateSigningKey(alg, "kid-1");
    const verifier = verifierFor(jwksEndpoint(published));
    await refused(verifier.verify(await signAsymmetric({ sub: "user-1" }, attacker)), /signature is invalid/);
  });
}

Deno.test("jwt: a payload changed after signing is refused", async () => {
  const key = await generateSigningKey("ES256");
  const [header, , signature] = (await signAsymmetric({ sub: "user-1" }, key)).split(".");
  const verifier = verifierFor(jwksEndpoint(key));
  await refused(verifier.verify(`${header}.${jsonPart({ sub: "admin" })}.${signature}`), /signature/);
});

Deno.test("jwt: the key set is fetched once and cached across tokens", async () => {
  const key = await generateSigningKey("ES256");
  const endpoint = jwksEndpoint(key);
  const verifier = verifierFor(endpoint);
  const tokens = await Promise.all([1, 2, 3].map((i) => signAsymmetric({ sub: `user-${i}` }, key)));
  await Promise.all(tokens.map((token) => verifier.verify(token)));
  await verifier.verify(tokens[0]!);
  assert.equal(endpoint.state.fetches, 1);
});

Deno.test("jwt: a rotated key is picked up; an unknown kid is refused and refetches at most once per interval", async () => {
  let now = 1_000_000;
  const old = await generateSigningKey("ES256", "old");
  const next = await generateSigningKey("RS256", "next");
  const endpoint = jwksEndpoint(old);
  const verifier = verifierFor(endpoint, { now: () => now, jwksRefetchSeconds: 30 });
  await verifier.verify(await signAsymmetric({ sub: "u" }, old));
  assert.equal(endpoint.state.fetches, 1);

  // the project rotates: the new key is published, and a token signed with it arrives 31 s later
  endpoint.state.keys = [old, next];
  now += 31_000;
  assert.equal((await verifier.verify(await signAsymmetric({ sub: "u" }, next))).sub, "u");
  assert.equal(endpoint.state.fetches, 2, "one refetch for the new kid");

  // a burst of tokens of another new key: one refetch for all of them
  const third = await generateSigningKey("ES256", "third");
  endpoint.state.keys = [old, next, third];
  now += 31_000;
  const burst = await Promise.all([1, 2, 3, 4].map((i) => signAsymmetric({ sub: `u${i}` }, third)));
  await Promise.all(burst.map((token) => verifier.verify(token)));
  assert.equal(endpoint.state.fetches, 3, "one refetch for the whole burst");

  // a made-up kid: refused; within the interval it costs no further fetch
  const stranger = await generateSigningKey("ES256", "stranger");
  await refused(verifier.verify(await signAsymmetric({ sub: "u" }, stranger)), /unknown key/);
  await refused(verifier.verify(await signAsymmetric({ sub: "u" }, stranger)), /unknown key/);
  assert.equal(endpoint.state.fetches, 3);
  // after the interval it refetches once, and is still refused
  now += 31_000;
  await refused(verifier.verify(await signAsymmetric({ sub: "u" }, stranger)), /unknown key/);
  assert.equal(endpoint.state.fetches, 4);
});

Deno.test("jwt: the key set is refetched after jwksCacheSeconds, so a retired key stops verifying", async () => {
  let now = 1_000_000;
  const retired = await generateSigningKey("ES256", "retired");
  const endpoint = jwksEndpoint(retired);
  const verifier = verifierFor(endpoint, { now: () => now, jwksCacheSeconds: 600 });
  const token = await signAsymmetric({ sub: "u", exp: 2_000_000 }, retired);
  await verifier.verify(token);
  endpoint.state.keys = [];
  now += 601_000;
  await refused(verifier.verify(token), /unknown key/);
  assert.equal(endpoint.state.fetches, 2);
});

Deno.test("jwt: an unreachable JWKS is a 503 AUTH_UNAVAILABLE (not cached), and the next token fetches again", async () => {
  const key = await generateSigningKey("ES256");
  const endpoint = jwksEndpoint(key);
  endpoint.state.down = true;
  const verifier = verifierFor(endpoint);
  const token = await signAsymmetric({ sub: "u" }, key);
  await assert.rejects(verifier.verify(token), (error: unknown) => {
    assert.ok(error instanceof IdempotencyError && !(error instanceof JwtError));
    assert.equal(error.code, "AUTH_UNAVAILABLE");
    assert.equal(error.status, 503);
    assert.equal(error.retryAfterSeconds, 1);
    return true;
  });
  endpoint.state.down = false;
  assert.equal((await verifier.verify(token)).sub, "u");
  assert.equal(endpoint.state.fetches, 2);
});

Deno.test("jwt: a token whose alg does not match its key is refused", async () => {
  const key = await generateSigningKey("ES256", "k");
  const verifier = verifierFor(jwksEndpoint(key));
  await refused(verifier.verify(await signAsymmetric({ sub: "u" }, key, { alg: "RS256" })), /does not match/);
});

Deno.test("jwt: HS256 with the legacy secret still verifies; other algs and no kid are refused", async () => {
  const key = await generateSigningKey("ES256");
  const verifier = verifierFor(jwksEndpoint(key));
  assert.equal((await verifier.verify(await signHs256({ sub: "legacy" }, SECRET))).sub, "legacy");
  await refused(
    verifier.verify(await signHs256({ sub: "x" }, "another-secret-another-secret-another!")),
    /signature/,
  );
  await refused(verifier.verify(`${jsonPart({ alg: "none" })}.${jsonPart({ sub: "x" })}.`), /alg none/);
  await refused(verifier.verify(await signAsymmetric({ sub: "x" }, key, { kid: undefined })), /kid/);
});

Deno.test("jwt: exp and nbf are checked after the signature", async () => {
  const key = await generateSigningKey("ES256");
  const verifier = verifierFor(jwksEndpoint(key), { now: () => 2_000_000_000_000 });
  await refused(verifier.verify(await signAsymmetric({ sub: "u", exp: 1_999_999_999 }, key)), /expired/);
  await refused(
    verifier.verify(await signAsymmetric({ sub: "u", exp: 2_100_000_000, nbf: 2_000_000_001 }, key)),
    /not valid yet/,
  );
});

Deno.test("jwt: the JWKS URL defaults to SUPABASE_URL's, read when a token comes", async () => {
  const previous = Deno.env.get("SUPABASE_URL");
  try {
    Deno.env.delete("SUPABASE_URL");
    const verifier = createJwtVerifier({ fetch: jwksEndpoint().fetch });
    const token = await signAsymmetric({ sub: "u" }, await generateSigningKey("ES256"));
    assert.equal(verifier.canVerify(token), false);
    await refused(verifier.verify(token), /no JWKS URL/);
    Deno.env.set("SUPABASE_URL", "https://project.test/");
    assert.equal(verifier.canVerify(token), true);
    await refused(verifier.verify(token), /unknown key/); // fetched from URL_ (the endpoint asserts it)
  } finally {
    if (previous === undefined) Deno.env.delete("SUPABASE_URL");
    else Deno.env.set("SUPABASE_URL", previous);
  }
});

Deno.test("jwt: malformed tokens are refused as not a JWT", () => {
  for (const token of ["x", "a.b.c", "a.b", `${jsonPart([1])}.${jsonPart({})}.`]) {
    assert.throws(
      () => decodeJwt(token),
      (error: unknown) => error instanceof JwtError && /not a JWT/.test(error.message),
    );
  }
});
