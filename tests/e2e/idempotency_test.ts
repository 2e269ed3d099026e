/**
 * The idempotency semantics of the deployed functions, over real HTTP through the gateway, with side effects
 * counted in the functions' own tables. Mostly process-document; the other functions have their own file.
 */

import assert from "node:assert/strict";
import {
  anonKey,
  callFunction,
  countRows,
  documentBody,
  e2eTest,
  keyRow,
  serviceRoleKey,
} from "./support.ts";

const FN = "process-document";

e2eTest("first run answers 201 with X-Idempotency-Replay: false, a retry replays it exactly", async (t) => {
  const user = await t.newUser();
  const key = t.newKey();
  const body = documentBody();

  const first = await callFunction(FN, { token: user.token, key, body });
  assert.equal(first.status, 201);
  assert.equal(first.replay, "false");
  assert.match(first.body.document_id, /^[0-9a-f-]{36}$/);
  assert.equal(first.body.word_count, 12);
  assert.equal(first.body.result.summary, "Revenue grew in every region.");

  const retry = await callFunction(FN, { token: user.token, key, body });
  assert.equal(retry.status, 201);
  assert.equal(retry.replay, "true");
  assert.equal(retry.text, first.text, "the replay must be the first body, byte for byte");
  assert.equal(retry.headers.get("content-type"), first.headers.get("content-type"));

  assert.equal(await countRows(t.sql, "documents", user.id), 1);
  assert.equal(await countRows(t.sql, "document_processing_jobs", user.id), 1);
  const row = await keyRow(t.sql, key, user.id);
  assert.equal(row?.status, "completed");
  assert.equal(row?.replay_count, 1);
  assert.equal(row?.function_name, FN);
});

e2eTest("X-Idempotency-Key works like Idempotency-Key, and both name the same key", async (t) => {
  const user = await t.newUser();
  const key = t.newKey();
  const body = documentBody();
  const first = await callFunction(FN, { token: user.token, body, headers: { "x-idempotency-key": key } });
  assert.equal(first.status, 201);
  assert.equal(first.replay, "false");
  const retry = await callFunction(FN, { token: user.token, body, headers: { "x-idempotency-key": key } });
  assert.equal(retry.replay, "true");
  const viaStandard = await callFunction(FN, { token: user.token, key, body });
  assert.equal(viaStandard.replay, "true");
  assert.equal(viaStandard.text, first.text);
  const both = await callFunction(FN, {
    token: user.token,
    key,
    body,
    headers: { "x-idempotency-key": key },
  });
  assert.equal(both.replay, "true", "the same value in both headers is one key");
  assert.equal(await countRows(t.sql, "documents", user.id), 1);
});

e2eTest("two different key headers are a 400 KEY_CONFLICT and nothing runs", async (t) => {
  const user = await t.newUser();
  const res = await callFunction(FN, {
    token: user.token,
    key: t.newKey(),
    headers: { "x-idempotency-key": t.newKey() },
    body: documentBody(),
  });
  assert.equal(res.status, 400);
  assert.equal(res.body.error.code, "KEY_CONFLICT");
  assert.equal(await countRows(t.sql, "documents", user.id), 0);
});

e2eTest("an invalid key is a 400 INVALID_KEY and nothing runs", async (t) => {
  const user = await t.newUser();
  for (const key of ["ab", "has space", "semi;colon", "x".repeat(257), "ünïcode-key"]) {
    const res = await callFunction(FN, { token: user.token, key, body: documentBody() });
    assert.equal(res.status, 400, key);
    assert.equal(res.body.error.code, "INVALID_KEY", key);
  }
  assert.equal(await countRows(t.sql, "documents", user.id), 0);
});

e2eTest('a quoted key "abc" is the same key as abc', async (t) => {
  const user = await t.newUser();
  const key = t.newKey();
  const body = documentBody();
  const bare = await callFunction(FN, { token: user.token, key, body });
  assert.equal(bare.replay, "false");
  const quoted = await callFunction(FN, { token: user.token, key: `"${key}"`, body });
  assert.equal(quoted.status, 201);
  assert.equal(quoted.replay, "true");
  assert.equal(quoted.text, bare.text);
  assert.equal(await countRows(t.sql, "documents", user.id), 1);
});

