-- Rollback of supabase/migrations/20261130000700_idempotency_stats_writer_rows.sql: the trigger functions,
-- idempotency_stats_add, idempotency_stats (in SQL) and idempotency_stats_rebuild as
-- 20261130000300_idempotency_scale.sql has them; then the counters are rebuilt in that migration's shape
-- (replays per minute instead of per function; a full read of the keys while writers wait). Safe to run twice;
-- one transaction.
--   psql "$DB_URL" -v ON_ERROR_STOP=1 -f supabase/rollback/20261130000700_idempotency_stats_writer_rows_down.sql

begin;

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

create or replace function public.idempotency_stats()
returns table (
  function_name text,
  total bigint,
  processing bigint,
  completed bigint,
  failed bigint,
  replays bigint,
  in_flight bigint,
  stuck bigint,
  expired_pending_cleanup bigint,
  median_processing_ms numeric,
  p95_processing_ms numeric,
  oldest_created_at timestamptz,
  newest_created_at timestamptz
)
language sql
stable
set search_path = ''
set jit = off
as $$
  with bounds as (
    select now() as at,
      date_bin('1 minute', now(), timestamptz '2000-01-01 00:00+00') - interval '1 minute' as exact_from
  ),
  counted as (
    select m.function_name, sum(m.keys::integer) as total, sum(m.processing::integer) as processing,
      sum(m.failed::integer) as failed, sum(m.replays::integer) as replays,
      coalesce(sum(m.keys::integer) filter (where m.expiry_minute < b.exact_from), 0) as due_before,
      -- minutes left empty keep the creation times of keys that are gone: leave them out
      min(m.oldest_created_at) filter (where m.keys <> 0) as oldest_created_at,
      max(m.newest_created_at) filter (where m.keys <> 0) as newest_created_at
    from (
      -- summed as integers (each row holds far fewer than 2^31): a sum of bigint is numeric, several times
      -- slower over the ~10,000 rows of 10 million keys
      select c.function_name, c.expiry_minute, sum(c.keys::integer) as keys,
        sum(c.processing::integer) as processing, sum(c.failed::integer) as failed,
        sum(c.replays::integer) as replays,
        min(c.oldest_created_at) as oldest_created_at, max(c.newest_created_at) as newest_created_at
      from public.idempotency_stats_counters c
      group by c.function_name, c.expiry_minute
    ) m
    cross join bounds b
    group by m.function_name
    having sum(m.keys::integer) <> 0
  ),
  -- live leases only: the requests running right now, found by the lease index
  live as (
    select o.function_name, count(*) as in_flight
    from public.idempotency_open_keys o
    cross join bounds b
    where o.status = 'processing' and o.locked_until > b.at
    group by o.function_name
  ),
  leased_before as (
    select k.function_name, count(*) as n
    from public.idempotency_open_keys o
    join public.idempotency_keys k on k.id = o.record_id
    cross join bounds b
    where o.status = 'processing' and o.locked_until > b.at and k.purge_after < b.exact_from
    group by k.function_name
  ),
  recent as (
    select k.function_name, count(*) as n
    from public.idempotency_keys k
    cross join bounds b
    where k.purge_after >= b.exact_from and k.purge_after < b.at and k.expires_at < b.at
      and not (k.status = 'processing' and k.locked_until > b.at)
    group by k.function_name
  ),
  timing as (
    select coalesce(s.function_name, '*') as function_name,
      round((percentile_cont(0.5) within group (order by s.ms))::numeric, 3) as median_processing_ms,
      round((percentile_cont(0.95) within group (order by s.ms))::numeric, 3) as p95_processing_ms
    from (
      select k.function_name, extract(epoch from k.completed_at - k.started_at) * 1000 as ms
      from public.idempotency_keys k
      where k.status = 'completed'
      order by k.purge_after desc
      limit 5000
    ) s
    group by grouping sets ((s.function_name), ())
  ),
  per_function as (
    select c.function_name, c.total, c.processing,
      c.total - c.processing - c.failed as completed,
      c.failed,
      c.replays,
      coalesce(o.in_flight, 0) as in_flight,
      c.processing - coalesce(o.in_flight, 0) as stuck,
      c.due_before - coalesce(l.n, 0) + coalesce(r.n, 0) as expired_pending_cleanup,
      c.oldest_created_at, c.newest_created_at
    from counted c
    left join live o using (function_name)
    left join leased_before l using (function_name)
    left join recent r using (function_name)
  ),
  all_rows as (
    select * from per_function
    union all
    select '*', coalesce(sum(p.total), 0)::bigint, coalesce(sum(p.processing), 0)::bigint,
      coalesce(sum(p.completed), 0)::bigint, coalesce(sum(p.failed), 0)::bigint,
      coalesce(sum(p.replays), 0)::bigint, coalesce(sum(p.in_flight), 0)::bigint,
      coalesce(sum(p.stuck), 0)::bigint, coalesce(sum(p.expired_pending_cleanup), 0)::bigint,
      min(p.oldest_created_at), max(p.newest_created_at)
    from per_function p
  )
  select a.function_name, a.total, a.processing, a.completed, a.failed, a.replays, a.in_flight, a.stuck,
    a.expired_pending_cleanup, t.median_processing_ms, t.p95_processing_ms,
    a.oldest_created_at, a.newest_created_at
  from all_rows a
  left join timing t using (function_name)
$$;

revoke all on function public.idempotency_stats() from public, anon, authenticated;
grant execute on function public.idempotency_stats() to service_role;

create or replace function public.idempotency_stats_rebuild()
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  lock table public.idempotency_keys in share mode;
  delete from public.idempotency_stats_counters;
  delete from public.idempotency_open_keys;
  insert into public.idempotency_stats_counters (
    function_name, expiry_minute, shard, keys, processing, failed, replays, retried, oldest_created_at,
    newest_created_at
  )
  select k.function_name, date_bin('1 minute', k.purge_after, timestamptz '2000-01-01 00:00+00'), 0,
    count(*), count(*) filter (where k.status = 'processing'), count(*) filter (where k.status = 'failed'),
    coalesce(sum(k.replay_count), 0), count(*) filter (where k.attempt_count > 1),
    min(k.created_at), max(k.created_at)
  from public.idempotency_keys k
  group by 1, 2;
  insert into public.idempotency_open_keys (record_id, function_name, status, locked_until, completed_at)
  select k.id, k.function_name, k.status, k.locked_until, k.completed_at
  from public.idempotency_keys k
  where k.status <> 'completed';
end;
$$;

revoke all on function public.idempotency_stats_rebuild() from public, anon, authenticated;

comment on table public.idempotency_stats_counters is
  'Idempotency key counts per function, minute of first expiry and writer shard; kept by triggers.';

do $$
begin
  perform public.idempotency_stats_rebuild();
end
$$;

do $$
begin
  if to_regclass('supabase_migrations.schema_migrations') is not null then
    delete from supabase_migrations.schema_migrations where version = '20261130000700';
  end if;
end
$$;

commit;
