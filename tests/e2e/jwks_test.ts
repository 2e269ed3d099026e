/**
 * Supabase's asymmetric JWT signing keys, end to end: the stack publishes its ES256 key at
 * /auth/v1/.well-known/jwks.json, and both the gateway (verify_jwt) and the function's idempotency scope verify
 * a user's ES256 token through that document, as on a project with signing keys.
 */

import assert from "node:assert/strict";
import {
  generateSigningKey,
  signAsymmetric,
} from "../../supabase/functions/_shared/idempotency/auth_testing.ts";
import { signEs256 } from "../support/jwt.ts";
import { API_URL, callFunction, countRows, documentBody, e2eTest } from "./support.ts";

Deno.test("jwks: the stack serves its public signing key (no private member)", async () => {
  const res = await fetch(`${API_URL}/auth/v1/.well-known/jwks.json`);
  assert.equal(res.status, 200);
  const { keys } = await res.json();
  assert.equal(keys.length, 1);
  assert.equal(keys[0].kty, "EC");
  assert.equal(keys[0].crv, "P-256");
  assert.equal(keys[0].alg, "ES256");
  assert.equal(typeof keys[0].kid, "string");
  assert.equal(keys[0].d, undefined, "the private key is never published");
});

e2eTest(
  "jwks: a user's ES256 token runs the function once in the user's scope; a retry replays",
  async (t) => {
    const user = await t.newUser();
    const token = await signEs256({ sub: user.id, role: "authenticated", aud: "authenticated" });
    const key = t.newKey();
    const body = documentBody();
    const first = await callFunction("process-document", { token, key, body });
    assert.equal(first.status, 201, first.text);
    assert.equal(first.replay, "false");
    const retry = await callFunction("process-document", { token, key, body });
    assert.equal(retry.status, 201);
    assert.equal(retry.replay, "true");
    assert.equal(retry.text, first.text);
    assert.equal(await countRows(t.sql, "documents", user.id), 1, "the rows belong to the token's sub");
  },
);

e2eTest("jwks: an ES256 token of a key the project does not publish is refused at the gateway", async (t) => {
  const user = await t.newUser();
  const stranger = await generateSigningKey("ES256");
  const token = await signAsymmetric({ sub: user.id, role: "authenticated" }, stranger);
  const res = await callFunction("process-document", { token, key: t.newKey(), body: documentBody() });
  assert.equal(res.status, 401);
  assert.equal(res.body.error.code, "INVALID_JWT");
  assert.match(res.body.error.message, /unknown key/);
  assert.equal(await countRows(t.sql, "documents", user.id), 0);
});
