-- The every-minute cleanup job, measurable as it is scheduled and tunable without a migration. Its knobs are
-- settings, read once per run by idempotency_cleanup_settings() (`alter role ... set` or `alter database ...
-- set` changes them; a session's `set` changes them for a run by hand):
--   idempotency.cleanup_batch_size   keys per batch, each committed on its own                 default 5000
--   idempotency.cleanup_pause_ratio  pause after each batch's commit, as a multiple of its       default 1
--                                    duration (a duty cycle; no lock is held while it lasts)
--   idempotency.cleanup_max_keys     stop after deleting this many (scripts/scale/measure.sh)  default none
-- Why a pause by default: deleting a key writes ~700 bytes of WAL, nearly all the full-page image of its heap
-- page, and the claims' commits wait on those flushes. Measured on 10 M keys under 8 clients with interleaved
-- rounds on a quiet machine (docs/scaling.md, "Cleanup under load"): without pauses the clients' median p99
-- rose 1.44x (2.06x in an earlier quiet run) and their p50 1.6-1.8x; with a pause as long as each batch,
-- 1.22x and 1.0-1.3x, for a million keys in 35.5 s instead of 17.0 (under the 60 s required; at 50 s a run,
-- still ~1.4 M keys a minute). The job still stops after 50 seconds (pauses included), then folds the
-- statistics' counter rows, and now raises a notice with what it did (pg_cron logs it only if
-- log_min_messages is notice or lower).
set local lock_timeout = '5s';
set local statement_timeout = '1min';

create or replace function public.idempotency_cleanup_settings()
returns table (batch_size integer, pause_ratio double precision, max_keys bigint)
language plpgsql
stable
set search_path = ''
as $$
declare
  v_batch text := nullif(btrim(current_setting('idempotency.cleanup_batch_size', true)), '');
  v_ratio text := nullif(btrim(current_setting('idempotency.cleanup_pause_ratio', true)), '');
  v_max text := nullif(btrim(current_setting('idempotency.cleanup_max_keys', true)), '');
begin
  -- checked before any cast, so that a typo names the setting instead of failing the job with a bare cast error
  if v_batch is not null and (v_batch !~ '^[0-9]{1,9}$' or v_batch::integer < 1) then
    raise exception 'idempotency.cleanup_batch_size must be a whole number of at least 1, got %', v_batch
      using errcode = '22023';
  end if;
  if v_ratio is not null and v_ratio !~ '^([0-9]{1,6}(\.[0-9]*)?|\.[0-9]+)$' then
    raise exception 'idempotency.cleanup_pause_ratio must be a number of at least 0, got %', v_ratio
      using errcode = '22023';
  end if;
  if v_max is not null and (v_max !~ '^[0-9]{1,18}$' or v_max::bigint < 1) then
    raise exception 'idempotency.cleanup_max_keys must be a whole number of at least 1, got %', v_max
      using errcode = '22023';
  end if;
  return query select coalesce(v_batch::integer, 5000), coalesce(v_ratio::double precision, 1::double precision),
    v_max::bigint;
end;
$$;

comment on function public.idempotency_cleanup_settings() is
  'The cleanup job''s batch size, pause ratio and key cap, from the idempotency.cleanup_* settings or their defaults.';

revoke all on function public.idempotency_cleanup_settings() from public, anon, authenticated;
grant execute on function public.idempotency_cleanup_settings() to service_role;

-- The job: a DO block, as before (a procedure that commits cannot pin its search_path). cron.schedule by name
-- replaces the job of 20261130000300.
do $schedule$
begin
  if exists (select 1 from pg_extension where extname = 'pg_cron') then
    perform cron.schedule('cleanup-expired-idempotency-keys', '* * * * *', $cmd$do $cleanup$
declare
  v_settings record;
  v_batch record;
  v_after timestamptz := '-infinity'::timestamptz;
  v_deadline constant timestamptz := clock_timestamp() + interval '50 seconds';
  v_size integer;
  v_started timestamptz;
  v_took double precision;
  v_slowest double precision := 0::double precision;
  v_paused double precision := 0::double precision;
  v_deleted bigint := 0::bigint;
  v_batches integer := 0;
begin
  select * into strict v_settings from public.idempotency_cleanup_settings();
  loop
    v_size := least(v_settings.batch_size, coalesce(v_settings.max_keys - v_deleted, v_settings.batch_size))::integer;
    v_started := clock_timestamp();
    select * into strict v_batch from public.idempotency_cleanup_batch(v_size, v_after);
    commit;
    v_took := extract(epoch from clock_timestamp() - v_started)::double precision;
    v_slowest := greatest(v_slowest, v_took);
    v_deleted := v_deleted + v_batch.deleted;
    v_batches := v_batches + 1;
    exit when v_batch.examined < v_size or clock_timestamp() >= v_deadline
      or v_deleted >= coalesce(v_settings.max_keys, v_deleted + 1);
    v_after := v_batch.last_purge_after;
    if v_settings.pause_ratio > 0 then
      -- after the commit: no row lock is held, and none of our WAL is in the claims' commit flushes meanwhile
      perform pg_sleep(v_took * v_settings.pause_ratio);
      v_paused := v_paused + v_took * v_settings.pause_ratio;
    end if;
  end loop;
  perform public.idempotency_stats_compact();
  raise notice 'idempotency cleanup: % deleted in % batches (slowest % ms), % s paused', v_deleted, v_batches,
    round((v_slowest * 1000)::numeric, 1), round(v_paused::numeric, 1);
end
$cleanup$
$cmd$);
  else
    raise notice 'pg_cron is not installed: enable it and schedule the cleanup block (docs/operations.md)';
  end if;
end
$schedule$;
