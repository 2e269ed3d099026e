/**
 * Actions across a real crash: a worker process is SIGKILLed while it runs an action on Postgres.
 *   - Its lease keeps duplicates out while it would still be running; once the lease ends, the next call
 *     takes the action over (attempt 2) and the killed worker's token is worthless.
 *   - With executeInTransaction, the killed worker's writes roll back with its connection, so the action's
 *     row exists exactly once after the takeover: exactly-once even through the crash.
 */

import assert from "node:assert/strict";
import postgres from "postgres";
import { ActionIdempotency, IdempotencyError } from "../../supabase/functions/_shared/actions.ts";
import { PostgresActionStore } from "../../supabase/functions/_shared/actions_postgres.ts";

const DB_URL = Deno.env.get("SUPABASE_DB_URL") ?? "postgresql://postgres:postgres@127.0.0.1:54322/postgres";
const LEASE_MS = 2000;

/** Starts a worker that runs `mode` for `signal`, waits until it says it is inside the work, SIGKILLs it. */
async function killMidAction(mode: "plain" | "transaction", signal: string): Promise<void> {
  const actionsUrl = new URL("../../supabase/functions/_shared/actions.ts", import.meta.url).href;
  const storeUrl = new URL("../../supabase/functions/_shared/actions_postgres.ts", import.meta.url).href;
  const code = `
    import { ActionIdempotency } from ${JSON.stringify(actionsUrl)};
    import { PostgresActionStore } from ${JSON.stringify(storeUrl)};
    const actions = new ActionIdempotency({ store: new PostgresActionStore({ url: ${
    JSON.stringify(DB_URL)
  } }) });
    const action = { signalId: ${
    JSON.stringify(signal)
  }, actionType: "notify", target: "notifications", params: {} };
    const insert = (sql) => sql\`insert into public.notifications (kind, message, action_key)
      values ('crash_test', 'from the killed worker', \${${JSON.stringify(signal)}})\`;
    const hang = () => { console.log("inside"); return new Promise(() => {}); };
    if (${JSON.stringify(mode)} === "plain") {
      const sql = (await import("npm:postgres@3.4.9")).default(${JSON.stringify(DB_URL)}, { max: 1 });
      await actions.executeWithIdempotency(action, async () => { await insert(sql); await hang(); }, { leaseMs: ${LEASE_MS} });
    } else {
      await actions.executeInTransaction(action, async (tx) => { await insert(tx); await hang(); }, { leaseMs: ${LEASE_MS} });
    }`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--quiet", code],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (!seen.includes("inside")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the worker ended before its work: ${seen}`);
    seen += value;
  }
  child.kill("SIGKILL");
  const status = await child.status;
  assert.equal(status.signal, "SIGKILL");
  await reader.cancel().catch(() => {});
}

async function withActions(
  body: (actions: ActionIdempotency, sql: postgres.Sql, signal: string) => Promise<void>,
): Promise<void> {
  const sql = postgres(DB_URL, { max: 2, onnotice: () => {} });
  const actions = new ActionIdempotency({ store: new PostgresActionStore({ url: DB_URL, max: 3 }) });
  const signal = `crash-${crypto.randomUUID()}`;
  try {
    await body(actions, sql, signal);
  } finally {
    await sql`delete from public.notifications where action_key = ${signal}`;
    await sql`delete from public.action_records where signal_id = ${signal}`;
    await sql.end();
    await actions.close();
  }
}

const rows = async (sql: postgres.Sql, signal: string) =>
  Number((await sql`select count(*) as n from public.notifications where action_key = ${signal}`)[0]?.n);

Deno.test("SIGKILL mid-action: the lease holds duplicates off, then the action is taken over (attempt 2)", async () => {
  await withActions(async (actions, sql, signal) => {
    await killMidAction("plain", signal);
    const action = { signalId: signal, actionType: "notify", target: "notifications", params: {} };
    await assert.rejects(
      actions.executeWithIdempotency(action, () => "dup", { onInProgress: "error", leaseMs: LEASE_MS }),
      (e: unknown) => e instanceof IdempotencyError && e.code === "ACTION_IN_PROGRESS",
      "while the dead worker's lease lasts, a duplicate does not run",
    );
    const taken = await actions.executeWithIdempotency(action, () => "recovered", { leaseMs: LEASE_MS });
    assert.deepEqual([taken.result, taken.replayed, taken.attempt], ["recovered", false, 2]);
    assert.equal(
      await rows(sql, signal),
      1,
      "the killed worker's plain write stays: work outside the record's transaction is at least once",
    );
  });
});

Deno.test("SIGKILL mid-action with executeInTransaction: the killed write rolls back, one row after takeover", async () => {
  await withActions(async (actions, sql, signal) => {
    await killMidAction("transaction", signal);
    const action = { signalId: signal, actionType: "notify", target: "notifications", params: {} };
    const outcomes = await Promise.all(
      Array.from(
        { length: 20 },
        () =>
          actions.executeInTransaction<string, postgres.TransactionSql>(action, async (tx) => {
            await tx`insert into public.notifications (kind, message, action_key) values ('crash_test', 'recovered', ${signal})`;
            return "recovered";
          }, { leaseMs: LEASE_MS }),
      ),
    );
    assert.equal(outcomes.filter((o) => !o.replayed).length, 1, "one caller ran it, after the lease ended");
    assert.ok(outcomes.every((o) => o.result === "recovered"));
    assert.equal(outcomes.find((o) => !o.replayed)?.attempt, 2);
    assert.equal(await rows(sql, signal), 1, "exactly one row: the killed worker's insert rolled back");
  });
});
