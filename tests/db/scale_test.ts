/**
 * The scale migration's behaviour on a few thousand keys, with truly concurrent connections (the 10-million-row
 * figures are in docs/scaling.md, made by scripts/scale/):
 *   1. completions are HOT updates: 8 connections claim and complete 2,000 keys, each call its own
 *      transaction as PostgresStore makes them; pg_stat_user_tables counts at least 90 % of the updates HOT;
 *   2. the counters stay right under concurrency: the same 8 connections then replay, fail, take over and
 *      renew leases at once, while two more fold the writers' counter rows (the cron job's
 *      idempotency_stats_compact) and delete expired keys (its cleanup batches) over and over; then
 *      v_idempotency_stats equals a count of the table, function by function, before and after a last fold;
 *   3. cleanup commits batch by batch: the every-minute cron block, with batches of 500, fails in its third
 *      batch (a trigger refuses one key), and the two batches before it stay deleted, which one transaction
 *      would have rolled back; run again, it deletes the rest.
 *
 *   deno test --allow-all tests/db        (SUPABASE_DB_URL, else DB_URL, else the local stack's database)
 */

import assert from "node:assert/strict";
import postgres from "postgres";

const DB_URL = Deno.env.get("SUPABASE_DB_URL") ?? Deno.env.get("DB_URL") ??
  "postgresql://postgres:postgres@127.0.0.1:54322/postgres";
const CONNECTIONS = 8;
const KEYS = 2000;
const EXPIRED = 2000;
const run = crypto.randomUUID().slice(0, 8);
const FN = [`scale-a-${run}`, `scale-b-${run}`];
const FINGERPRINT = "9".repeat(64);
const BODY = new TextEncoder().encode(JSON.stringify({ ok: true, pad: "x".repeat(400) }));

type Sql = postgres.Sql;

/** Runs `work` on CONNECTIONS reserved connections at once; each flushes its table statistics at the end. */
async function concurrently(sql: Sql, work: (db: postgres.ReservedSql, worker: number) => Promise<void>) {
  const conns = await Promise.all(Array.from({ length: CONNECTIONS }, () => sql.reserve()));
  try {
    await Promise.all(conns.map(async (db, worker) => {
      await work(db, worker);
      await db`select pg_stat_force_next_flush()`;
    }));
  } finally {
    for (const db of conns) db.release();
  }
}

async function tableUpdates(sql: Sql): Promise<{ upd: number; hot: number }> {
  // statistics are flushed at most once a second by each backend; the snapshot is cleared to read them fresh
  await new Promise((ok) => setTimeout(ok, 1100));
  const [row] = await sql.begin(async (tx) => {
    await tx`select pg_stat_clear_snapshot()`;
    return await tx`select n_tup_upd::int as upd, n_tup_hot_upd::int as hot from pg_stat_user_tables
      where relid = 'public.idempotency_keys'::regclass`;
  });
  return row as { upd: number; hot: number };
}

const VIEW_COLUMNS =
  "total, processing, completed, failed, replays, in_flight, stuck, expired_pending_cleanup";

