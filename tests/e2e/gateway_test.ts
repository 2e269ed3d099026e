/**
 * The functions gateway: over HTTP against the running one (health, routing, JWT checks, CORS), and its
 * config.toml reader and JWT verifier in process.
 */

import assert from "node:assert/strict";
import { ConfigError, parseFunctionSettings, settingsFor } from "../../scripts/gateway/config.ts";
import { createJwtVerifier, JwtError } from "../../scripts/gateway/jwt.ts";
import { createGatewayHandler, functionNameOf } from "../../scripts/gateway/server.ts";
import { JWT_SECRET, signJwt } from "../support/jwt.ts";
import { API_URL, callFunction, countRows, documentBody, e2eTest, keyRow } from "./support.ts";

/** base64url of a JSON value, as a JWT part. */
const part = (value: unknown) =>
  btoa(JSON.stringify(value)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

const FUNCTIONS = ["generate-training-data", "process-document", "start-training"];

Deno.test("GET /health answers 200 JSON listing the deployed functions", async () => {
  const res = await fetch(`${API_URL}/health`);
  const body = await res.json();
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /application\/json/);
  assert.equal(body.status, "ok");
  for (const name of FUNCTIONS) assert.ok(body.functions.includes(name), `${name} is not served`);
  assert.ok(!body.functions.includes("_shared"));
});

