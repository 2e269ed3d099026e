/**
 * The functions' tables as the Data API roles see them: RLS on, anon shut out, a user reads only their own
 * rows and writes none, service_role reads and writes everything.
 */

import assert from "node:assert/strict";
import type postgres from "postgres";
import { e2eTest } from "./support.ts";

const TABLES = [
  "documents",
  "document_processing_jobs",
  "training_datasets",
  "training_dataset_stats",
  "training_jobs",
];

/** Runs `query` as `role` (with `sub` as the JWT's user) in a transaction that is always rolled back. */
async function asRole<T>(
  sql: postgres.Sql,
  role: "anon" | "authenticated" | "service_role",
  sub: string | null,
  query: (tx: postgres.TransactionSql) => Promise<T>,
): Promise<T> {
  let result: T;
  const rollback = new Error("rollback");
  try {
    await sql.begin(async (tx) => {
      await tx`select set_config('request.jwt.claims', ${JSON.stringify({ role, sub })}, true)`;
      await tx.unsafe(`set local role ${role}`);
      result = await query(tx);
      throw rollback;
    });
  } catch (error) {
    if (error !== rollback) throw error;
  }
  return result!;
}

/** One row in each table for `userId`, written as the superuser. */
async function seed(sql: postgres.Sql, userId: string): Promise<void> {
  const [doc] = await sql`
    insert into public.documents (user_id, title, content, content_sha256, word_count)
    values (${userId}, 'T', 'C', ${"0".repeat(64)}, 1) returning id`;
  await sql`insert into public.document_processing_jobs (document_id, user_id, operations)
    values (${doc!.id}, ${userId}, '{summary}')`;
  const [ds] = await sql`
    insert into public.training_datasets (user_id, name, task, seed, template, example_count, examples)
    values (${userId}, 'D', 'summarization', 1, '{text}', 1, '[]') returning id`;
  await sql`insert into public.training_dataset_stats
    (dataset_id, user_id, example_count, avg_prompt_chars, avg_completion_chars)
    values (${ds!.id}, ${userId}, 1, 1, 1)`;
  await sql`insert into public.training_jobs (user_id, model_name, dataset_id, hyperparameters)
    values (${userId}, 'm', ${ds!.id}, '{}')`;
}

e2eTest("every table has RLS on and Supabase's default grants taken back from anon", async ({ sql }) => {
  const rows = await sql<
    { relname: string; relrowsecurity: boolean; anon_select: boolean; auth_insert: boolean }[]
  >`
    select c.relname, c.relrowsecurity,
           has_table_privilege('anon', c.oid, 'select') as anon_select,
           has_table_privilege('authenticated', c.oid, 'insert') as auth_insert
    from pg_class c where c.relnamespace = 'public'::regnamespace and c.relname = any(${TABLES})`;
  assert.equal(rows.length, TABLES.length);
  for (const row of rows) {
    assert.equal(row.relrowsecurity, true, `${row.relname}: RLS is off`);
    assert.equal(row.anon_select, false, `${row.relname}: anon may select`);
    assert.equal(row.auth_insert, false, `${row.relname}: authenticated may insert`);
  }
});

e2eTest("a user reads only their own rows; service_role reads all; anon reads nothing", async (t) => {
  const alice = await t.newUser();
  const bob = await t.newUser();
  await seed(t.sql, alice.id);
  await seed(t.sql, bob.id);
  for (const table of TABLES) {
    const seen = await asRole(
      t.sql,
      "authenticated",
      alice.id,
      (tx) =>
        tx<{ user_id: string }[]>`select user_id from ${tx(table)} where user_id = any(${[
          alice.id,
          bob.id,
        ]}::uuid[])`,
    );
    assert.deepEqual(seen.map((r) => r.user_id), [alice.id], `${table}: alice sees ${JSON.stringify(seen)}`);

    const all = await asRole(
      t.sql,
      "service_role",
      null,
      (tx) => tx`select 1 from ${tx(table)} where user_id = any(${[alice.id, bob.id]}::uuid[])`,
    );
    assert.equal(all.length, 2, `${table}: service_role sees ${all.length}`);

    await assert.rejects(
      asRole(t.sql, "anon", null, (tx) => tx`select 1 from ${tx(table)}`),
      (e: { code?: string }) => e.code === "42501",
      `${table}: anon was not refused`,
    );
  }
});

e2eTest("a user cannot write any table, even their own rows", async (t) => {
  const alice = await t.newUser();
  await seed(t.sql, alice.id);
  await assert.rejects(
    asRole(
      t.sql,
      "authenticated",
      alice.id,
      (tx) =>
        tx`insert into public.training_jobs (user_id, model_name, hyperparameters) values (${alice.id}, 'm', '{}')`,
    ),
    (e: { code?: string }) => e.code === "42501",
  );
  await assert.rejects(
    asRole(
      t.sql,
      "authenticated",
      alice.id,
      (tx) => tx`update public.documents set title = 'x' where user_id = ${alice.id}`,
    ),
    (e: { code?: string }) => e.code === "42501",
  );
  await assert.rejects(
    asRole(
      t.sql,
      "authenticated",
      alice.id,
      (tx) => tx`delete from public.training_datasets where user_id = ${alice.id}`,
    ),
    (e: { code?: string }) => e.code === "42501",
  );
});

e2eTest("deleting a user deletes their rows; deleting a dataset keeps its jobs", async (t) => {
  const alice = await t.newUser();
  await seed(t.sql, alice.id);
  await t.sql`delete from public.training_datasets where user_id = ${alice.id}`;
  const [job] = await t.sql`select dataset_id from public.training_jobs where user_id = ${alice.id}`;
  assert.equal(job!.dataset_id, null);
  assert.equal(
    (await t.sql`select 1 from public.training_dataset_stats where user_id = ${alice.id}`).length,
    0,
  );
  await t.sql`delete from auth.users where id = ${alice.id}`;
  for (const table of TABLES) {
    const left = await t.sql`select 1 from ${t.sql(table)} where user_id = ${alice.id}`;
    assert.equal(left.length, 0, `${table} kept rows of a deleted user`);
  }
});