Deno.test("scale: HOT completions, counters under concurrency, cleanup that commits per batch", async (t) => {
  const sql = postgres(DB_URL, { max: CONNECTIONS + 2, onnotice: () => {} });
  try {
    await t.step("1. at least 90 % of concurrent completions are HOT updates", async () => {
      const before = await tableUpdates(sql);
      await concurrently(sql, async (db, worker) => {
        for (let i = worker; i < KEYS; i += CONNECTIONS) {
          const [b] = await db`select record_id, lease_token from public.idempotency_begin(
            ${`k-${run}-${i}`}, null, ${FN[i % 2]!}, ${FINGERPRINT}, 86400, 30)`;
          const [c] = await db`select public.idempotency_complete(${b!.record_id}, ${b!.lease_token}, 201,
            ${BODY}, 'identity', '{"content-type": "application/json"}'::jsonb) as ok`;
          assert.equal(c!.ok, true);
        }
      });
      const after = await tableUpdates(sql);
      const updates = after.upd - before.upd, hot = after.hot - before.hot;
      console.log(`HOT: ${hot} of ${updates} updates (${(100 * hot / updates).toFixed(1)} %)`);
      assert.ok(updates >= KEYS, `expected at least ${KEYS} updates, counted ${updates}`);
      assert.ok(hot / updates >= 0.9, `only ${hot} of ${updates} updates were HOT`);
    });

    await t.step(
      "2. under concurrent replays, failures, takeovers, renewals, folds and cleanup the view equals the table",
      async () => {
        // the minute's cleanup run must not take the expired keys below before the workers start
        const [job] =
          await sql`select jobid from cron.job where jobname = 'cleanup-expired-idempotency-keys'`;
        await sql`select cron.alter_job(${job!.jobid}, active => false)`;
        // keys that expired a day ago, for the cleanup batches to delete while the workers run
        await sql`insert into public.idempotency_keys (idempotency_key, function_name, request_fingerprint,
            status, status_code, completed_at, created_at, started_at, expires_at)
          select format('e-%s-%s', ${run}::text, i), ${FN[0]!}, ${FINGERPRINT}, 'completed', 200,
            now() - interval '1 day', now() - interval '2 days', now() - interval '2 days', now() - interval '1 day'
          from generate_series(1, ${EXPIRED}) i`;
        let running = true;
        const folding = (async () => {
          let folds = 0;
          for (; running; folds++) await sql`select public.idempotency_stats_compact()`;
          return folds;
        })();
        const cleaning = (async () => {
          let deleted = 0;
          while (running) {
            const [batch] = await sql`select deleted from public.idempotency_cleanup_batch(50)`;
            deleted += batch!.deleted as number;
          }
          return deleted;
        })();
        let folds = 0, deleted = 0;
        try {
          await concurrently(sql, async (db, worker) => {
            for (let i = worker; i < KEYS / 2; i += CONNECTIONS) {
              const key = `k-${run}-${i}`;
              // a replay of a completed key
              await db`select outcome from public.idempotency_begin(${key}, null, ${FN[
                i % 2
              ]!}, ${FINGERPRINT})`;
              // a new key that fails, then is taken over, and a new key whose lease is renewed
              const [f] = await db`select record_id, lease_token from public.idempotency_begin(
            ${`f-${run}-${i}`}, null, ${FN[i % 2]!}, ${FINGERPRINT})`;
              await db`select public.idempotency_fail(${f!.record_id}, ${f!.lease_token}, 'boom', 500)`;
              if (i % 3 === 0) {
                await db`select public.idempotency_begin(${`f-${run}-${i}`}, null, ${FN[
                  i % 2
                ]!}, ${FINGERPRINT})`;
              }
              const [p] = await db`select record_id, lease_token from public.idempotency_begin(
            ${`p-${run}-${i}`}, null, ${FN[i % 2]!}, ${FINGERPRINT})`;
              await db`select public.idempotency_extend_lease(${p!.record_id}, ${p!.lease_token}, 120)`;
            }
          });
        } finally {
          running = false;
          [folds, deleted] = await Promise.all([folding, cleaning]);
          await sql`select cron.alter_job(${job!.jobid}, active => true)`;
        }
        console.log(`during the workers' run: ${folds} folds, ${deleted} expired keys deleted`);
        assert.ok(folds > 1, "the counters were folded while the workers wrote");
        assert.ok(deleted > 0, "expired keys were deleted while the workers wrote");
        const shown = () =>
          sql.unsafe(
            `select function_name, ${VIEW_COLUMNS} from public.v_idempotency_stats
        where function_name = any($1) order by function_name`,
            [FN],
          );
        const exact = await sql.unsafe(
          `select function_name, count(*)::bigint as total,
          count(*) filter (where status = 'processing') as processing,
          count(*) filter (where status = 'completed') as completed,
          count(*) filter (where status = 'failed') as failed,
          coalesce(sum(replay_count), 0)::bigint as replays,
          count(*) filter (where status = 'processing' and locked_until > now()) as in_flight,
          count(*) filter (where status = 'processing' and locked_until <= now()) as stuck,
          count(*) filter (where expires_at < now() and not (status = 'processing' and locked_until > now()))
            as expired_pending_cleanup
        from public.idempotency_keys where function_name = any($1) group by function_name order by function_name`,
          [FN],
        );
        const before = await shown();
        assert.equal(before.length, 2);
        assert.deepEqual(before, exact);
        assert.equal(Number(before[0]!.replays) + Number(before[1]!.replays), KEYS / 2);
        await sql`select public.idempotency_stats_compact()`;
        assert.deepEqual(await shown(), exact, "and after a last fold");
      },
    );

    await t.step("3. the cron block's batches commit one by one", async () => {
      const [job] =
        await sql`select jobid, command from cron.job where jobname = 'cleanup-expired-idempotency-keys'`;
      assert.ok(job, "the cleanup job is scheduled");
      const block = job.command as string;
      // batches of 500 (idempotency.cleanup_batch_size, read by the job since 20261130001100), on one connection
      const cleaner = await sql.reserve();
      await cleaner`select set_config('idempotency.cleanup_batch_size', '500', false)`;
      await sql`select cron.alter_job(${job.jobid}, active => false)`; // the minute's run must not join in
      try {
        // 3,000 keys expired in 2000, older than anything else in the table, so the batches are theirs alone
        await sql`insert into public.idempotency_keys (idempotency_key, function_name, request_fingerprint,
            status, status_code, completed_at, created_at, started_at, expires_at)
          select format('c-%s-%s', ${run}::text, i), ${FN[0]!}, ${FINGERPRINT}, 'completed', 200,
            timestamptz '2000-01-01' + make_interval(secs => i), timestamptz '1999-12-31', timestamptz '1999-12-31',
            timestamptz '2000-01-01' + make_interval(secs => i)
          from generate_series(1, 3000) i`;
        const poison = `c-${run}-1250`; // in the third batch of 500
        await sql.unsafe(`create function public.scale_test_refuse() returns trigger language plpgsql
          set search_path = '' as $$ begin raise exception 'refused by the test'; end $$`);
        await sql.unsafe(`create trigger scale_test_refuse before delete on public.idempotency_keys
          for each row when (old.idempotency_key = '${poison}') execute function public.scale_test_refuse()`);
        try {
          await assert.rejects(cleaner.unsafe(block), /refused by the test/);
        } finally {
          await sql.unsafe(`drop trigger scale_test_refuse on public.idempotency_keys;
            drop function public.scale_test_refuse()`);
        }
        const [left] = await sql`select count(*)::int as n from public.idempotency_keys
          where idempotency_key like ${`c-${run}-%`}`;
        assert.equal(left!.n, 2000, "the two batches before the failing one stayed deleted");
        await cleaner.unsafe(block);
        const [rest] = await sql`select count(*)::int as n from public.idempotency_keys
          where idempotency_key like ${`c-${run}-%`}`;
        assert.equal(rest!.n, 0);
        const [row] = await sql`select total from public.v_idempotency_stats where function_name = ${FN[0]!}`;
        const [count] = await sql`select count(*)::bigint as total from public.idempotency_keys
          where function_name = ${FN[0]!}`;
        assert.equal(String(row!.total), String(count!.total), "the view's total follows the deletions");
      } finally {
        cleaner.release();
        await sql`select cron.alter_job(${job.jobid}, active => true)`;
      }
    });
  } finally {
    await sql`delete from public.idempotency_keys where function_name = any(${FN})`;
    await sql.end();
  }
});
