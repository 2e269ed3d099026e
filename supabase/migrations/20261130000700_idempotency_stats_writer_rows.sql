-- Statistics nearly free on the claim path. 20261130000300 keeps v_idempotency_stats fast with counters that
-- triggers update as keys change; measured (docs/scaling.md), those triggers cost about as much CPU as the
-- claim itself. This migration removes the causes and keeps the view, its columns and its figures:
--   * each change went through idempotency_stats_add, a SQL function called from PL/pgSQL. Postgres cannot
--     inline it (it pins search_path) and plans its statement again at every call: ~0.1 ms of CPU each, two
--     per begin+complete. The trigger now runs one upsert itself, a PL/pgSQL statement whose plan is cached
--     for the session.
--   * a writer added to the row of shard pid % 16 and kept it locked until its commit (its WAL flush), so two
--     of 8 connections sharing a shard queued behind each other. The shard is now the writer's backend pid: a
--     backend runs one transaction at a time, so no writer ever waits for another's counter row. The cleanup
--     job still folds the writers' rows into shard 0 every minute (skipping rows a writer holds).
--   * a replay added to the row of the replayed key's minute of first expiry, so a minute of replays of keys
--     of every age left a row per writer and minute of the TTL window (14,000 rows for the view to sum after
--     60 s at 8 clients). The view only ever sums replays per function, so they now have one row per function,
--     at expiry_minute '-infinity'; deleting a key takes its replays from there.
-- The rows the view reads are then one per function and minute once folded, plus a few per writer since the
-- last fold (the minutes its new keys expire in, and its function's replays), whatever the traffic.
--
-- Considered and measured against this (docs/scaling.md): an append-only table of deltas, folded by the cron
-- job and summed by the view at read time. Its writes cost about the same here, but a minute of traffic at
-- 1,000 claims/s is 120,000 rows for the view to sum: it took the view past 100 ms on this machine.
--
-- Re-running this file is harmless: it replaces functions, drops one if it exists, and moves replays that
-- minute rows hold (none, unless 20261130000300 was re-run) to their function's row.

set local lock_timeout = '5s';
set local statement_timeout = '10min';

-- counters ----------------------------------------------------------------------------------------------------

-- While the counters change shape: no claim runs (a running one finishes first, and one that starts after this
-- commits runs the new trigger, as taking its table lock reloads the function) and no fold. In a DO block: the
-- Supabase CLI sends a file as one implicit transaction, where a top-level LOCK is refused; the locks still
-- last until the file's commit.
do $$
begin
  lock table public.idempotency_keys in share mode;
  lock table public.idempotency_stats_counters in exclusive mode;
end
$$;

-- replays: one row per function
insert into public.idempotency_stats_counters as c (
  function_name, expiry_minute, shard, keys, processing, failed, replays, retried
)
select c.function_name, '-infinity', 0, 0, 0, 0, sum(c.replays), 0
from public.idempotency_stats_counters c
where c.expiry_minute <> '-infinity'
group by c.function_name
having sum(c.replays) <> 0
on conflict (function_name, expiry_minute, shard) do update set replays = c.replays + excluded.replays;

update public.idempotency_stats_counters c set replays = 0
where c.expiry_minute <> '-infinity' and c.replays <> 0;

comment on table public.idempotency_stats_counters is
  'Idempotency key counts per function, minute of first expiry (-infinity: the function''s replays) and writer '
  '(shard: the writer''s backend pid, 0 once folded by the cleanup job); kept by triggers.';

-- triggers ----------------------------------------------------------------------------------------------------

-- Inserts and updates (the request path touches one row per statement). A change that moves the key to
-- another function or minute of first expiry takes it out of the old row and into the new one; a change of
-- anything else counted adjusts one row; a replay adds to its function's replays row; a change of nothing
-- counted (a renewed lease) writes none. On the request path each write is an UPDATE of a row this backend
-- wrote before (one WAL record, 76 bytes; an upsert locks the row first and writes two, 130 bytes), inserted
-- the first time. All in statements of the trigger itself (measured: one statement summing every case from
-- VALUES cost twice as much CPU). Security definer: the counters are written for whoever changed the keys.
create or replace function public.idempotency_keys_track()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_minute timestamptz := date_bin('1 minute', new.purge_after, timestamptz '2000-01-01 00:00+00');
  v_old_minute timestamptz;
  -- this backend's own rows: no other writer ever locks them
  v_shard integer := pg_backend_pid();
  -- what this change adds to the row of the key's function and minute, unless it moves the key
  v_keys integer := 0;
  v_processing integer := 0;
  v_failed integer := 0;
  v_retried integer := 0;
  v_created timestamptz;
  -- and to the function's replays row
  v_replays integer := new.replay_count;
begin
  if tg_op = 'INSERT' then
    v_keys := 1;
    v_processing := (new.status = 'processing')::integer;
    v_failed := (new.status = 'failed')::integer;
    v_retried := (new.attempt_count > 1)::integer;
    v_created := new.created_at;
  else
    v_old_minute := date_bin('1 minute', old.purge_after, timestamptz '2000-01-01 00:00+00');
    if new.function_name <> old.function_name or v_minute <> v_old_minute then
      insert into public.idempotency_stats_counters as c (
        function_name, expiry_minute, shard, keys, processing, failed, retried, oldest_created_at,
        newest_created_at
      ) values (
        old.function_name, v_old_minute, v_shard, -1, -(old.status = 'processing')::integer,
        -(old.status = 'failed')::integer, -(old.attempt_count > 1)::integer, null, null
      ), (
        new.function_name, v_minute, v_shard, 1, (new.status = 'processing')::integer,
        (new.status = 'failed')::integer, (new.attempt_count > 1)::integer, new.created_at, new.created_at
      )
      on conflict (function_name, expiry_minute, shard) do update set
        keys = c.keys + excluded.keys,
        processing = c.processing + excluded.processing,
        failed = c.failed + excluded.failed,
        retried = c.retried + excluded.retried,
        oldest_created_at = least(c.oldest_created_at, excluded.oldest_created_at),
        newest_created_at = greatest(c.newest_created_at, excluded.newest_created_at);
    else
      v_processing := (new.status = 'processing')::integer - (old.status = 'processing')::integer;
      v_failed := (new.status = 'failed')::integer - (old.status = 'failed')::integer;
      v_retried := (new.attempt_count > 1)::integer - (old.attempt_count > 1)::integer;
      v_created := case when new.created_at <> old.created_at then new.created_at end;
    end if;
    if new.function_name <> old.function_name then
      insert into public.idempotency_stats_counters as c (function_name, expiry_minute, shard, replays)
      values (old.function_name, '-infinity', v_shard, -old.replay_count)
      on conflict (function_name, expiry_minute, shard) do update set replays = c.replays + excluded.replays;
    else
      v_replays := new.replay_count - old.replay_count;
    end if;
  end if;

  if v_keys <> 0 or v_processing <> 0 or v_failed <> 0 or v_retried <> 0 or v_created is not null then
    update public.idempotency_stats_counters c set
      keys = c.keys + v_keys,
      processing = c.processing + v_processing,
      failed = c.failed + v_failed,
      retried = c.retried + v_retried,
      oldest_created_at = least(c.oldest_created_at, v_created),
      newest_created_at = greatest(c.newest_created_at, v_created)
    where c.function_name = new.function_name and c.expiry_minute = v_minute and c.shard = v_shard;
    if not found then
      insert into public.idempotency_stats_counters as c (
        function_name, expiry_minute, shard, keys, processing, failed, retried, oldest_created_at,
        newest_created_at
      ) values (
        new.function_name, v_minute, v_shard, v_keys, v_processing, v_failed, v_retried, v_created, v_created
      )
      -- not expected (only this backend writes its rows, and a fold deletes those it takes): a claim must
      -- never fail on its statistics
      on conflict (function_name, expiry_minute, shard) do update set
        keys = c.keys + excluded.keys,
        processing = c.processing + excluded.processing,
        failed = c.failed + excluded.failed,
        retried = c.retried + excluded.retried,
        oldest_created_at = least(c.oldest_created_at, excluded.oldest_created_at),
        newest_created_at = greatest(c.newest_created_at, excluded.newest_created_at);
    end if;
  end if;
  if v_replays <> 0 then
    update public.idempotency_stats_counters c set replays = c.replays + v_replays
    where c.function_name = new.function_name and c.expiry_minute = '-infinity' and c.shard = v_shard;
    if not found then
      insert into public.idempotency_stats_counters as c (function_name, expiry_minute, shard, replays)
      values (new.function_name, '-infinity', v_shard, v_replays)
      on conflict (function_name, expiry_minute, shard) do update set replays = c.replays + excluded.replays;
    end if;
  end if;

  -- the open keys, as before: the stuck and failure dashboards read them and must not lag
  if tg_op = 'INSERT' then
    if new.status <> 'completed' then
      insert into public.idempotency_open_keys (record_id, function_name, status, locked_until, completed_at)
      values (new.id, new.function_name, new.status, new.locked_until, new.completed_at);
    end if;
  elsif new.status = 'completed' then
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

-- Deletes, per statement (cleanup batches, purges, the auth.users cascade): one row per function and minute,
-- and the replays from the function's row, all in this backend's own rows. (They were written in key order so
-- that two bulk deletes could not deadlock on shared rows; no other writer locks these, and the fold skips
-- locked rows.)
create or replace function public.idempotency_keys_track_delete()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into public.idempotency_stats_counters as c (
    function_name, expiry_minute, shard, keys, processing, failed, replays, retried
  )
  select d.function_name, date_bin('1 minute', d.purge_after, timestamptz '2000-01-01 00:00+00'),
    pg_backend_pid(), -count(*), -count(*) filter (where d.status = 'processing'),
    -count(*) filter (where d.status = 'failed'), 0, -count(*) filter (where d.attempt_count > 1)
  from gone d
  group by 1, 2
  union all
  select d.function_name, '-infinity', pg_backend_pid(), 0, 0, 0, -sum(d.replay_count), 0
  from gone d
  group by 1
  having sum(d.replay_count) <> 0
  on conflict (function_name, expiry_minute, shard) do update set
    keys = c.keys + excluded.keys,
    processing = c.processing + excluded.processing,
    failed = c.failed + excluded.failed,
    replays = c.replays + excluded.replays,
    retried = c.retried + excluded.retried;
  -- by primary key: the few open keys among the deleted ones, not a join over every open key
  delete from public.idempotency_open_keys o
  where o.record_id = any (array(select d.id from gone d where d.status <> 'completed'));
  return null;
end;
$$;

revoke all on function public.idempotency_keys_track() from public, anon, authenticated;
revoke all on function public.idempotency_keys_track_delete() from public, anon, authenticated;

-- Nothing calls it any more.
drop function if exists public.idempotency_stats_add(text, timestamptz, bigint, bigint, bigint, bigint, bigint,
  timestamptz);

-- Recomputes both side tables from idempotency_keys (after a bulk load with triggers off, or to check them), in
-- the shape above. Blocks writers to the keys while it reads them: a full scan, seconds at 10 million rows.
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
    count(*), count(*) filter (where k.status = 'processing'), count(*) filter (where k.status = 'failed'), 0,
    count(*) filter (where k.attempt_count > 1), min(k.created_at), max(k.created_at)
  from public.idempotency_keys k
  group by 1, 2
  union all
  select k.function_name, '-infinity', 0, 0, 0, 0, sum(k.replay_count), 0, null, null
  from public.idempotency_keys k
  group by 1
  having sum(k.replay_count) <> 0;
  insert into public.idempotency_open_keys (record_id, function_name, status, locked_until, completed_at)
  select k.id, k.function_name, k.status, k.locked_until, k.completed_at
  from public.idempotency_keys k
  where k.status <> 'completed';
end;
$$;

revoke all on function public.idempotency_stats_rebuild() from public, anon, authenticated;

-- the view's figures ------------------------------------------------------------------------------------------

-- The same query as in 20261130000300, in PL/pgSQL: a SQL function's query is planned at every call (7 to 24 ms
-- of the view's time here, under load), a PL/pgSQL one once per session (the metrics endpoint's pool, a
-- dashboard's connection). The counters it reads now hold one row per function and minute once folded, plus
-- one per writer and minute changed since the last fold.
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
language plpgsql
stable
set search_path = ''
set jit = off
as $$
-- the query's column names, not the result's, wherever they coincide
#variable_conflict use_column
begin
  return query
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
  left join timing t using (function_name);
end;
$$;

revoke all on function public.idempotency_stats() from public, anon, authenticated;
grant execute on function public.idempotency_stats() to service_role;
