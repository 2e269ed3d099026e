import assert from "node:assert/strict";
import { callerFromUserId, createJwtCallerResolver, createJwtUserResolver } from "./auth.ts";
import { generateSigningKey, jsonPart, jwks, signAsymmetric, signHs256 } from "./auth_testing.ts";
import { IdempotencyError } from "./errors.ts";
import { bearerToken, decodeJwtClaimsUnverified, verifyHs256Jwt } from "./jwt.ts";

const SECRET = "test-secret-with-at-least-32-characters!!";
const USER = "8d0fd2b3-9ca3-4a1a-9b11-3a2cde0f1e52";

/** A token signed with the test secret unless another is given. */
const sign = (claims: Record<string, unknown>, secret = SECRET) => signHs256(claims, secret);

function bearer(token: string): Request {
  return new Request("http://localhost/fn", { headers: { Authorization: `Bearer ${token}` } });
}

async function assertAuthRequired(promise: Promise<unknown>, message: RegExp) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof IdempotencyError);
    assert.equal(error.code, "AUTH_REQUIRED");
    assert.equal(error.status, 401);
    assert.match(error.message, message);
    return true;
  });
}

Deno.test("auth: a valid HS256 token gives its sub", async () => {
  const resolve = createJwtUserResolver({ jwtSecret: SECRET });
  assert.equal(await resolve(bearer(await sign({ sub: USER, role: "authenticated" }))), USER);
});

Deno.test("auth: a token signed with another secret is 401", async () => {
  const resolve = createJwtUserResolver({ jwtSecret: SECRET });
  const forged = await sign({ sub: USER }, "another-secret-another-secret-another!!");
  await assertAuthRequired(Promise.resolve(resolve(bearer(forged))), /signature/);
});

Deno.test("auth: a token whose payload was changed after signing is 401", async () => {
  const [header, , signature] = (await sign({ sub: USER })).split(".");
  const tampered = `${header}.${jsonPart({ sub: "someone-else" })}.${signature}`;
  await assertAuthRequired(Promise.resolve().then(() => verifyHs256Jwt(tampered, SECRET)), /signature/);
});

Deno.test("auth: an expired token is 401", async () => {
  const resolve = createJwtUserResolver({ jwtSecret: SECRET });
  const expired = await sign({ sub: USER, exp: Math.floor(Date.now() / 1000) - 10 });
  await assertAuthRequired(Promise.resolve(resolve(bearer(expired))), /expired/);
});

Deno.test("auth: expiry follows the injected clock", async () => {
  const token = await sign({ sub: USER, exp: 2_000_000_000 });
  const before = createJwtUserResolver({ jwtSecret: SECRET, now: () => 1_999_999_999_000 });
  const after = createJwtUserResolver({ jwtSecret: SECRET, now: () => 2_000_000_000_000 });
  assert.equal(await before(bearer(token)), USER);
  await assertAuthRequired(Promise.resolve(after(bearer(token))), /expired/);
});

Deno.test("auth: anon and service_role keys (no sub) give null", async () => {
  const resolve = createJwtUserResolver({ jwtSecret: SECRET });
  assert.equal(await resolve(bearer(await sign({ role: "anon", iss: "supabase" }))), null);
  assert.equal(await resolve(bearer(await sign({ role: "service_role" }))), null);
});

Deno.test("auth: no Authorization, or not a bearer token, gives null", async () => {
  const resolve = createJwtUserResolver({ jwtSecret: SECRET });
  assert.equal(await resolve(new Request("http://localhost/fn")), null);
  assert.equal(
    await resolve(new Request("http://localhost/fn", { headers: { Authorization: "Basic dTpw" } })),
    null,
  );
  assert.equal(bearerToken(bearer("abc.def.ghi")), "abc.def.ghi");
});

Deno.test("auth: garbage and alg=none tokens are 401", async () => {
  const resolve = createJwtUserResolver({ jwtSecret: SECRET });
  await assertAuthRequired(Promise.resolve(resolve(bearer("not-a-jwt"))), /not a JWT/);
  await assertAuthRequired(Promise.resolve(resolve(bearer("a.b.c"))), /not a JWT/);
  const unsigned = `${jsonPart({ alg: "none" })}.${jsonPart({ sub: USER })}.`;
  await assertAuthRequired(Promise.resolve(resolve(bearer(unsigned))), /alg none/);
});

Deno.test("auth: without a secret, claims are decoded unverified (the gateway verifies)", async () => {
  const forged = await sign({ sub: USER }, "whatever-secret-whatever-secret-whatever");
  assert.equal(decodeJwtClaimsUnverified(forged).sub, USER);
  const previous = Deno.env.get("SUPABASE_JWT_SECRET");
  Deno.env.delete("SUPABASE_JWT_SECRET");
  try {
    assert.equal(await createJwtUserResolver()(bearer(forged)), USER);
  } finally {
    if (previous !== undefined) Deno.env.set("SUPABASE_JWT_SECRET", previous);
  }
});

