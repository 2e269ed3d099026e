import assert from "node:assert/strict";
// deno-lint-ignore no-import-prefix -- a full specifier, so a function resolves it from its own deno.json
import postgres from "npm:postgres@3.4.9";
import { CONCURRENT_EXECUTIONS, runActionContract } from "./contract_suite.ts";
import { ActionIdempotency } from "./manager.ts";
import { MemoryActionStore } from "./memory.ts";
import { PostgresActionStore } from "./postgres.ts";

const DB_URL = Deno.env.get("SUPABASE_DB_URL") ?? "postgresql://postgres:postgres@127.0.0.1:54322/postgres";

runActionContract("postgres", () => new PostgresActionStore({ url: DB_URL, max: 10 }));

/** Runs `body` as `role` inside a transaction that is rolled back. */
async function asRole<T>(
  role: string,
  body: (sql: postgres.TransactionSql) => Promise<T>,
): Promise<T | Error> {
  const sql = postgres(DB_URL, { max: 1, onnotice: () => {} });
  try {
    let out: T | Error = new Error("not run");
    await sql.begin(async (tx) => {
      await tx.unsafe(`set local role ${role}`);
      try {
        out = await body(tx);
      } catch (error) {
        out = error as Error;
      }
      throw new Error("rollback");
    }).catch((error) => {
      if (!(error instanceof Error && error.message === "rollback")) throw error;
    });
    return out;
  } finally {
    await sql.end();
  }
}

Deno.test("postgres action store: only service_role may call the functions; clearAllCache is admin only", async () => {
  for (const role of ["anon", "authenticated"]) {
    const clear = await asRole(role, (tx) => tx`select public.action_clear_all()`);
    assert.ok(clear instanceof Error && /permission denied/.test(clear.message), `${role} cannot clear`);
    const claim = await asRole(
      role,
      (tx) => tx`select * from public.action_claim('k', null, null, null, null, 60000, 30000)`,
    );
    assert.ok(claim instanceof Error && /permission denied/.test(claim.message), `${role} cannot claim`);
    const read = await asRole(role, (tx) => tx`select count(*) from public.action_records`);
    assert.ok(read instanceof Error && /permission denied/.test(read.message), `${role} cannot read records`);
  }
  const ok = await asRole("service_role", (tx) => tx`select public.action_clear_all() as n`);
  assert.ok(!(ok instanceof Error), String(ok));
});

Deno.test("postgres action store: statistics are shared by every instance (counters in the database)", async () => {
  const a = new PostgresActionStore({ url: DB_URL, max: 2 });
  const b = new PostgresActionStore({ url: DB_URL, max: 2 });
  try {
    const before = await b.stats();
    const key = `shared-${crypto.randomUUID()}`;
    const meta = { actionType: null, target: null, signalId: null, paramsHash: null };
    const c = await a.claim({ key, meta, ttlMs: 60_000, leaseMs: 30_000, retryFailed: true });
    if (c.outcome === "started") await a.complete(c.lease, "1");
    await a.claim({ key, meta, ttlMs: 60_000, leaseMs: 30_000, retryFailed: true });
    const after = await b.stats();
    assert.equal(after.cacheMisses - before.cacheMisses, 1);
    assert.equal(after.cacheHits - before.cacheHits, 1);
    assert.equal(await b.delete(key), true);
  } finally {
    await a.close();
    await b.close();
  }
});

Deno.test("postgres action store: the queries use their indexes", async () => {
  const sql = postgres(DB_URL, { max: 1, onnotice: () => {} });
  try {
    await sql.begin(async (tx) => {
      await tx`set local enable_seqscan = off`;
      for (const [column, value] of [["action_type", "a"], ["target", "t"], ["signal_id", "s"]] as const) {
        const plan = await tx.unsafe(
          `explain select * from public.action_records r where r.${column} = $1 order by r.created_at limit 10`,
          [value],
        );
        const text = plan.map((row) => Object.values(row)[0]).join("\n");
        assert.match(
          text,
          new RegExp(`action_records_${column === "signal_id" ? "signal" : column}_idx`),
          text,
        );
      }
    });
  } finally {
    await sql.end();
  }
});

Deno.test("postgres action store: executeInTransaction commits the work with the record, 100 concurrent calls, one row", async () => {
  const store = new PostgresActionStore({ url: DB_URL, max: 10 });
  const actions = new ActionIdempotency({ store });
  const sql = postgres(DB_URL, { max: 1, onnotice: () => {} });
  const signalId = `tx-${crypto.randomUUID()}`;
  const action = { signalId, actionType: "notify", target: "notifications", params: { n: 1 } };
  try {
    let runs = 0;
    const outcomes = await Promise.all(
      Array.from(
        { length: CONCURRENT_EXECUTIONS },
        () =>
          actions.executeInTransaction<{ id: string }, postgres.TransactionSql>(action, async (tx) => {
            runs += 1;
            const [row] = await tx<{ id: string }[]>`
          insert into public.notifications (kind, message, action_key) values ('test', 'hello', ${signalId})
          returning id`;
            await new Promise((resolve) => setTimeout(resolve, 50));
            return { id: row!.id };
          }),
      ),
    );
    assert.equal(runs, 1);
    const [{ count }] = await sql<{ count: string }[]>`
      select count(*) from public.notifications where action_key = ${signalId}` as unknown as [
      { count: string },
    ];
    assert.equal(Number(count), 1, "one row");
    assert.equal(
      new Set(outcomes.map((o) => JSON.stringify(o.result))).size,
      1,
      "every caller got that row's id",
    );

    // a throw rolls the work back and records the failure; the retry runs and commits
    const failing = { ...action, params: { n: 2 } };
    await assert.rejects(
      actions.executeInTransaction<void, postgres.TransactionSql>(failing, async (tx) => {
        await tx`insert into public.notifications (kind, message, action_key) values ('test', 'x', ${
          signalId + "-2"
        })`;
        throw new Error("after the insert");
      }),
      /after the insert/,
    );
    const [{ n }] = await sql<{ n: string }[]>`
      select count(*) as n from public.notifications where action_key = ${signalId + "-2"}` as unknown as [
      { n: string },
    ];
    assert.equal(Number(n), 0, "rolled back");
    const record = await actions.getIdempotencyRecord(actions.keyOf(failing));
    assert.deepEqual([record?.status, record?.attemptCount], ["failed", 1]);
    assert.match(record?.error ?? "", /after the insert/);
  } finally {
    await sql`delete from public.notifications where action_key like ${signalId + "%"}`;
    await sql.end();
    await actions.close();
  }
});

Deno.test("executeInTransaction needs a transactional store", async () => {
  const actions = new ActionIdempotency({ store: new MemoryActionStore() });
  await assert.rejects(actions.executeInTransaction({ key: "k" }, () => Promise.resolve(1)), TypeError);
  await actions.close();
});
