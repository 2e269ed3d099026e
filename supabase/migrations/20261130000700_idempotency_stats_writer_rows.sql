-- Statistics nearly free on the claim path. 20261130000300 keeps v_idempotency_stats fast with counters that
-- triggers update as keys change; measured (docs/scaling.md), those triggers cost about as much CPU as the
-- claim itself, for two reasons this migration removes:
--   * each change went through idempotency_stats_add, a SQL function called from PL/pgSQL. Postgres cannot
--     inline it (it pins search_path) and plans its statement again at every call: ~0.1 ms of CPU each, two
--     per begin+complete. The triggers now run the same upsert themselves, as a PL/pgSQL statement whose plan
--     is cached for the session.
--   * a writer added to the row of shard pid % 16, and kept it locked until its commit (its WAL flush), so
--     two of 8 connections sharing a shard queued behind each other. The shard is now the writer's backend
--     pid itself: a backend runs one transaction at a time, so no writer ever waits for another's counter row.
--     The cleanup job still folds the writers' rows into shard 0 every minute (skipping rows a writer holds),
--     so the view reads about one row per function and minute, plus one per writer and minute since the last
--     fold.
-- Unchanged: the tables, the triggers' names and events, idempotency_open_keys (the stuck and failure
-- dashboards read it, kept in the same transaction), the fold, the view and its columns. Only the two trigger
-- functions are replaced, and the helper nothing calls any more is dropped.
--
-- Considered and measured against this (docs/scaling.md): an append-only table of deltas, folded by the cron
-- job and summed by the view at read time. Its writes cost the same here, but a minute of traffic at 1,000
-- claims/s is 120,000 rows for the view to sum: it took the view past 100 ms on this machine. The rows per
-- writer are a few per minute whatever the rate.
--
-- Re-running this file is harmless: it only replaces functions and drops one if it exists.

set local lock_timeout = '5s';
set local statement_timeout = '1min';

-- Inserts and updates (the request path touches one row per statement). A change that moves the key to
-- another function or minute of first expiry takes it out of the old row and into the new one; a change of
-- anything else counted adjusts one row; a change of nothing counted (a renewed lease) writes none. Security
-- definer: the counters are written for whoever changed the keys.
create or replace function public.idempotency_keys_track()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_minute timestamptz := date_bin('1 minute', new.purge_after, timestamptz '2000-01-01 00:00+00');
  v_old_minute timestamptz;
  -- this backend's own counter rows: no other writer ever locks them
  v_shard integer := pg_backend_pid();
begin
  if tg_op = 'INSERT' then
    insert into public.idempotency_stats_counters as c (
      function_name, expiry_minute, shard, keys, processing, failed, replays, retried, oldest_created_at,
      newest_created_at
    ) values (
      new.function_name, v_minute, v_shard, 1, (new.status = 'processing')::integer,
      (new.status = 'failed')::integer, new.replay_count, (new.attempt_count > 1)::integer, new.created_at,
      new.created_at
    )
    on conflict (function_name, expiry_minute, shard) do update set
      keys = c.keys + excluded.keys,
      processing = c.processing + excluded.processing,
      failed = c.failed + excluded.failed,
      replays = c.replays + excluded.replays,
      retried = c.retried + excluded.retried,
      oldest_created_at = least(c.oldest_created_at, excluded.oldest_created_at),
      newest_created_at = greatest(c.newest_created_at, excluded.newest_created_at);
    if new.status <> 'completed' then
      insert into public.idempotency_open_keys (record_id, function_name, status, locked_until, completed_at)
      values (new.id, new.function_name, new.status, new.locked_until, new.completed_at);
    end if;
    return null;
  end if;

  v_old_minute := date_bin('1 minute', old.purge_after, timestamptz '2000-01-01 00:00+00');
  if new.function_name <> old.function_name or v_minute <> v_old_minute then
    insert into public.idempotency_stats_counters as c (
      function_name, expiry_minute, shard, keys, processing, failed, replays, retried, oldest_created_at,
      newest_created_at
    )
    select m.function_name, m.expiry_minute, v_shard, m.keys, m.processing, m.failed, m.replays, m.retried,
      m.created_at, m.created_at
    from (values
      (old.function_name, v_old_minute, -1, -(old.status = 'processing')::integer,
        -(old.status = 'failed')::integer, -old.replay_count, -(old.attempt_count > 1)::integer,
        null::timestamptz),
      (new.function_name, v_minute, 1, (new.status = 'processing')::integer, (new.status = 'failed')::integer,
        new.replay_count, (new.attempt_count > 1)::integer, new.created_at)
    ) m (function_name, expiry_minute, keys, processing, failed, replays, retried, created_at)
    on conflict (function_name, expiry_minute, shard) do update set
      keys = c.keys + excluded.keys,
      processing = c.processing + excluded.processing,
      failed = c.failed + excluded.failed,
      replays = c.replays + excluded.replays,
      retried = c.retried + excluded.retried,
      oldest_created_at = least(c.oldest_created_at, excluded.oldest_created_at),
      newest_created_at = greatest(c.newest_created_at, excluded.newest_created_at);
  elsif new.status <> old.status or new.replay_count <> old.replay_count
    or new.attempt_count <> old.attempt_count or new.created_at <> old.created_at then
    insert into public.idempotency_stats_counters as c (
      function_name, expiry_minute, shard, keys, processing, failed, replays, retried, oldest_created_at,
      newest_created_at
    ) values (
      new.function_name, v_minute, v_shard, 0,
      (new.status = 'processing')::integer - (old.status = 'processing')::integer,
      (new.status = 'failed')::integer - (old.status = 'failed')::integer,
      new.replay_count - old.replay_count, (new.attempt_count > 1)::integer - (old.attempt_count > 1)::integer,
      case when new.created_at <> old.created_at then new.created_at end,
      case when new.created_at <> old.created_at then new.created_at end
    )
    on conflict (function_name, expiry_minute, shard) do update set
      keys = c.keys + excluded.keys,
      processing = c.processing + excluded.processing,
      failed = c.failed + excluded.failed,
      replays = c.replays + excluded.replays,
      retried = c.retried + excluded.retried,
      oldest_created_at = least(c.oldest_created_at, excluded.oldest_created_at),
      newest_created_at = greatest(c.newest_created_at, excluded.newest_created_at);
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

-- Deletes, per statement (cleanup batches, purges, the auth.users cascade): one counter row per function and
-- minute, all of this backend's own shard. (Until now they were written in key order, so that two bulk deletes
-- could not deadlock on shared rows; no other writer locks these rows, and the fold skips locked ones.)
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
    -count(*) filter (where d.status = 'failed'), -sum(d.replay_count),
    -count(*) filter (where d.attempt_count > 1)
  from gone d
  group by 1, 2
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

comment on table public.idempotency_stats_counters is
  'Idempotency key counts per function, minute of first expiry and writer (shard: the writer''s backend pid; '
  '0 once folded by the cleanup job); kept by triggers.';
