/**
 * Transactional mode (`withIdempotentTransaction`) against the real database, in process: the rows and the
 * stored answer commit together, a taken-over lease rolls the work back (fencing), a throw rolls back and
 * releases, both claim designs run the work once under truly concurrent duplicates, and steps run once per
 * key across attempts. Over HTTP: start-training's trainer step through the gateway.
 */

import assert from "node:assert/strict";
import {
  type TransactionalHandler,
  withIdempotentTransaction,
} from "../../supabase/functions/_shared/idempotency.ts";
import { closeSharedPool } from "../../supabase/functions/_shared/idempotency/pool.ts";
import { JWT_SECRET } from "../support/jwt.ts";
import {
  API_URL,
  callFunction,
  countRows,
  DB_URL,
  documentHandler,
  e2eTest,
  transactionalTest,
  userRequest,
  wrapTransactional,
} from "./support.ts";

/** The simulated trainer start-training calls (the gateway's own, by default). */
const TRAINER_URL = Deno.env.get("TRAINER_URL") ?? `${API_URL}/trainer`;

transactionalTest(
  "transactional: the rows and the stored answer commit together; a retry replays",
  async (t, sql) => {
    const user = await t.newUser();
    const key = t.newKey();
    const handler = wrapTransactional(sql, documentHandler());
    const first = await handler(userRequest(user, key));
    assert.equal(first.status, 201);
    assert.equal(first.headers.get("x-idempotency-replay"), "false");
    const body = await first.json();
    assert.deepEqual(body.caller, { kind: "user", userId: user.id, role: "authenticated" });
    const retry = await handler(userRequest(user, key));
    assert.equal(retry.headers.get("x-idempotency-replay"), "true");
    assert.deepEqual(await retry.json(), body);
    assert.equal(await countRows(t.sql, "documents", user.id), 1);
    const [row] = await t.sql`
    select status from public.idempotency_keys where idempotency_key = ${key} and user_id = ${user.id}`;
    assert.equal(row?.status, "completed");
  },
);

transactionalTest(
  "transactional fencing: a lease taken over mid-run rolls the run's rows back (409)",
  async (t, sql) => {
    const user = await t.newUser();
    const key = t.newKey();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => release = resolve);
    let entered!: () => void;
    const inside = new Promise<void>((resolve) => entered = resolve);
    const handler = wrapTransactional(sql, documentHandler(() => (entered(), gate)));
    const running = handler(userRequest(user, key));
    await inside;
    // another request takes the key over (its lease token replaces ours), as after a lease ran out
    await t.sql`update public.idempotency_keys set lease_token = gen_random_uuid()
    where idempotency_key = ${key} and user_id = ${user.id}`;
    release();
    const res = await running;
    assert.equal(res.status, 409);
    assert.equal((await res.json()).error.code, "REQUEST_IN_PROGRESS");
    assert.equal(await countRows(t.sql, "documents", user.id), 0, "the fenced run's rows never commit");
    const [row] = await t.sql`
    select status from public.idempotency_keys where idempotency_key = ${key} and user_id = ${user.id}`;
    assert.equal(row?.status, "processing", "the new holder's record is untouched");
  },
);

transactionalTest(
  "transactional: a throw or a 5xx rolls back and releases the key; the retry runs once",
  async (t, sql) => {
    const user = await t.newUser();
    const key = t.newKey();
    let attempts = 0;
    const inner = documentHandler();
    const handler = wrapTransactional(sql, async (req, ctx) => {
      attempts++;
      const response = await inner(req, ctx);
      if (attempts === 1) throw new Error("boom after the insert");
      if (attempts === 2) return Response.json({ error: "down" }, { status: 503 });
      return response;
    });
    const thrown = await handler(userRequest(user, key));
    assert.equal(thrown.status, 500);
    assert.equal((await thrown.json()).error.code, "INTERNAL_ERROR");
    const failed = await handler(userRequest(user, key));
    assert.equal(failed.status, 503);
    await failed.body?.cancel();
    assert.equal(await countRows(t.sql, "documents", user.id), 0, "nothing of the failed attempts remains");
    const ok = await handler(userRequest(user, key));
    assert.equal(ok.status, 201);
    await ok.body?.cancel();
    assert.equal(await countRows(t.sql, "documents", user.id), 1);
    const [row] = await t.sql`select status, attempt_count from public.idempotency_keys
    where idempotency_key = ${key} and user_id = ${user.id}`;
    assert.deepEqual({ ...row }, { status: "completed", attempt_count: 3 });
  },
);

for (const claim of ["separate", "in-transaction"] as const) {
  transactionalTest(
    `transactional (${claim} claim): 30 truly concurrent duplicates run the work once`,
    async (t, sql) => {
      const user = await t.newUser();
      const key = t.newKey();
      const handler = wrapTransactional(
        sql,
        documentHandler(() => new Promise((r) => setTimeout(r, 50))),
        { claim },
      );
      const results = await Promise.all(Array.from({ length: 30 }, () => handler(userRequest(user, key))));
      const statuses = results.map((r) => r.status);
      const bodies = await Promise.all(results.map((r) => r.text()));
      assert.deepEqual(statuses.filter((s) => s !== 201 && s !== 409), [], `statuses: ${statuses}`);
      const fresh = results.filter((r) =>
        r.status === 201 && r.headers.get("x-idempotency-replay") === "false"
      );
      assert.equal(fresh.length, 1, "exactly one run");
      if (claim === "in-transaction") {
        assert.equal(statuses.filter((s) => s === 409).length, 0, "duplicates wait on the row, then replay");
        assert.equal(new Set(bodies).size, 1, "every duplicate got the first answer");
      }
      assert.equal(await countRows(t.sql, "documents", user.id), 1);
    },
  );
}

