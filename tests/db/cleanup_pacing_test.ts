/**
 * The every-minute cleanup job paces itself (migration 20261130001100): the job's own command, read from
 * cron.job and run as pg_cron runs it (top level, so that its COMMITs are allowed), with batches of 500, a pause
 * ratio of 4 and a cap of 2,000 keys, over 3,000 keys that expired in 1990 (older than anything else, so the
 * batches are theirs):
 *   - it stops at the cap: 2,000 deleted in 4 batches, 1,000 left, as its notice says;
 *   - it pauses between batches, and while it pauses it holds no lock on idempotency_keys (the pause comes after
 *     the batch's COMMIT): a second connection samples the job's backend every few milliseconds and sees it in
 *     pg_sleep, never with a lock on the table at the same time (and does see the lock a transaction holds).
 *
 *   deno test --allow-all tests/db        (SUPABASE_DB_URL, else DB_URL, else the local stack's database)
 */

import assert from "node:assert/strict";
import postgres from "postgres";

const DB_URL = Deno.env.get("SUPABASE_DB_URL") ?? Deno.env.get("DB_URL") ??
  "postgresql://postgres:postgres@127.0.0.1:54322/postgres";
const run = crypto.randomUUID().slice(0, 8);
const FN = `pacing-${run}`;

Deno.test("cleanup job: stops at idempotency.cleanup_max_keys, pauses between batches holding no lock", async () => {
  const notices: string[] = [];
  const sql = postgres(DB_URL, { max: 3, onnotice: (n) => notices.push(String(n.message)) });
  const [job] =
    await sql`select jobid, command from cron.job where jobname = 'cleanup-expired-idempotency-keys'`;
  assert.ok(job, "the cleanup job is scheduled");
  await sql`select cron.alter_job(${job.jobid}, active => false)`; // the minute's run must not join in
  const cleaner = await sql.reserve();
  const watcher = await sql.reserve();
  try {
    await sql`insert into public.idempotency_keys (idempotency_key, function_name, request_fingerprint, status,
        status_code, completed_at, created_at, started_at, expires_at)
      select format('p-%s', i), ${FN}, ${"7".repeat(64)}, 'completed', 200,
        timestamptz '1990-01-01' + make_interval(secs => i), timestamptz '1989-12-31', timestamptz '1989-12-31',
        timestamptz '1990-01-01' + make_interval(secs => i)
      from generate_series(1, 3000) i`;
    const [backend] = await cleaner`select pg_backend_pid() as pid`;
    const pid = backend!.pid as number;
    await cleaner`select set_config('idempotency.cleanup_batch_size', '500', false),
      set_config('idempotency.cleanup_pause_ratio', '4', false),
      set_config('idempotency.cleanup_max_keys', '2000', false)`;

    const sample = async () => {
      const [row] = await watcher`select coalesce(a.wait_event = 'PgSleep', false) as sleeping,
          (select count(*)::int from pg_locks l
           where l.pid = a.pid and l.relation = 'public.idempotency_keys'::regclass) as locks
        from pg_stat_activity a where a.pid = ${pid}`;
      return row as { sleeping: boolean; locks: number } | undefined;
    };
    // the sampler sees a lock the cleaner's backend holds on the table (so that seeing none below means none)
    await cleaner.unsafe("begin");
    await cleaner`select 1 from public.idempotency_keys where function_name = ${FN} limit 1 for update`;
    assert.ok(((await sample())?.locks ?? 0) > 0, "the sampler sees a lock held on the table");
    await cleaner.unsafe("rollback");

    const samples: { sleeping: boolean; locks: number }[] = [];
    let done = false;
    const job_run = cleaner.unsafe(job.command as string).finally(() => (done = true));
    while (!done) {
      const row = await sample();
      if (row) samples.push(row);
      await new Promise((ok) => setTimeout(ok, 2));
    }
    await job_run;

    const [left] =
      await sql`select count(*)::int as n from public.idempotency_keys where function_name = ${FN}`;
    assert.equal(left!.n, 1000, "2,000 of the 3,000 deleted: the cap");
    const notice = notices.find((n) => n.startsWith("idempotency cleanup:"));
    assert.match(
      notice ?? "",
      /^idempotency cleanup: 2000 deleted in 4 batches \(slowest [0-9.]+ ms\), [0-9.]+ s paused$/,
    );
    const sleeping = samples.filter((s) => s.sleeping);
    assert.ok(sleeping.length > 0, `the job was seen pausing (${samples.length} samples)`);
    assert.deepEqual(sleeping.filter((s) => s.locks > 0), [], "no lock on idempotency_keys while it pauses");
  } finally {
    cleaner.release();
    watcher.release();
    await sql`delete from public.idempotency_keys where function_name = ${FN}`;
    await sql`select cron.alter_job(${job.jobid}, active => true)`;
    await sql.end();
  }
});
