-- Rollback of supabase/migrations/20261130001100_idempotency_cleanup_pacing.sql: the cleanup job as
-- 20261130000300_idempotency_scale.sql schedules it (batches of 5,000 back to back, no pause, no settings) and
-- without idempotency_cleanup_settings(). Safe to run twice; one transaction.
--   psql "$DB_URL" -v ON_ERROR_STOP=1 -f supabase/rollback/20261130001100_idempotency_cleanup_pacing_down.sql

begin;

do $schedule$
begin
  if exists (select 1 from pg_extension where extname = 'pg_cron') then
    perform cron.schedule('cleanup-expired-idempotency-keys', '* * * * *', $cmd$do $cleanup$
declare
  v_batch record;
  v_after timestamptz := '-infinity';
  v_deadline timestamptz := clock_timestamp() + interval '50 seconds';
begin
  loop
    select * into v_batch from public.idempotency_cleanup_batch(5000, v_after);
    commit;
    exit when v_batch.examined < 5000 or clock_timestamp() >= v_deadline;
    v_after := v_batch.last_purge_after;
  end loop;
  perform public.idempotency_stats_compact();
end
$cleanup$
$cmd$);
  end if;
end
$schedule$;

drop function if exists public.idempotency_cleanup_settings();

do $$
begin
  if to_regclass('supabase_migrations.schema_migrations') is not null then
    delete from supabase_migrations.schema_migrations where version = '20261130001100';
  end if;
end;
$$;

commit;
