import assert from "node:assert/strict";
// deno-lint-ignore no-import-prefix -- a full specifier, so a function resolves it from its own deno.json
import postgres from "npm:postgres@3.4.9";
import { runActionContract } from "./contract_suite.ts";
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
