/**
 * Bounded waits (docs/faults.md): while another session holds `idempotency_keys` locked for 10 s, keyed
 * requests get 503 with `Retry-After` within the store's deadline (`IDEMPOTENCY_STORE_TIMEOUT_MS`, 3 s by
 * default), the handler never runs, nothing is half-written, and once the lock is gone the same keys run.
 * Before the fix each request waited for the whole lock. The same holds for `withIdempotentTransaction`'s
 * in-transaction claim (the claim is a statement of the handler's transaction), checked in-process.
 */

import assert from "node:assert/strict";
import { withIdempotentTransaction } from "../../supabase/functions/_shared/idempotency.ts";
import { openPool } from "../../supabase/functions/_shared/idempotency/pool.ts";
import { JWT_SECRET } from "../support/jwt.ts";
import { newUser, psql, report } from "./support.ts";

const API_URL = Deno.env.get("API_URL") ?? "http://127.0.0.1:54321";
const DB_URL = Deno.env.get("SUPABASE_DB_URL") ?? "postgresql://postgres:postgres@127.0.0.1:54322/postgres";
const DEADLINE_MS = Number(Deno.env.get("IDEMPOTENCY_STORE_TIMEOUT_MS") ?? 3000);
const LOCK_SECONDS = 10;

function post(token: string, key: string): Promise<Response> {
  return fetch(`${API_URL}/functions/v1/process-document`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json", "idempotency-key": key },
    body: JSON.stringify({ title: key, content: "Revenue grew. Costs fell." }),
  });
}

/** A transactional handler with the in-transaction claim, in this process; counts its runs. */
function inTransactionHandler(sql: ReturnType<typeof openPool>, runs: { count: number }) {
  return withIdempotentTransaction(() => {
    runs.count++;
    return new Response(null, { status: 201 });
  }, {
    functionName: "lock-test",
    sql,
    claim: "in-transaction",
    jwtSecret: JWT_SECRET,
    logger: { error: () => {}, warn: () => {} },
  });
}

Deno.test("a 10 s lock on idempotency_keys: 503 with Retry-After within the deadline, nothing written", async () => {
  const user = await newUser();
  const sql = openPool({ url: DB_URL, max: 8 }); // a connection for each of the 5 claims
  const runs = { count: 0 };
  const inTransaction = inTransactionHandler(sql, runs);
  const holder = new Deno.Command("psql", {
    args: [
      "-X",
      "-q",
      DB_URL,
      "-c",
      `begin; lock table public.idempotency_keys in access exclusive mode; select pg_sleep(${LOCK_SECONDS}); commit;`,
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  try {
    for (let i = 0; i < 100; i++) {
      const held = await psql(
        `select count(*) from pg_locks where relation = 'public.idempotency_keys'::regclass
        and mode = 'AccessExclusiveLock' and granted`,
      );
      if (held === "1") break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const keys = Array.from({ length: 5 }, () => `lock-${crypto.randomUUID()}`);
    const started = performance.now();
    const answers = await Promise.all([...keys, ...keys.map((key) => `tx-${key}`)].map(async (key) => {
      const res = key.startsWith("tx-")
        ? await inTransaction(
          new Request("http://local/functions/v1/lock-test", {
            method: "POST",
            headers: { authorization: `Bearer ${user.token}`, "idempotency-key": key },
          }),
        )
        : await post(user.token, key);
      return {
        status: res.status,
        retryAfter: res.headers.get("retry-after"),
        body: await res.json(),
        ms: performance.now() - started,
      };
    }));
    const slowest = Math.max(...answers.map((a) => a.ms));
    await report(
      `lock held ${LOCK_SECONDS} s: ${keys.length} keyed requests and ${keys.length} in-transaction claims answered ` +
        `${[...new Set(answers.map((a) => a.status))].join(",")} in at most ${slowest.toFixed(0)} ms ` +
        `(store deadline ${DEADLINE_MS} ms)`,
    );
    for (const answer of answers) {
      assert.equal(answer.status, 503, JSON.stringify(answer.body));
      assert.equal(answer.body.error.code, "STORE_UNAVAILABLE");
      assert.match(answer.retryAfter ?? "", /^\d+$/);
      assert.ok(
        answer.ms >= DEADLINE_MS * 0.9,
        `answered before the deadline (${answer.ms} ms): not the lock`,
      );
    }
    assert.ok(slowest < DEADLINE_MS + 1500, `${slowest} ms is past the deadline`);
    assert.equal(runs.count, 0, "an in-transaction handler ran without its claim");
    assert.equal(await psql(`select count(*) from public.documents where user_id = '${user.id}'`), "0");

    const status = await holder.status;
    assert.ok(status.success, new TextDecoder().decode(await new Response(holder.stderr).arrayBuffer()));
    const stranded = await psql(`select count(*) from public.idempotency_keys where user_id = '${user.id}'
      and status = 'processing'`);
    assert.equal(stranded, "0", "a cancelled claim was left in progress");
    for (const key of keys) {
      const res = await post(user.token, key);
      await res.body?.cancel();
      assert.equal(res.status, 201, "the key is usable once the lock is gone");
    }
    assert.equal(await psql(`select count(*) from public.documents where user_id = '${user.id}'`), "5");
  } finally {
    try {
      holder.kill();
    } catch { /* already done */ }
    await holder.status;
    await sql.end();
    await psql(`delete from auth.users where id = '${user.id}'`);
  }
});