e2eTest("without a key the function runs on every call", async (t) => {
  const user = await t.newUser();
  const body = documentBody();
  const a = await callFunction(FN, { token: user.token, body });
  const b = await callFunction(FN, { token: user.token, body });
  assert.equal(a.status, 201);
  assert.equal(b.status, 201);
  assert.notEqual(a.replay, "true");
  assert.notEqual(b.replay, "true");
  assert.notEqual(a.body.document_id, b.body.document_id);
  assert.equal(await countRows(t.sql, "documents", user.id), 2);
  assert.equal(await countRows(t.sql, "document_processing_jobs", user.id), 2);
});

e2eTest("the same key with another body is a 422 and nothing runs", async (t) => {
  const user = await t.newUser();
  const key = t.newKey();
  const first = await callFunction(FN, { token: user.token, key, body: documentBody("One") });
  assert.equal(first.status, 201);
  const other = await callFunction(FN, { token: user.token, key, body: documentBody("Two") });
  assert.equal(other.status, 422);
  assert.equal(other.body.error.code, "KEY_REUSED_WITH_DIFFERENT_REQUEST");
  assert.notEqual(other.replay, "true");
  assert.equal(await countRows(t.sql, "documents", user.id), 1);
  // the original request still replays
  assert.equal(
    (await callFunction(FN, { token: user.token, key, body: documentBody("One") })).replay,
    "true",
  );
});

e2eTest(
  "bad input is a 400 naming the field, is not stored, and a fixed request with a new key runs",
  async (t) => {
    const user = await t.newUser();
    const key = t.newKey();
    const bad = { title: "Missing content" };
    const first = await callFunction(FN, { token: user.token, key, body: bad });
    assert.equal(first.status, 400);
    assert.equal(first.body.error.code, "INVALID_REQUEST");
    assert.match(first.body.error.message, /^content: /);
    // not stored as an answer: the same request runs (and fails) again instead of replaying
    const again = await callFunction(FN, { token: user.token, key, body: bad });
    assert.equal(again.status, 400);
    assert.notEqual(again.replay, "true");
    assert.notEqual((await keyRow(t.sql, key, user.id))?.status, "completed");

    const badJson = await callFunction(FN, { token: user.token, key: t.newKey(), body: "{not json" });
    assert.equal(badJson.status, 400);
    assert.match(badJson.body.error.message, /^body: /);

    const fixed = await callFunction(FN, {
      token: user.token,
      key: t.newKey(),
      body: { ...bad, content: "Now it has content." },
    });
    assert.equal(fixed.status, 201);
    assert.equal(fixed.replay, "false");
    assert.equal(await countRows(t.sql, "documents", user.id), 1);
  },
);

e2eTest("an anon key alone is refused: 401 with a key (no user to scope it) and without", async (t) => {
  const token = await anonKey();
  const key = t.newKey();
  const keyed = await callFunction(FN, { token, key, body: documentBody() });
  assert.equal(keyed.status, 401);
  assert.equal(keyed.body.error.code, "AUTH_REQUIRED");
  assert.equal(await keyRow(t.sql, key, null), undefined);
  const unkeyed = await callFunction(FN, { token, body: documentBody() });
  assert.equal(unkeyed.status, 401);
  assert.equal(unkeyed.body.error.code, "AUTH_REQUIRED");
});

e2eTest("100 truly concurrent identical requests run the work exactly once, with no 5xx", async (t) => {
  const user = await t.newUser();
  const key = t.newKey();
  const body = documentBody();
  const results = await Promise.all(
    Array.from({ length: 100 }, () => callFunction(FN, { token: user.token, key, body })),
  );
  const statuses = results.map((r) => r.status);
  assert.deepEqual(statuses.filter((s) => s !== 201 && s !== 409), [], `unexpected statuses: ${statuses}`);
  const firstRuns = results.filter((r) => r.status === 201 && r.replay === "false");
  assert.equal(firstRuns.length, 1, "exactly one request runs the work");
  for (const r of results.filter((r) => r.status === 201)) assert.equal(r.text, firstRuns[0]!.text);
  for (const r of results.filter((r) => r.status === 409)) {
    assert.equal(r.body.error.code, "REQUEST_IN_PROGRESS");
    assert.ok(Number(r.headers.get("retry-after")) >= 1);
  }
  assert.equal(await countRows(t.sql, "document_processing_jobs", user.id), 1);
  assert.equal(await countRows(t.sql, "documents", user.id), 1);
  assert.equal((await keyRow(t.sql, key, user.id))?.attempt_count, 1);
});

