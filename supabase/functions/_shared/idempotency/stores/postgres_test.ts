import assert from "node:assert/strict";
import postgres from "npm:postgres@3.4.9";
import { claimMaker, runStoreContract, started } from "./contract_suite.ts";
import { PostgresStore } from "./postgres.ts";

const DB_URL = Deno.env.get("SUPABASE_DB_URL") ?? "postgresql://postgres:postgres@127.0.0.1:54322/postgres";

/** A one-connection client for setup and checks, apart from the store's own pool. */
function adminClient(): postgres.Sql {
  return postgres(DB_URL, { max: 1, onnotice: () => {} });
}

/** Two fresh users in auth.users (the table's foreign key needs them); deleting them cascades to their keys. */
async function createUsers(sql: postgres.Sql): Promise<[string, string]> {
  const ids: [string, string] = [crypto.randomUUID(), crypto.randomUUID()];
  await sql`insert into auth.users ${sql(ids.map((id) => ({ id, email: `store-test-${id}@example.test` })))}`;
  return ids;
}

runStoreContract(
  "postgres",
  ({ poolSize }) => Promise.resolve({ store: new PostgresStore({ url: DB_URL, max: poolSize }) }),
  {
    async fixture() {
      const sql = adminClient();
      const users = await createUsers(sql);
      return {
        users,
        async release(keys) {
          try {
            await sql`delete from public.idempotency_keys where idempotency_key = any(${keys}::text[])`;
            await sql`delete from auth.users where id = any(${users}::uuid[])`;
          } finally {
            await sql.end();
          }
        },
      };
    },
  },
);

const claim = claimMaker({
  keyPrefix: "pg-test-",
  functionName: "postgres-test",
  fingerprint: "c".repeat(64),
});

Deno.test("postgres store: cleanup deletes expired rows in batches, returns the count, keeps live rows", async () => {
  const sql = adminClient();
  const store = new PostgresStore({ url: DB_URL, max: 1 });
  const users = await createUsers(sql);
  const user = users[0];
  try {
    const expired = await sql<{ id: string }[]>`
      insert into public.idempotency_keys
        (idempotency_key, user_id, function_name, request_fingerprint, status, status_code, response,
         created_at, completed_at, expires_at)
      select 'pg-expired-' || gen_random_uuid(), ${user}::uuid, 'postgres-test', repeat('d', 64), 'completed', 200,
        '\\x00'::bytea, now() - interval '2 hours', now() - interval '2 hours', now() - interval '1 hour'
      from generate_series(1, 3)
      returning id`;
    const live = claim({ userId: user });
    started(await store.begin(live));

    // Other suites may leave expired rows too, so the count is at least ours; batches of 2 need two passes.
    const deleted = await store.cleanup({ batchSize: 2 });
    assert.ok(deleted >= 3, `deleted ${deleted}`);
    const [left] = await sql`select count(*)::int as n from public.idempotency_keys where id = any(${
      expired.map((r) => r.id)
    }::uuid[])`;
    assert.equal(left!.n, 0);
    assert.equal((await store.status(live))?.status, "processing");
  } finally {
    await sql`delete from auth.users where id = any(${users}::uuid[])`;
    await store.close();
    await sql.end();
  }
});

Deno.test("postgres store: an unreachable database rejects with an error naming the store", async () => {
  const store = new PostgresStore({ url: "postgresql://postgres:postgres@127.0.0.1:1/postgres", max: 1 });
  try {
    const error = await store.begin(claim()).catch((e: unknown) => e);
    assert.ok(error instanceof Error);
    assert.match(error.message, /^postgres store: begin failed: .*ECONNREFUSED/);
    assert.ok(error.cause instanceof Error, "the driver's error is kept as cause");
    await assert.rejects(
      store.status({ key: "pg-any", userId: null }),
      /^Error: postgres store: status failed/,
    );
  } finally {
    await store.close();
  }
});

Deno.test("postgres store: prepare:false (Supavisor transaction mode) round-trips bytes and headers", async () => {
  const store = new PostgresStore({ url: DB_URL, prepare: false, max: 2 });
  const input = claim();
  try {
    const first = started(await store.begin(input));
    assert.equal(await store.fail(first, { message: "x".repeat(5000), status: 502 }), true);
    const lease = started(await store.begin(input));
    assert.equal(await store.extendLease(lease, 60), true);
    const body = Uint8Array.from([0, 255, 92, 120, 39, 0]); // NUL, backslash, "x" and a quote: escaping traps
    const headers = { "content-type": "application/json", "x-quote": `a"b\\c` };
    assert.equal(await store.complete(lease, { status: 200, headers, body, encoding: "identity" }), true);
    const replay = await store.begin(input);
    assert.equal(replay.outcome, "replay");
    assert.deepEqual(replay.response, { status: 200, headers, body, encoding: "identity" });
    assert.equal((await store.status(input))?.attemptCount, 2);
  } finally {
    await store.close();
    const sql = adminClient();
    await sql`delete from public.idempotency_keys where idempotency_key = ${input.key}`;
    await sql.end();
  }
});

Deno.test("postgres store: a client passed in is used and left open by close()", async () => {
  const sql = adminClient();
  const store = new PostgresStore({ sql });
  try {
    const input = claim();
    started(await store.begin(input));
    await store.close();
    const [row] = await sql`select status from public.idempotency_keys where idempotency_key = ${input.key}`;
    assert.equal(row!.status, "processing");
    await sql`delete from public.idempotency_keys where idempotency_key = ${input.key}`;
  } finally {
    await sql.end();
  }
});

Deno.test("postgres store: without url or SUPABASE_DB_URL the constructor says what is missing", () => {
  const saved = Deno.env.get("SUPABASE_DB_URL");
  Deno.env.delete("SUPABASE_DB_URL");
  try {
    assert.throws(() => new PostgresStore(), /SUPABASE_DB_URL/);
  } finally {
    if (saved !== undefined) Deno.env.set("SUPABASE_DB_URL", saved);
  }
});
