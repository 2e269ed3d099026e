/**
 * run-actions end to end: Database Webhook payloads over real HTTP through the gateway, side effects
 * counted in Postgres. A webhook is delivered at least once; each follow-up action must happen once.
 */

import assert from "node:assert/strict";
import type postgres from "postgres";
import { anonKey, callFunction, e2eTest, serviceRoleKey } from "./support.ts";

const DELIVERIES = 50;

/** A dataset row of `userId`, as the webhook's `record` would carry it. */
async function insertDataset(sql: postgres.Sql, userId: string) {
  const [row] = await sql<{ id: string; user_id: string; name: string; task: string }[]>`
    insert into public.training_datasets (user_id, name, task, seed, template, example_count, examples)
    values (${userId}, 'webhook dataset', 'summarization', 7, 'template', 1, '[]'::jsonb)
    returning id, user_id, name, task`;
  if (!row) throw new Error("no dataset row");
  return row;
}

function insertEvent(record: Record<string, unknown>) {
  return { type: "INSERT", table: "training_datasets", schema: "public", record, old_record: null };
}

async function rowsFor(sql: postgres.Sql, datasetId: string) {
  const [row] = await sql<{ jobs: number; notes: number }[]>`
    select (select count(*)::int from public.training_jobs where dataset_id = ${datasetId}) as jobs,
      (select count(*)::int from public.notifications where subject ->> 'id' = ${datasetId}) as notes`;
  return row;
}

e2eTest(
  `run-actions: the same webhook event ${DELIVERIES} times at once and again after: one row per action`,
  async ({ sql, newUser, defer }) => {
    const user = await newUser();
    const dataset = await insertDataset(sql, user.id);
    defer(() => sql`delete from public.action_records where signal_id like ${"%" + dataset.id}`);
    const token = await serviceRoleKey();
    const body = insertEvent(dataset);

    const concurrent = await Promise.all(
      Array.from({ length: DELIVERIES }, () => callFunction("run-actions", { token, body })),
    );
    const later = [];
    for (let i = 0; i < 3; i++) later.push(await callFunction("run-actions", { token, body }));
    const all = [...concurrent, ...later];

    for (const res of all) assert.equal(res.status, 200, res.text);
    assert.deepEqual(
      await rowsFor(sql, dataset.id),
      { jobs: 1, notes: 1 },
      "one training job, one notification",
    );

    const jobIds = new Set(all.map((res) => res.body.actions[0].result.job_id));
    assert.equal(jobIds.size, 1, "every delivery reports the same job");
    for (const action of ["start_training_job", "notify"]) {
      const firstRuns = all.filter((res) =>
        res.body.actions.some((a: { action: string; replayed: boolean }) =>
          a.action === action && !a.replayed
        )
      );
      assert.equal(firstRuns.length, 1, `${action} ran in exactly one delivery`);
    }
    for (const res of later) {
      assert.ok(res.body.actions.every((a: { replayed: boolean }) => a.replayed), "a later delivery replays");
    }

    const [job] = await sql<{ user_id: string; model_name: string; status: string }[]>`
      select user_id, model_name, status from public.training_jobs where dataset_id = ${dataset.id}`;
    assert.deepEqual(job, { user_id: user.id, model_name: "baseline-summarization", status: "queued" });
    const [note] = await sql<{ user_id: string; message: string }[]>`
      select user_id, message from public.notifications where subject ->> 'id' = ${dataset.id}`;
    assert.equal(note?.user_id, user.id);
    assert.match(note?.message ?? "", new RegExp([...jobIds][0]));

    const [record] = await sql<{ status: string; attempt_count: number; target: string }[]>`
      select status, attempt_count, target from public.action_records
      where signal_id = ${`public.training_datasets/INSERT/${dataset.id}`} and action_type = 'start_training_job'`;
    assert.deepEqual(record, { status: "completed", attempt_count: 1, target: "training_jobs" });
  },
);

e2eTest("run-actions: only the service role; bad payloads are 400 and change nothing", async (ctx) => {
  const { sql, newUser, defer } = ctx;
  const user = await newUser();
  const dataset = await insertDataset(sql, user.id);
  defer(() => sql`delete from public.action_records where signal_id like ${"%" + dataset.id}`);
  const body = insertEvent(dataset);

  const noToken = await callFunction("run-actions", { body });
  assert.equal(noToken.status, 401);
  for (const token of [await anonKey(), user.token]) {
    const res = await callFunction("run-actions", { token, body });
    assert.equal(res.status, 401, res.text);
    assert.equal(res.body.error.code, "AUTH_REQUIRED");
  }
  const service = await serviceRoleKey();
  const get = await callFunction("run-actions", { token: service, method: "GET" });
  assert.equal(get.status, 405);
  for (
    const [bad, field] of [
      ["not json", "body"],
      [{ ...body, type: "TRUNCATE" }, "type"],
      [{ ...body, table: "x; drop table y" }, "table"],
      [{ ...body, record: null }, "record"],
      [{ ...body, record: { ...dataset, id: "42" } }, "record.id"],
      [{ type: "UPDATE", table: "t", schema: "public", record: {}, old_record: null }, "old_record"],
    ] as const
  ) {
    const res = await callFunction("run-actions", { token: service, body: bad });
    assert.equal(res.status, 400, res.text);
    assert.equal(res.body.error.code, "INVALID_REQUEST");
    assert.ok(res.body.error.message.startsWith(field), res.body.error.message);
  }
  assert.deepEqual(await rowsFor(sql, dataset.id), { jobs: 0, notes: 0 }, "nothing written");

  const other = await callFunction("run-actions", {
    token: service,
    body: { type: "DELETE", table: "documents", schema: "public", record: null, old_record: { id: "x" } },
  });
  assert.equal(other.status, 200);
  assert.deepEqual(other.body.actions, [], "events without follow-ups are acknowledged, not retried");
});