Deno.test("an unknown function or path is a 404 JSON error", async () => {
  const token = await signJwt({ role: "service_role" });
  for (const path of ["/functions/v1/no-such-function", "/functions/v1/", "/rest/v1/documents"]) {
    const res = await fetch(`${API_URL}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
    });
    const body = await res.json();
    assert.equal(res.status, 404, path);
    assert.equal(body.error.code, "NOT_FOUND", path);
  }
});

e2eTest(
  "a missing or invalid JWT is a 401 JSON error and nothing runs or is stored",
  async ({ sql, newUser, newKey }) => {
    const user = await newUser();
    const [header, payload] = user.token.split(".");
    const tokens: Record<string, string | undefined> = {
      "no token": undefined,
      "not a JWT": "not-a-jwt",
      "tampered payload": `${header}.${part({ role: "service_role", exp: 9999999999 })}.${
        user.token.split(".")[2]
      }`,
      "another secret": await signJwt({ sub: user.id, role: "authenticated" }, "x".repeat(40)),
      "expired": await signJwt({
        sub: user.id,
        role: "authenticated",
        exp: Math.floor(Date.now() / 1000) - 10,
      }),
      "alg none": `${part({ alg: "none", typ: "JWT" })}.${payload}.`,
    };
    for (const [what, token] of Object.entries(tokens)) {
      const key = newKey();
      const res = await callFunction("process-document", { token, key, body: documentBody() });
      assert.equal(res.status, 401, what);
      assert.equal(res.body.error.code, token === undefined ? "MISSING_AUTHORIZATION" : "INVALID_JWT", what);
      assert.equal(typeof res.body.error.message, "string");
      assert.equal(await keyRow(sql, key, user.id), undefined, `${what}: a key was stored`);
    }
    assert.equal(await countRows(sql, "documents", user.id), 0);
  },
);

Deno.test("a CORS preflight is answered 204 without a JWT, allowing both key headers", async () => {
  const res = await fetch(`${API_URL}/functions/v1/process-document`, {
    method: "OPTIONS",
    headers: {
      origin: "http://localhost:3000",
      "access-control-request-method": "POST",
      "access-control-request-headers": "authorization, content-type, idempotency-key",
    },
  });
  await res.body?.cancel();
  assert.equal(res.status, 204);
  assert.equal(res.headers.get("access-control-allow-origin"), "*");
  const allowed = (res.headers.get("access-control-allow-headers") ?? "").toLowerCase().split(/\s*,\s*/);
  for (const h of ["authorization", "content-type", "apikey", "idempotency-key", "x-idempotency-key"]) {
    assert.ok(allowed.includes(h), `${h} is not allowed`);
  }
  assert.match(res.headers.get("access-control-allow-methods") ?? "", /POST/);
  assert.match(
    (res.headers.get("access-control-expose-headers") ?? "").toLowerCase(),
    /x-idempotency-replay/,
  );
});

e2eTest("function responses expose X-Idempotency-Replay to browsers", async ({ newUser, newKey }) => {
  const user = await newUser();
  const res = await callFunction("process-document", {
    token: user.token,
    key: newKey(),
    body: documentBody(),
    headers: { origin: "http://localhost:3000" },
  });
  assert.equal(res.status, 201);
  assert.ok(res.headers.get("access-control-allow-origin"));
  assert.match(
    (res.headers.get("access-control-expose-headers") ?? "").toLowerCase(),
    /x-idempotency-replay/,
  );
  // and an error the gateway itself answers is readable too
  const denied = await callFunction("process-document", { body: documentBody() });
  assert.equal(denied.status, 401);
  assert.equal(denied.headers.get("access-control-allow-origin"), "*");
});

e2eTest("a wrong method is a 405 with Allow, and the function writes nothing", async ({ sql, newUser }) => {
  const user = await newUser();
  for (const name of FUNCTIONS) {
    const res = await callFunction(name, { token: user.token, method: "GET" });
    assert.equal(res.status, 405, name);
    assert.equal(res.body.error.code, "METHOD_NOT_ALLOWED", name);
    assert.equal(res.headers.get("allow"), "POST", name);
  }
  assert.equal(await countRows(sql, "documents", user.id), 0);
});

Deno.test("config.toml: verify_jwt per [functions.<name>] block, true by default", () => {
  const settings = parseFunctionSettings(`
# comment
project_id = "x"
[api]
port = 54321
verify_jwt = false   # not a function block: ignored

[functions.open-hook]
verify_jwt = false # webhooks sign their own requests
import_map = "./import_map.json#x"

[functions."quoted_name"]
verify_jwt = true

[functions.no-setting]
[functions.open-hook.extra]
verify_jwt = true
`);
  assert.deepEqual(settingsFor(settings, "open-hook"), { verifyJwt: false });
  assert.deepEqual(settingsFor(settings, "quoted_name"), { verifyJwt: true });
  assert.deepEqual(settingsFor(settings, "no-setting"), { verifyJwt: true });
  assert.deepEqual(settingsFor(settings, "never-mentioned"), { verifyJwt: true });
  assert.throws(() => parseFunctionSettings("[functions.a]\nverify_jwt = yes"), ConfigError);
  assert.throws(() => parseFunctionSettings("[functions.a]\nnot toml"), ConfigError);
});

Deno.test("config.toml: the project's own file has every function verify JWTs", async () => {
  const settings = parseFunctionSettings(
    await Deno.readTextFile(new URL("../../supabase/config.toml", import.meta.url)),
  );
  for (const name of FUNCTIONS) assert.equal(settingsFor(settings, name).verifyJwt, true, name);
});

Deno.test("JWT verifier: signature, algorithm, exp and nbf", async () => {
  const now = 1_900_000_000;
  const verifier = await createJwtVerifier(JWT_SECRET, () => now);
  const good = await signJwt({ role: "anon", exp: now + 60 });
  assert.equal((await verifier.verify(good)).role, "anon");
  const refuses = async (token: string, message: RegExp) =>
    await assert.rejects(
      verifier.verify(token),
      (e: unknown) => e instanceof JwtError && message.test(e.message),
    );
  await refuses(await signJwt({ role: "anon", exp: now }), /expired/);
  await refuses(await signJwt({ role: "anon", exp: now + 60, nbf: now + 30 }), /not valid yet/);
  await refuses(await signJwt({ role: "anon", exp: "later" }), /expired|no expiry/);
  await refuses(await signJwt({ role: "anon", exp: now + 60 }, "y".repeat(40)), /signature/);
  await refuses(good.slice(0, -2) + (good.endsWith("AA") ? "BB" : "AA"), /signature|base64url/);
  await refuses("a.b", /not a JWT/);
  const [, payload, signature] = good.split(".");
  await refuses(`${part({ alg: "HS512" })}.${payload}.${signature}`, /alg HS512 is not accepted/);
  await assert.rejects(createJwtVerifier("short"));
});

Deno.test("routing: the function name is the first segment after /functions/v1/", () => {
  assert.equal(functionNameOf("/functions/v1/process-document"), "process-document");
  assert.equal(functionNameOf("/functions/v1/process-document/sub/path"), "process-document");
  assert.equal(functionNameOf("/functions/v1/"), null);
  assert.equal(functionNameOf("/functions/v2/x"), null);
  assert.equal(functionNameOf("/health"), null);
});

Deno.test("routing in process: verify_jwt = false lets a call through; throws become 500 JSON with CORS", async () => {
  const verifier = await createJwtVerifier(JWT_SECRET);
  const gateway = createGatewayHandler({
    functions: new Map([
      ["open-hook", { verifyJwt: false, handler: () => new Response("hi", { status: 202 }) }],
      ["locked", { verifyJwt: true, handler: () => Response.json({ ok: true }) }],
      ["broken", { verifyJwt: false, handler: () => Promise.reject(new Error("boom")) }],
    ]),
    verifier,
    onError: () => {},
  });
  const call = (name: string, headers: Record<string, string> = {}) =>
    gateway(new Request(`http://gw/functions/v1/${name}`, { method: "POST", headers }));

  const open = await call("open-hook");
  assert.equal(open.status, 202);
  assert.equal(await open.text(), "hi");
  assert.equal(
    open.headers.get("access-control-allow-origin"),
    "*",
    "the gateway adds CORS the function left out",
  );

  const locked = await call("locked");
  assert.equal(locked.status, 401);
  assert.equal((await locked.json()).error.code, "MISSING_AUTHORIZATION");
  const unlocked = await call("locked", { authorization: `Bearer ${await signJwt({ role: "anon" })}` });
  assert.deepEqual(await unlocked.json(), { ok: true });

  const broken = await call("broken");
  assert.equal(broken.status, 500);
  assert.equal((await broken.json()).error.code, "INTERNAL_ERROR");
  assert.equal(broken.headers.get("access-control-allow-origin"), "*");

  assert.throws(() =>
    createGatewayHandler({
      functions: new Map([["locked", { verifyJwt: true, handler: () => new Response() }]]),
      verifier: null,
    })
  );
});