e2eTest("two users with the same key get two runs and never each other's answer", async (t) => {
  const alice = await t.newUser();
  const bob = await t.newUser();
  const key = t.newKey();
  const body = documentBody();
  const a = await callFunction(FN, { token: alice.token, key, body });
  const b = await callFunction(FN, { token: bob.token, key, body });
  assert.equal(a.status, 201);
  assert.equal(b.status, 201);
  assert.equal(b.replay, "false", "bob must not get alice's stored answer");
  assert.notEqual(a.body.document_id, b.body.document_id);
  assert.equal(await countRows(t.sql, "documents", alice.id), 1);
  assert.equal(await countRows(t.sql, "documents", bob.id), 1);
  const [owner] = await t.sql`select user_id from public.documents where id = ${b.body.document_id}`;
  assert.equal(owner!.user_id, bob.id);
  // and each one's retry replays their own
  assert.equal((await callFunction(FN, { token: alice.token, key, body })).text, a.text);
  assert.equal((await callFunction(FN, { token: bob.token, key, body })).text, b.text);
});

e2eTest(
  "the service role writes rows with user_id null, and its keyed calls replay in the service scope",
  async (t) => {
    const token = await serviceRoleKey();
    const key = t.newKey();
    const body = documentBody();
    t.defer(() =>
      t.sql`delete from public.idempotency_keys where idempotency_key = ${key} and user_id is null`
    );
    t.defer(() => t.sql`delete from public.documents where title = ${body.title} and user_id is null`);

    const first = await callFunction(FN, { token, key, body });
    assert.equal(first.status, 201);
    assert.equal(first.replay, "false");
    const retry = await callFunction(FN, { token, key, body });
    assert.equal(retry.replay, "true");
    assert.equal(retry.text, first.text);
    const docs = await t.sql`select user_id from public.documents where title = ${body.title}`;
    assert.deepEqual(docs.map((d) => d.user_id), [null]);
    const [job] = await t
      .sql`select user_id from public.document_processing_jobs where id = ${first.body.job_id}`;
    assert.equal(job!.user_id, null);
    assert.equal((await keyRow(t.sql, key, null))?.status, "completed");

    // a user with the same key is another scope: it runs, and never gets the service's answer
    const user = await t.newUser();
    const mine = await callFunction(FN, { token: user.token, key, body });
    assert.equal(mine.replay, "false");
    assert.notEqual(mine.body.document_id, first.body.document_id);

    // without a key the service's call runs every time
    const unkeyed = await callFunction(FN, { token, body });
    assert.equal(unkeyed.status, 201);
    assert.equal(
      (await t.sql`select 1 from public.documents where title = ${body.title} and user_id is null`).length,
      2,
    );
  },
);

e2eTest("a failed run is released, rolls back, and its retry runs once more", async (t) => {
  // A real, deterministic database failure: a constraint that refuses this user's processing jobs (NOT VALID,
  // so existing rows are not checked). The document insert succeeds first, so the failure also proves the
  // work is one transaction: nothing of the failed attempt may remain.
  const user = await t.newUser();
  const constraint = `e2e_refuse_${user.id.replaceAll("-", "")}`;
  await t.sql.unsafe(
    `alter table public.document_processing_jobs add constraint ${constraint}
     check (user_id is distinct from '${user.id}'::uuid) not valid`,
  );
  t.defer(() =>
    t.sql.unsafe(`alter table public.document_processing_jobs drop constraint if exists ${constraint}`)
  );
  const key = t.newKey();
  const body = documentBody();

  const failed = await callFunction(FN, { token: user.token, key, body });
  assert.equal(failed.status, 500);
  assert.equal(failed.body.error.code, "INTERNAL_ERROR");
  assert.notEqual(failed.replay, "true");
  assert.equal(await countRows(t.sql, "documents", user.id), 0, "the failed transaction left a document");
  assert.equal((await keyRow(t.sql, key, user.id))?.status, "failed");

  await t.sql.unsafe(`alter table public.document_processing_jobs drop constraint ${constraint}`);
  const retry = await callFunction(FN, { token: user.token, key, body });
  assert.equal(retry.status, 201);
  assert.equal(retry.replay, "false", "a failure is not replayed: the work runs again");
  assert.equal(await countRows(t.sql, "documents", user.id), 1);
  assert.equal(await countRows(t.sql, "document_processing_jobs", user.id), 1);
  const row = await keyRow(t.sql, key, user.id);
  assert.equal(row?.status, "completed");
  assert.equal(row?.attempt_count, 2);
  assert.equal((await callFunction(FN, { token: user.token, key, body })).replay, "true");
});

