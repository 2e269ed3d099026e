-- Rollback of supabase/migrations/20261130000300_idempotency_scale.sql: puts back the shape of
-- 20261123000100_idempotency_keys.sql (its five indexes in place of user_id alone, the view that reads the whole table, the hourly cleanup, default storage settings) and removes
-- what the scale migration added (purge_after, the counters, their triggers and functions). Rows are kept.
-- Safe to run twice; one transaction.
--   psql "$DB_URL" -v ON_ERROR_STOP=1 -f supabase/rollback/20261130000300_idempotency_scale_down.sql

begin;

do $$
begin
  if to_regclass('public.idempotency_keys') is null then
    return;
  end if;

  -- the hourly job of the first migration, in place of the every-minute block
  if to_regclass('cron.job') is not null then
    perform cron.schedule('cleanup-expired-idempotency-keys', '0 * * * *',
      'select public.cleanup_expired_idempotency_keys()');
  end if;

  drop trigger if exists idempotency_keys_track_insert on public.idempotency_keys;
  drop trigger if exists idempotency_keys_track_update on public.idempotency_keys;
  drop trigger if exists idempotency_keys_track_delete on public.idempotency_keys;
  drop trigger if exists idempotency_keys_track_truncate on public.idempotency_keys;
  drop trigger if exists idempotency_keys_purge_after_insert on public.idempotency_keys;
  drop trigger if exists idempotency_keys_purge_after_update on public.idempotency_keys;

  create index if not exists idempotency_keys_expires_at_idx
    on public.idempotency_keys (expires_at);
  create index if not exists idempotency_keys_processing_lease_idx
    on public.idempotency_keys (locked_until) where status = 'processing';
  create index if not exists idempotency_keys_user_created_idx
    on public.idempotency_keys (user_id, created_at desc);
  create index if not exists idempotency_keys_function_created_idx
    on public.idempotency_keys (function_name, created_at desc);
  create index if not exists idempotency_keys_failed_idx
    on public.idempotency_keys (completed_at desc) where status = 'failed';

  drop index if exists public.idempotency_keys_user_idx;

  alter table public.idempotency_keys alter column id set default gen_random_uuid();
  alter table public.idempotency_keys reset (
    fillfactor, autovacuum_vacuum_scale_factor, autovacuum_vacuum_insert_scale_factor,
    autovacuum_analyze_scale_factor
  );
end
$$;

-- the previous definitions, as 20261123000100 has them
create or replace function public.idempotency_begin(
  p_key text,
  p_user_id uuid,
  p_function_name text,
  p_fingerprint text,
  p_ttl_seconds integer default 86400,
  p_lock_timeout_seconds integer default 30
)
returns table (
  outcome text,
  record_id uuid,
  lease_token uuid,
  status_code integer,
  response bytea,
  response_encoding text,
  response_headers jsonb,
  retry_after_seconds integer,
  attempt_count integer,
  replay_count integer,
  expires_at timestamptz
)
language plpgsql
volatile
set search_path = ''
as $$
declare
  v_row public.idempotency_keys%rowtype;
  v_token uuid := gen_random_uuid();
  v_now timestamptz := clock_timestamp();
  -- expired, and no worker still holds a live lease on it: expiry never pre-empts running work
  v_expired boolean;
begin
  if p_ttl_seconds is null or p_ttl_seconds < 1 then
    raise exception 'ttl must be at least 1 second, got %', p_ttl_seconds using errcode = '22023';
  end if;
  if p_lock_timeout_seconds is null or p_lock_timeout_seconds < 1 then
    raise exception 'lock timeout must be at least 1 second, got %', p_lock_timeout_seconds
      using errcode = '22023';
  end if;

  loop
    insert into public.idempotency_keys as k (
      idempotency_key, user_id, function_name, request_fingerprint, status,
      locked_until, lease_token, created_at, started_at, expires_at
    ) values (
      p_key, p_user_id, p_function_name, p_fingerprint, 'processing',
      v_now + make_interval(secs => p_lock_timeout_seconds), v_token, v_now, v_now,
      v_now + make_interval(secs => p_ttl_seconds)
    )
    on conflict on constraint idempotency_keys_key_user_unique do nothing
    returning k.* into v_row;
    exit when found;

    -- The common duplicate, a retry of completed work, is answered by this one statement. clock_timestamp()
    -- is read after any wait for the row lock, so expiry is judged at the moment the row is ours.
    update public.idempotency_keys k
    set replay_count = k.replay_count + 1, last_replayed_at = clock_timestamp()
    where k.idempotency_key = p_key and k.user_id is not distinct from p_user_id
      and k.status = 'completed' and k.request_fingerprint = p_fingerprint and k.expires_at > clock_timestamp()
    returning k.* into v_row;

    if found then
      return query select 'replay'::text, v_row.id, null::uuid, v_row.status_code, v_row.response,
        v_row.response_encoding, v_row.response_headers, null::integer, v_row.attempt_count,
        v_row.replay_count, v_row.expires_at;
      return;
    end if;

    select k.* into v_row
    from public.idempotency_keys k
    where k.idempotency_key = p_key and k.user_id is not distinct from p_user_id
    for update;
    -- removed by cleanup since the insert: claim it again
    continue when not found;

    -- Read the clock again now that the row is locked: the insert and the lock may have waited for other
    -- callers, and a clock read before that wait would make a live lease look longer than it is (retry_after
    -- above the lock timeout), keep an ended lease from being taken over, and shorten a taken-over lease.
    v_now := clock_timestamp();
    v_expired := v_row.expires_at <= v_now
      and not (v_row.status = 'processing' and v_row.locked_until > v_now);

    -- completed since the replay update looked: go round, and that update counts the replay
    continue when not v_expired and v_row.status = 'completed' and v_row.request_fingerprint = p_fingerprint;

    if not v_expired and v_row.request_fingerprint <> p_fingerprint then
      return query select 'mismatch'::text, v_row.id, null::uuid, null::integer, null::bytea, null::text,
        null::jsonb, null::integer, v_row.attempt_count, v_row.replay_count, v_row.expires_at;
      return;
    end if;

    if not v_expired and v_row.status = 'processing' and v_row.locked_until > v_now then
      return query select 'in_progress'::text, v_row.id, null::uuid, null::integer, null::bytea, null::text,
        null::jsonb, greatest(1, ceil(extract(epoch from v_row.locked_until - v_now)))::integer,
        v_row.attempt_count, v_row.replay_count, v_row.expires_at;
      return;
    end if;

    -- Take over: an expired key starts afresh; a failed or abandoned one is attempted again.
    update public.idempotency_keys k set
      function_name = p_function_name,
      request_fingerprint = p_fingerprint,
      status = 'processing',
      response = null,
      response_encoding = 'identity',
      status_code = null,
      response_headers = null,
      error_message = null,
      locked_until = v_now + make_interval(secs => p_lock_timeout_seconds),
      lease_token = v_token,
      attempt_count = case when v_expired then 1 else k.attempt_count + 1 end,
      replay_count = case when v_expired then 0 else k.replay_count end,
      last_replayed_at = case when v_expired then null else k.last_replayed_at end,
      created_at = case when v_expired then v_now else k.created_at end,
      started_at = v_now,
      completed_at = null,
      expires_at = case when v_expired
        then v_now + make_interval(secs => p_ttl_seconds) else k.expires_at end
    where k.id = v_row.id
    returning k.* into v_row;
    exit;
  end loop;

  return query select 'started'::text, v_row.id, v_token, null::integer, null::bytea, null::text,
    null::jsonb, null::integer, v_row.attempt_count, v_row.replay_count, v_row.expires_at;