transactionalTest(
  "transactional (in-transaction claim): a duplicate waits at most lockWaitMs, then 409",
  async (t, sql) => {
    const user = await t.newUser();
    const key = t.newKey();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => release = resolve);
    const handler = wrapTransactional(sql, documentHandler(() => gate), {
      claim: "in-transaction",
      lockWaitMs: 200,
    });
    const first = handler(userRequest(user, key));
    await new Promise((r) => setTimeout(r, 100));
    const started = performance.now();
    const duplicate = await handler(userRequest(user, key));
    const waited = performance.now() - started;
    assert.equal(duplicate.status, 409);
    await duplicate.body?.cancel();
    assert.ok(waited >= 150 && waited < 3000, `waited ${waited} ms`);
    release();
    assert.equal((await first).status, 201);
    assert.equal(await countRows(t.sql, "documents", user.id), 1);
  },
);

transactionalTest(
  "steps: a completed step is skipped on retry and its result reused; its key is stable",
  async (t, sql) => {
    const user = await t.newUser();
    const key = t.newKey();
    const calls: string[] = [];
    let attempt = 0;
    const handler = wrapTransactional(sql, async (_req, { step }) => {
      attempt++;
      const a = await step("a", (stepKey) => {
        calls.push(`a:${stepKey}`);
        return Promise.resolve({ n: attempt });
      });
      if (attempt === 1) throw new Error("crash between steps");
      const b = await step("b", (stepKey) => {
        calls.push(`b:${stepKey}`);
        return Promise.resolve(`b${attempt}`);
      });
      return Response.json({ a, b }, { status: 201 });
    });
    const failed = await handler(userRequest(user, key));
    assert.equal(failed.status, 500);
    await failed.body?.cancel();
    const ok = await handler(userRequest(user, key));
    assert.equal(ok.status, 201);
    assert.deepEqual(await ok.json(), { a: { n: 1 }, b: "b2" }, "step a's first result is reused");
    assert.equal(calls.filter((c) => c.startsWith("a:")).length, 1, "step a ran once");
    assert.equal(calls.filter((c) => c.startsWith("b:")).length, 1);
    assert.match(calls[0]!, /^a:step_[0-9a-f]{40}$/);
  },
);

e2eTest("start-training calls the external trainer once per key, with a derived step key", async (t) => {
  const user = await t.newUser();
  const key = t.newKey();
  const body = { model_name: "m", hyperparameters: { learning_rate: 0.1, epochs: 1, batch_size: 1 } };
  const first = await callFunction("start-training", { token: user.token, key, body });
  assert.equal(first.status, 201);
  assert.match(first.body.trainer_job_id, /^trn_/);
  const retry = await callFunction("start-training", { token: user.token, key, body });
  assert.equal(retry.replay, "true");
  const [row] = await t.sql`select trainer_job_id from public.training_jobs where user_id = ${user.id}`;
  assert.equal(row?.trainer_job_id, first.body.trainer_job_id);
  const steps = await t.sql`select s.step_name from public.idempotency_steps s
    join public.idempotency_keys k on k.id = s.record_id where k.idempotency_key = ${key}`;
  assert.deepEqual(steps.map((s) => s.step_name), ["submit-to-trainer"]);
  const stats = await (await fetch(`${TRAINER_URL}/stats`)).json();
  assert.ok(stats.calls >= 1);
});

e2eTest(
  "transactional: on the shared pool, requests after closeSharedPool() run on the new pool",
  async (t) => {
    const previous = Deno.env.get("SUPABASE_DB_URL");
    Deno.env.set("SUPABASE_DB_URL", DB_URL);
    try {
      const user = await t.newUser();
      // no `sql`: the wrapper and its key records use the isolate's shared pool, as deployed functions do
      const handler = withIdempotentTransaction(documentHandler(), {
        functionName: "tx-test",
        jwtSecret: JWT_SECRET,
        logger: { error: () => {}, warn: () => {} },
      });
      assert.equal((await handler(userRequest(user, t.newKey()))).status, 201);
      await closeSharedPool();
      const key = t.newKey();
      const after = await handler(userRequest(user, key));
      assert.equal(after.status, 201, "the claim must not go to the ended pool");
      assert.equal((await handler(userRequest(user, key))).headers.get("x-idempotency-replay"), "true");
    } finally {
      await closeSharedPool();
      if (previous === undefined) Deno.env.delete("SUPABASE_DB_URL");
      else Deno.env.set("SUPABASE_DB_URL", previous);
    }
  },
);

Deno.test("transactional: invalid options fail at wrap time", () => {
  const handler: TransactionalHandler = () => new Response(null, { status: 204 });
  assert.throws(
    () => withIdempotentTransaction(handler, { functionName: "f", claim: "inside" as "separate" }),
    TypeError,
  );
  assert.throws(() => withIdempotentTransaction(handler, { functionName: "f", lockWaitMs: 0 }), RangeError);
  assert.throws(() => withIdempotentTransaction(handler, { functionName: "bad name" }), TypeError);
});