Deno.test("auth: the secret defaults to SUPABASE_JWT_SECRET, read when a request comes", async () => {
  const previous = Deno.env.get("SUPABASE_JWT_SECRET");
  const resolve = createJwtUserResolver();
  Deno.env.set("SUPABASE_JWT_SECRET", SECRET);
  try {
    assert.equal(await resolve(bearer(await sign({ sub: USER }))), USER);
    const forged = await sign({ sub: USER }, "another-secret-another-secret-another!!");
    await assertAuthRequired(Promise.resolve(resolve(bearer(forged))), /signature/);
  } finally {
    if (previous === undefined) Deno.env.delete("SUPABASE_JWT_SECRET");
    else Deno.env.set("SUPABASE_JWT_SECRET", previous);
  }
});

Deno.test("auth: the caller resolver tells users, the service and anonymous callers apart", async () => {
  const resolve = createJwtCallerResolver({ jwtSecret: SECRET });
  assert.deepEqual(await resolve(bearer(await sign({ sub: USER, role: "authenticated" }))), {
    kind: "user",
    userId: USER,
  });
  assert.deepEqual(await resolve(bearer(await sign({ role: "service_role" }))), { kind: "service" });
  assert.deepEqual(await resolve(bearer(await sign({ role: "anon" }))), { kind: "anonymous" });
  assert.deepEqual(await resolve(new Request("http://localhost/fn")), { kind: "anonymous" });
});

Deno.test("auth: a forged service_role token is refused, not treated as the service", async () => {
  const resolve = createJwtCallerResolver({ jwtSecret: SECRET });
  const forged = await sign({ role: "service_role" }, "another-secret-with-at-least-32-characters");
  await assertAuthRequired(resolve(bearer(forged)), /signature/);
});

Deno.test("auth: a custom getUserId maps an id to a user and null to anonymous", async () => {
  const req = new Request("http://localhost/fn");
  assert.deepEqual(await callerFromUserId(() => USER)(req), { kind: "user", userId: USER });
  assert.deepEqual(await callerFromUserId(() => null)(req), { kind: "anonymous" });
});

Deno.test("auth: with signing keys, an ES256 user token is verified against the project's JWKS", async () => {
  const key = await generateSigningKey("ES256");
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => Response.json(jwks(key)),
  );
  try {
    const jwksUrl = `http://127.0.0.1:${server.addr.port}/auth/v1/.well-known/jwks.json`;
    const resolve = createJwtCallerResolver({ jwtSecret: SECRET, jwksUrl });
    assert.deepEqual(await resolve(bearer(await signAsymmetric({ sub: USER }, key))), {
      kind: "user",
      userId: USER,
    });
    // the legacy service_role key (HS256) keeps working beside the signing keys
    assert.deepEqual(await resolve(bearer(await sign({ role: "service_role" }))), { kind: "service" });
    const stranger = await generateSigningKey("ES256");
    await assertAuthRequired(resolve(bearer(await signAsymmetric({ sub: USER }, stranger))), /unknown key/);
  } finally {
    await server.shutdown();
  }
});

Deno.test("auth: an ES256 token is refused where only a secret is configured (no JWKS)", async () => {
  const previous = Deno.env.get("SUPABASE_URL");
  Deno.env.delete("SUPABASE_URL");
  try {
    const resolve = createJwtCallerResolver({ jwtSecret: SECRET });
    const token = await signAsymmetric({ sub: USER }, await generateSigningKey("ES256"));
    await assertAuthRequired(resolve(bearer(token)), /not signed with HS256/);
  } finally {
    if (previous !== undefined) Deno.env.set("SUPABASE_URL", previous);
  }
});

Deno.test("auth: signing keys that cannot be fetched are an outage (503 AUTH_UNAVAILABLE), not a bad token", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close(); // nothing listens there now
  const resolve = createJwtCallerResolver({
    jwksUrl: `http://127.0.0.1:${port}/auth/v1/.well-known/jwks.json`,
  });
  const token = await signAsymmetric({ sub: USER }, await generateSigningKey("ES256"));
  await assert.rejects(resolve(bearer(token)), (error: unknown) => {
    assert.ok(error instanceof IdempotencyError);
    assert.equal(error.code, "AUTH_UNAVAILABLE");
    assert.equal(error.status, 503);
    assert.equal(error.retryAfterSeconds, 1);
    return true;
  });
});