end;
$$;

create or replace function public.cleanup_expired_idempotency_keys(
  batch_size integer default 10000,
  max_batches integer default 100
)
returns bigint
language plpgsql
volatile
set search_path = ''
as $$
declare
  v_total bigint := 0;
  v_batch bigint;
begin
  if batch_size is null or batch_size < 1 then
    raise exception 'batch_size must be at least 1, got %', batch_size using errcode = '22023';
  end if;
  for i in 1 .. greatest(coalesce(max_batches, 1), 1) loop
    with doomed as (
      select k.id from public.idempotency_keys k
      where k.expires_at < now()
        and not (k.status = 'processing' and k.locked_until > now())
      order by k.expires_at
      limit batch_size
      for update skip locked
    )
    delete from public.idempotency_keys k using doomed where k.id = doomed.id;
    get diagnostics v_batch = row_count;
    v_total := v_total + v_batch;
    exit when v_batch < batch_size;
  end loop;
  return v_total;
end;
$$;

create or replace view public.v_idempotency_stats
with (security_invoker = true)
as
select
  coalesce(k.function_name, '*') as function_name,
  count(*) as total,
  count(*) filter (where k.status = 'processing') as processing,
  count(*) filter (where k.status = 'completed') as completed,
  count(*) filter (where k.status = 'failed') as failed,
  coalesce(sum(k.replay_count), 0) as replays,
  count(*) filter (where k.status = 'processing' and k.locked_until > now()) as in_flight,
  count(*) filter (where k.status = 'processing' and k.locked_until <= now()) as stuck,
  -- what cleanup_expired_idempotency_keys would delete now
  count(*) filter (where k.expires_at < now() and not (k.status = 'processing' and k.locked_until > now()))
    as expired_pending_cleanup,
  round((percentile_cont(0.5) within group (order by extract(epoch from k.completed_at - k.started_at) * 1000)
    filter (where k.status = 'completed'))::numeric, 3) as median_processing_ms,
  round((percentile_cont(0.95) within group (order by extract(epoch from k.completed_at - k.started_at) * 1000)
    filter (where k.status = 'completed'))::numeric, 3) as p95_processing_ms,
  min(k.created_at) as oldest_created_at,
  max(k.created_at) as newest_created_at
from public.idempotency_keys k
group by grouping sets ((k.function_name), ());

drop function if exists public.idempotency_stats();
drop function if exists public.idempotency_cleanup_batch(integer, timestamptz);
drop function if exists public.idempotency_stats_compact();
drop function if exists public.idempotency_stats_rebuild();
drop function if exists public.idempotency_keys_track();
drop function if exists public.idempotency_keys_track_delete();
drop function if exists public.idempotency_keys_track_truncate();
drop function if exists public.idempotency_stats_add(text, timestamptz, bigint, bigint, bigint, bigint, bigint,
  timestamptz);
drop function if exists public.idempotency_keys_set_purge_after();
drop function if exists public.idempotency_uuid_v7();
drop table if exists public.idempotency_stats_counters;
drop table if exists public.idempotency_open_keys;
alter table if exists public.idempotency_keys drop column if exists purge_after;

do $$
begin
  if to_regclass('supabase_migrations.schema_migrations') is not null then
    delete from supabase_migrations.schema_migrations where version = '20261130000300';
  end if;
end
$$;

commit;
