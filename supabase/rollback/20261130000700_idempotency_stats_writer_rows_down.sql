-- Rollback of supabase/migrations/20261130000700_idempotency_stats_writer_rows.sql: the trigger functions and
-- idempotency_stats_add as 20261130000300_idempotency_scale.sql has them. Counter rows that writers left under
-- their backend pid are folded into shard 0 first (the cleanup job's fold would take them too; this leaves
-- the table as the old triggers expect it). Safe to run twice; one transaction.
--   psql "$DB_URL" -v ON_ERROR_STOP=1 -f supabase/rollback/20261130000700_idempotency_stats_writer_rows_down.sql

begin;

do $$
begin
  if to_regclass('public.idempotency_stats_counters') is not null then
    perform public.idempotency_stats_compact();
  end if;
end
$$;

-- the previous definitions, as 20261130000300 has them
create or replace function public.idempotency_stats_add(
  p_function_name text,
  p_purge_after timestamptz,
  p_keys bigint,
  p_processing bigint,
  p_failed bigint,
  p_replays bigint,
  p_retried bigint,
  p_created_at timestamptz
)
returns void
language sql
set search_path = ''
as $$
  insert into public.idempotency_stats_counters as c (
    function_name, expiry_minute, shard, keys, processing, failed, replays, retried, oldest_created_at,
    newest_created_at
  ) values (
    p_function_name, date_bin('1 minute', p_purge_after, timestamptz '2000-01-01 00:00+00'),
    (pg_backend_pid() % 16)::integer, p_keys, p_processing, p_failed, p_replays, p_retried, p_created_at,
    p_created_at
  )
  on conflict (function_name, expiry_minute, shard) do update set
    keys = c.keys + excluded.keys,
    processing = c.processing + excluded.processing,
    failed = c.failed + excluded.failed,
    replays = c.replays + excluded.replays,
    retried = c.retried + excluded.retried,
    oldest_created_at = least(c.oldest_created_at, excluded.oldest_created_at),
    newest_created_at = greatest(c.newest_created_at, excluded.newest_created_at)
$$;

revoke all on function public.idempotency_stats_add(text, timestamptz, bigint, bigint, bigint, bigint, bigint,
  timestamptz) from public, anon, authenticated;

create or replace function public.idempotency_keys_track()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'INSERT' then
    perform public.idempotency_stats_add(new.function_name, new.purge_after, 1,
      (new.status = 'processing')::int, (new.status = 'failed')::int, new.replay_count,
      (new.attempt_count > 1)::int, new.created_at);
    if new.status <> 'completed' then
      insert into public.idempotency_open_keys (record_id, function_name, status, locked_until, completed_at)
      values (new.id, new.function_name, new.status, new.locked_until, new.completed_at);
    end if;
    return null;
  end if;

  -- UPDATE: take the row out of its old counters and into its new ones, in one call when they are the same
  if new.function_name <> old.function_name
    or date_bin('1 minute', new.purge_after, timestamptz '2000-01-01 00:00+00')
      <> date_bin('1 minute', old.purge_after, timestamptz '2000-01-01 00:00+00') then
    perform public.idempotency_stats_add(old.function_name, old.purge_after, -1,
      -(old.status = 'processing')::int, -(old.status = 'failed')::int, -old.replay_count,
      -(old.attempt_count > 1)::int, null);
    perform public.idempotency_stats_add(new.function_name, new.purge_after, 1,
      (new.status = 'processing')::int, (new.status = 'failed')::int, new.replay_count,
      (new.attempt_count > 1)::int, new.created_at);
  elsif new.status <> old.status or new.replay_count <> old.replay_count
    or new.attempt_count <> old.attempt_count or new.created_at <> old.created_at then
    perform public.idempotency_stats_add(new.function_name, new.purge_after, 0,
      (new.status = 'processing')::int - (old.status = 'processing')::int,
      (new.status = 'failed')::int - (old.status = 'failed')::int,
      new.replay_count - old.replay_count, (new.attempt_count > 1)::int - (old.attempt_count > 1)::int,
      case when new.created_at <> old.created_at then new.created_at end);
  end if;

  if new.status = 'completed' then
    if old.status <> 'completed' then
      delete from public.idempotency_open_keys where record_id = old.id;
    end if;
  elsif old.status = 'completed' or new.status <> old.status or new.function_name <> old.function_name
    or new.locked_until is distinct from old.locked_until or new.completed_at is distinct from old.completed_at
  then
    insert into public.idempotency_open_keys as o (record_id, function_name, status, locked_until, completed_at)
    values (new.id, new.function_name, new.status, new.locked_until, new.completed_at)
    on conflict (record_id) do update set
      function_name = excluded.function_name, status = excluded.status,
      locked_until = excluded.locked_until, completed_at = excluded.completed_at;
  end if;
  return null;
end;
$$;

create or replace function public.idempotency_keys_track_delete()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform public.idempotency_stats_add(g.function_name, g.expiry_minute, -g.keys, -g.processing, -g.failed,
    -g.replays, -g.retried, null)
  from (
    select d.function_name, date_bin('1 minute', d.purge_after, timestamptz '2000-01-01 00:00+00') as expiry_minute,
      count(*) as keys, count(*) filter (where d.status = 'processing') as processing,
      count(*) filter (where d.status = 'failed') as failed, sum(d.replay_count) as replays,
      count(*) filter (where d.attempt_count > 1) as retried
    from gone d
    group by 1, 2
    order by 1, 2
  ) g;
  -- by primary key: the few open keys among the deleted ones, not a join over every open key
  delete from public.idempotency_open_keys o
  where o.record_id = any (array(select d.id from gone d where d.status <> 'completed'));
  return null;
end;
$$;

revoke all on function public.idempotency_keys_track() from public, anon, authenticated;
revoke all on function public.idempotency_keys_track_delete() from public, anon, authenticated;

comment on table public.idempotency_stats_counters is
  'Idempotency key counts per function, minute of first expiry and writer shard; kept by triggers.';

do $$
begin
  if to_regclass('supabase_migrations.schema_migrations') is not null then
    delete from supabase_migrations.schema_migrations where version = '20261130000700';
  end if;
end
$$;

commit;
