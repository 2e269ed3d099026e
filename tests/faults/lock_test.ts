/**
 * Bounded waits (docs/faults.md): while another session holds `idempotency_keys` locked for 10 s, keyed
 * requests get 503 with `Retry-After` within the store's deadline (`IDEMPOTENCY_STORE_TIMEOUT_MS`, 3 s by
 * default), the handler never runs, nothing is half-written, and once the lock is gone the same keys run.
 * Before the fix each request waited for the whole lock.
 */

import assert from "node:assert/strict";
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

Deno.test("a 10 s lock on idempotency_keys: 503 with Retry-After within the deadline, nothing written", async () => {
  const user = await newUser();
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
    const answers = await Promise.all(keys.map(async (key) => {
      const res = await post(user.token, key);
      return {
        status: res.status,
        retryAfter: res.headers.get("retry-after"),
        body: await res.json(),
        ms: performance.now() - started,
      };
    }));
    const slowest = Math.max(...answers.map((a) => a.ms));
    await report(
      `lock held ${LOCK_SECONDS} s: ${answers.length} keyed requests answered ` +
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
    await psql(`delete from auth.users where id = '${user.id}'`);
  }
});