e2eTest(
  "a request whose key holds a live lease is a 409 with Retry-After; a stale lease is taken over",
  async (t) => {
    const user = await t.newUser();
    const body = documentBody();
    // The fingerprint of this request, as the helper computes it, from a completed run of it.
    const seedKey = t.newKey();
    assert.equal((await callFunction(FN, { token: user.token, key: seedKey, body })).status, 201);
    const [{ request_fingerprint: fingerprint }] = await t.sql<[{ request_fingerprint: string }]>`
    select request_fingerprint from public.idempotency_keys where idempotency_key = ${seedKey} and user_id = ${user.id}`;

    // A worker claimed the key and still holds it: a duplicate must wait.
    const liveKey = t.newKey();
    await t.sql`
    insert into public.idempotency_keys
      (idempotency_key, user_id, function_name, request_fingerprint, status, locked_until, lease_token, expires_at)
    values (${liveKey}, ${user.id}, ${FN}, ${fingerprint}, 'processing', now() + interval '1 minute',
      gen_random_uuid(), now() + interval '1 day')`;
    const busy = await callFunction(FN, { token: user.token, key: liveKey, body });
    assert.equal(busy.status, 409);
    assert.equal(busy.body.error.code, "REQUEST_IN_PROGRESS");
    assert.ok(Number(busy.headers.get("retry-after")) >= 1);
    assert.equal(await countRows(t.sql, "documents", user.id), 1);

    // A worker claimed the key and died (its lease ran out): the next request takes over and completes.
    const staleKey = t.newKey();
    await t.sql`
    insert into public.idempotency_keys
      (idempotency_key, user_id, function_name, request_fingerprint, status, locked_until, lease_token,
       created_at, started_at, expires_at)
    values (${staleKey}, ${user.id}, ${FN}, ${fingerprint}, 'processing', now() - interval '1 second',
      gen_random_uuid(), now() - interval '1 minute', now() - interval '1 minute', now() + interval '1 day')`;
    const takeover = await callFunction(FN, { token: user.token, key: staleKey, body });
    assert.equal(takeover.status, 201);
    assert.equal(takeover.replay, "false");
    assert.equal(await countRows(t.sql, "documents", user.id), 2);
    const row = await keyRow(t.sql, staleKey, user.id);
    assert.equal(row?.status, "completed");
    assert.equal(row?.attempt_count, 2);
    assert.equal((await callFunction(FN, { token: user.token, key: staleKey, body })).text, takeover.text);
  },
);

e2eTest("an expired key runs again as a new request", async (t) => {
  const user = await t.newUser();
  const key = t.newKey();
  const body = documentBody();
  const first = await callFunction(FN, { token: user.token, key, body });
  assert.equal(first.status, 201);
  await t.sql`
    update public.idempotency_keys
    set created_at = now() - interval '2 days', started_at = now() - interval '2 days',
        completed_at = now() - interval '2 days', expires_at = now() - interval '1 day'
    where idempotency_key = ${key} and user_id = ${user.id}`;
  const again = await callFunction(FN, { token: user.token, key, body });
  assert.equal(again.status, 201);
  assert.equal(again.replay, "false");
  assert.notEqual(again.body.document_id, first.body.document_id);
  assert.equal(await countRows(t.sql, "documents", user.id), 2);
  const row = await keyRow(t.sql, key, user.id);
  assert.equal(row?.attempt_count, 1);
  assert.equal(row?.replay_count, 0);
  // even another body is accepted once the key has expired
  await t.sql`
    update public.idempotency_keys
    set created_at = now() - interval '2 days', started_at = now() - interval '2 days',
        completed_at = now() - interval '2 days', expires_at = now() - interval '1 day'
    where idempotency_key = ${key} and user_id = ${user.id}`;
  const otherBody = await callFunction(FN, { token: user.token, key, body: documentBody("Something else") });
  assert.equal(otherBody.status, 201);
  assert.equal(otherBody.replay, "false");
});
