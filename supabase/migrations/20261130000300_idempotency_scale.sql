-- Idempotency keys at 10 million rows: completions that are HOT updates, cleanup in batches that commit on
-- their own, and a stats view that reads counters instead of the whole table.
--
-- What changes (docs/scaling.md has the figures behind each choice):
--   * A completion may change no indexed column, or Postgres rewrites every index entry of the row. It
--     changes status, response, expires_at, locked_until, lease_token and completed_at, so no index may cover
--     them, not even in a partial index's predicate. Five indexes go: expires_at, the processing-lease and
--     failed partial indexes, (user_id, created_at) and (function_name, created_at). What they served:
--       - cleanup finds rows by purge_after, the key's first expiry, which a completion does not change;
--       - per-user lookups and the auth.users cascade use an index on user_id alone (deduplicated: small);
--       - the stats view and dashboards read idempotency_stats_counters and idempotency_open_keys, kept by
--         triggers as rows change.
--   * fillfactor 90: a completed row is ~400 bytes longer than the claim it replaces, and the new version
--     must fit on the same page for the update to be HOT.
--   * ids in time order (UUID v7), so the primary key fills its pages at the right edge.
--   * autovacuum at 1 % of the table instead of 20 %, so that space freed by cleanup is reused before the
--     table grows.
--
-- Re-running this file is harmless: each step checks or replaces, and the counters are rebuilt from the table.

-- Bounded waits. A lock it cannot get within 5 s fails the deploy instead of queueing every request behind
-- it. The backfill of purge_after and the index build scale with the table (minutes at 10 million keys, see
-- docs/scaling.md), hence the long statement timeout.
set local lock_timeout = '5s';
set local statement_timeout = '30min';

-- purge_after -------------------------------------------------------------------------------------------------

-- The key's first expiry, never later than expires_at (or the end of a live lease). A completion extends
-- expires_at (a stored response is kept a full TTL from completion) but leaves purge_after alone, so the index
-- on it does not stop HOT.
-- Cleanup visits rows in purge_after order, deletes those really expired, and moves purge_after up to the
-- expiry of the few that are not (responses stored late, live leases).
alter table public.idempotency_keys add column if not exists purge_after timestamptz;

comment on column public.idempotency_keys.purge_after is
  'When cleanup first looks at the key: its first expiry, never after expires_at or a live lease''s end. '
  'Not changed by a completion.';

-- Set on insert, and pulled down if an update brings expires_at (or the end of a live lease) before it: callers
-- need not know it.
create or replace function public.idempotency_keys_set_purge_after()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  -- greatest ignores a null lease: an expired key under a live lease may wait for the lease to end
  new.purge_after := least(coalesce(new.purge_after, new.expires_at), greatest(new.expires_at, new.locked_until));
  return new;
end;
$$;

revoke all on function public.idempotency_keys_set_purge_after() from public, anon, authenticated;

drop trigger if exists idempotency_keys_purge_after_insert on public.idempotency_keys;
create trigger idempotency_keys_purge_after_insert
  before insert on public.idempotency_keys
  for each row when (new.purge_after is null or new.purge_after > greatest(new.expires_at, new.locked_until))
  execute function public.idempotency_keys_set_purge_after();
drop trigger if exists idempotency_keys_purge_after_update on public.idempotency_keys;
create trigger idempotency_keys_purge_after_update
  before update on public.idempotency_keys
  for each row when (new.purge_after is null or new.purge_after > greatest(new.expires_at, new.locked_until))
  execute function public.idempotency_keys_set_purge_after();

-- rows that predate this migration (one pass over the table)
update public.idempotency_keys set purge_after = expires_at where purge_after is null;
-- Deliberate: the scan that checks NOT NULL runs once, right after the backfill above wrote every row.
-- squawk-ignore adding-not-nullable-field
alter table public.idempotency_keys alter column purge_after set not null;

-- storage -----------------------------------------------------------------------------------------------------

alter table public.idempotency_keys set (
  fillfactor = 90,
  autovacuum_vacuum_scale_factor = 0.01,
  autovacuum_vacuum_insert_scale_factor = 0.01,
  autovacuum_analyze_scale_factor = 0.01
);

-- ids in time order (UUID version 7: 48 bits of Unix milliseconds, then random bits), so that the primary key
-- grows at its right edge (full pages instead of the ~70 % that random inserts leave) and a completion finds
-- its row among recently used index pages.
create or replace function public.idempotency_uuid_v7()
returns uuid
language sql
volatile
set search_path = ''
as $$
  select encode(
    set_bit(set_bit(
      overlay(uuid_send(gen_random_uuid())
        placing substring(int8send((extract(epoch from clock_timestamp()) * 1000)::bigint) from 3)
        from 1 for 6),
      52, 1), 53, 1),
    'hex')::uuid
$$;

comment on function public.idempotency_uuid_v7() is 'A UUID version 7: time-ordered, random in its last 74 bits.';
revoke all on function public.idempotency_uuid_v7() from public, anon, authenticated;
grant execute on function public.idempotency_uuid_v7() to service_role;

alter table public.idempotency_keys alter column id set default public.idempotency_uuid_v7();

-- indexes -----------------------------------------------------------------------------------------------------

-- Deliberate, for the five drops and two builds below: the Supabase CLI applies a migration in one
-- transaction, where DROP/CREATE INDEX CONCURRENTLY cannot run. A large project can build the two new indexes
-- CONCURRENTLY by hand before deploying (the `if not exists` below then skips them); docs/scaling.md says how.
-- squawk-ignore require-concurrent-index-deletion
drop index if exists public.idempotency_keys_expires_at_idx;
-- squawk-ignore require-concurrent-index-deletion
drop index if exists public.idempotency_keys_processing_lease_idx;
-- squawk-ignore require-concurrent-index-deletion
drop index if exists public.idempotency_keys_user_created_idx;
-- squawk-ignore require-concurrent-index-deletion
drop index if exists public.idempotency_keys_function_created_idx;
-- squawk-ignore require-concurrent-index-deletion
drop index if exists public.idempotency_keys_failed_idx;

-- cleanup (oldest first), the stats view's window of recent keys and its processing-time sample. Keys arrive
-- in time order, so pages fill at the right edge: fillfactor 100 wastes nothing.
-- squawk-ignore require-concurrent-index-creation
create index if not exists idempotency_keys_purge_after_idx
  on public.idempotency_keys (purge_after) with (fillfactor = 100);

-- The foreign key's cascade when a user is deleted, and per-user reads, had (user_id, created_at); user_id alone
-- does it. Its values repeat (one per user, or null), so deduplication keeps it to a few bytes per key. The
-- unique (idempotency_key, user_id) stays as it is: the claim's lookups lead with the key.
-- squawk-ignore require-concurrent-index-creation
create index if not exists idempotency_keys_user_idx on public.idempotency_keys (user_id);

-- counters ----------------------------------------------------------------------------------------------------

-- Keys per function and per minute of first expiry, summed by v_idempotency_stats. A writer adds to the row of
-- its own shard (its backend pid modulo 16), so concurrent requests rarely wait for the same row lock; the
-- cleanup job folds the shards back into shard 0 every minute.
create table if not exists public.idempotency_stats_counters (
  function_name text not null,
  -- date_bin('1 minute', purge_after): what the view counts as expired without reading the keys
  expiry_minute timestamptz not null,
  shard integer not null,
  keys bigint not null default 0,
  processing bigint not null default 0,
  failed bigint not null default 0,
  replays bigint not null default 0,
  -- keys with attempt_count > 1
  retried bigint not null default 0,
  oldest_created_at timestamptz,
  newest_created_at timestamptz,
  primary key (function_name, expiry_minute, shard)
) with (fillfactor = 50, autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_scale_factor = 0.05);

comment on table public.idempotency_stats_counters is
  'Idempotency key counts per function, minute of first expiry and writer shard; kept by triggers.';

-- The keys that are not completed (processing or failed), with their own indexes: the in-flight figure and
-- the stuck and failure dashboards read them, where an index on idempotency_keys.status would stop HOT.
create table if not exists public.idempotency_open_keys (
  record_id uuid primary key,
  function_name text not null,
  status text not null,
  locked_until timestamptz,
  completed_at timestamptz,
  constraint idempotency_open_keys_status_valid check (status in ('processing', 'failed'))
) with (autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_scale_factor = 0.05);

comment on table public.idempotency_open_keys is
  'Idempotency keys in processing or failed state (id, function, lease end, failure time); kept by triggers.';

create index if not exists idempotency_open_keys_lease_idx
  on public.idempotency_open_keys (locked_until) where status = 'processing';
create index if not exists idempotency_open_keys_failed_idx
  on public.idempotency_open_keys (completed_at) where status = 'failed';

alter table public.idempotency_stats_counters enable row level security;
alter table public.idempotency_open_keys enable row level security;
revoke all on table public.idempotency_stats_counters, public.idempotency_open_keys
  from public, anon, authenticated, service_role;
-- the view runs with the reader's rights; service_role bypasses RLS, as on Supabase
grant select on table public.idempotency_stats_counters, public.idempotency_open_keys to service_role;

-- Adds to a counter row of the calling backend's shard.
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

-- Row triggers for inserts and updates (the request path touches one row per statement); deletes are counted
-- per statement, one counter update per function and minute in a fixed order, so that two bulk deletes
-- cannot deadlock on counter rows. Security definer: the counters are written for whoever changed the keys.
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

create or replace function public.idempotency_keys_track_truncate()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  delete from public.idempotency_stats_counters;
  delete from public.idempotency_open_keys;
  return null;
end;
$$;

revoke all on function public.idempotency_keys_track() from public, anon, authenticated;
revoke all on function public.idempotency_keys_track_delete() from public, anon, authenticated;
revoke all on function public.idempotency_keys_track_truncate() from public, anon, authenticated;

drop trigger if exists idempotency_keys_track_insert on public.idempotency_keys;
create trigger idempotency_keys_track_insert
  after insert on public.idempotency_keys
  for each row execute function public.idempotency_keys_track();
drop trigger if exists idempotency_keys_track_update on public.idempotency_keys;
create trigger idempotency_keys_track_update
  after update on public.idempotency_keys
  for each row execute function public.idempotency_keys_track();
drop trigger if exists idempotency_keys_track_delete on public.idempotency_keys;
create trigger idempotency_keys_track_delete
  after delete on public.idempotency_keys
  referencing old table as gone
  for each statement execute function public.idempotency_keys_track_delete();
drop trigger if exists idempotency_keys_track_truncate on public.idempotency_keys;
create trigger idempotency_keys_track_truncate
  after truncate on public.idempotency_keys
  for each statement execute function public.idempotency_keys_track_truncate();

-- Recomputes both side tables from idempotency_keys (after a bulk load with triggers off, or to check them).
-- Blocks writers to the keys while it reads them: a full scan, seconds at 10 million rows.
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

comment on function public.idempotency_stats_rebuild() is
  'Recomputes idempotency_stats_counters and idempotency_open_keys from idempotency_keys.';

do $$ begin perform public.idempotency_stats_rebuild(); end $$;

-- idempotency_begin: as before, and a key that starts afresh after expiry gets a new purge_after ----------------

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
      locked_until, lease_token, created_at, started_at, expires_at, purge_after
    ) values (
      p_key, p_user_id, p_function_name, p_fingerprint, 'processing',
      v_now + make_interval(secs => p_lock_timeout_seconds), v_token, v_now, v_now,
      v_now + make_interval(secs => p_ttl_seconds), v_now + make_interval(secs => p_ttl_seconds)
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
        then v_now + make_interval(secs => p_ttl_seconds) else k.expires_at end,
      purge_after = case when v_expired
        then v_now + make_interval(secs => p_ttl_seconds) else k.purge_after end
    where k.id = v_row.id
    returning k.* into v_row;
    exit;
  end loop;

  return query select 'started'::text, v_row.id, v_token, null::integer, null::bytea, null::text,
    null::jsonb, null::integer, v_row.attempt_count, v_row.replay_count, v_row.expires_at;
end;
$$;

-- cleanup -----------------------------------------------------------------------------------------------------

-- One batch: the batch_size keys with the oldest purge_after at or after p_after that are due, locked with
-- skip locked (a concurrent takeover is never waited on). Those really expired and not under a live lease
-- are deleted; the others (a response stored late, a live lease) get purge_after moved to when they can go,
-- so that no later batch reads them again before then. Returns how many it looked at, how many it deleted,
-- and the last purge_after it looked at: the next batch starts there instead of walking the index entries
-- this batch left behind.
create or replace function public.idempotency_cleanup_batch(
  batch_size integer default 5000,
  p_after timestamptz default '-infinity'
)
returns table (examined integer, deleted integer, last_purge_after timestamptz)
language plpgsql
volatile
set search_path = ''
as $$
begin
  if batch_size is null or batch_size < 1 then
    raise exception 'batch_size must be at least 1, got %', batch_size using errcode = '22023';
  end if;
  return query
  with due as (
    select k.id, k.purge_after,
      k.expires_at < now() and not (k.status = 'processing' and k.locked_until > now()) as expired,
      greatest(k.expires_at, k.locked_until) as can_go_at
    from public.idempotency_keys k
    where k.purge_after < now() and k.purge_after >= coalesce(p_after, '-infinity')
    order by k.purge_after
    limit batch_size
    for update skip locked
  ),
  gone as (
    delete from public.idempotency_keys k using due d where k.id = d.id and d.expired
    returning k.id
  ),
  -- a data-modifying CTE runs whether or not it is read
  later as (
    update public.idempotency_keys k set purge_after = d.can_go_at
    from due d where k.id = d.id and not d.expired
    returning k.id
  )
  select (select count(*) from due)::integer, (select count(*) from gone)::integer,
    (select max(d.purge_after) from due d);
end;
$$;

comment on function public.idempotency_cleanup_batch(integer, timestamptz) is
  'One cleanup batch: deletes due expired keys from purge_after onward; returns examined, deleted, last position.';

-- Same name, arguments and result as before (one transaction, for callers that want one); each batch now
-- starts where the previous one stopped.
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
  v_total bigint := 0::bigint;
  v_batch record;
  v_after timestamptz := '-infinity'::timestamptz;
begin
  if batch_size is null or batch_size < 1 then
    raise exception 'batch_size must be at least 1, got %', batch_size using errcode = '22023';
  end if;
  for i in 1 .. greatest(coalesce(max_batches, 1), 1) loop
    select * into v_batch from public.idempotency_cleanup_batch(batch_size, v_after);
    v_total := v_total + v_batch.deleted;
    exit when v_batch.examined < batch_size;
    v_after := v_batch.last_purge_after;
  end loop;
  return v_total;
end;
$$;

-- Folds the counters' shards into shard 0, skipping rows a writer holds right now, and drops minutes left
-- with nothing in them, so that the view sums about one row per function and minute.
create or replace function public.idempotency_stats_compact()
returns void
language sql
volatile
security definer
set search_path = ''
as $$
  with moved as (
    delete from public.idempotency_stats_counters c
    where (c.function_name, c.expiry_minute, c.shard) in (
      select s.function_name, s.expiry_minute, s.shard from public.idempotency_stats_counters s
      where s.shard <> 0
      order by 1, 2, 3
      for update skip locked
    )
    returning c.*
  )
  insert into public.idempotency_stats_counters as c (
    function_name, expiry_minute, shard, keys, processing, failed, replays, retried, oldest_created_at,
    newest_created_at
  )
  select m.function_name, m.expiry_minute, 0, sum(m.keys), sum(m.processing), sum(m.failed), sum(m.replays),
    sum(m.retried), min(m.oldest_created_at), max(m.newest_created_at)
  from moved m
  group by 1, 2
  order by 1, 2
  on conflict (function_name, expiry_minute, shard) do update set
    keys = c.keys + excluded.keys,
    processing = c.processing + excluded.processing,
    failed = c.failed + excluded.failed,
    replays = c.replays + excluded.replays,
    retried = c.retried + excluded.retried,
    oldest_created_at = least(c.oldest_created_at, excluded.oldest_created_at),
    newest_created_at = greatest(c.newest_created_at, excluded.newest_created_at);

  delete from public.idempotency_stats_counters c
  where c.shard = 0 and c.keys = 0 and c.processing = 0 and c.failed = 0 and c.replays = 0 and c.retried = 0
    and c.expiry_minute < now() - interval '1 minute';
$$;

revoke all on function public.idempotency_stats_compact() from public, anon, authenticated;
grant execute on function public.idempotency_stats_compact() to service_role;

revoke all on function public.idempotency_cleanup_batch(integer, timestamptz) from public, anon, authenticated;
grant execute on function public.idempotency_cleanup_batch(integer, timestamptz) to service_role;

-- the stats view -----------------------------------------------------------------------------------------------

-- Same columns, same meaning, without reading the table:
--   total, replays, oldest/newest_created_at   summed from idempotency_stats_counters (creation times over the
--     minutes that still hold keys: a minute whose oldest key was deleted or started afresh shows that key's
--     time until the minute empties)
--   processing, failed                          summed from idempotency_stats_counters; completed is the rest
--   in_flight                                   live leases in idempotency_open_keys; stuck is the rest
--   expired_pending_cleanup                     counters of minutes of first expiry that ended over a minute
--     ago, less those keys' live leases, plus the keys of the last minute or two checked one by one. A key whose
--     response was stored after its first expiry (work that outlasted its TTL) counts as pending from that
--     first expiry until the next cleanup (at most a minute later) moves it.
--   median/p95_processing_ms                    over the latest 5,000 completed keys (all of them below that)
-- The figures come from a function so that they can be computed with JIT off: the plan's cost estimate passes
-- jit_above_cost, and compiling it took longer (over 200 ms) than running it. Security invoker: it reads with
-- the caller's rights, as the view does.
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

create or replace view public.v_idempotency_stats
with (security_invoker = true)
as
select s.function_name, s.total, s.processing, s.completed, s.failed, s.replays, s.in_flight, s.stuck,
  s.expired_pending_cleanup, s.median_processing_ms, s.p95_processing_ms, s.oldest_created_at,
  s.newest_created_at
from public.idempotency_stats() s;

comment on view public.v_idempotency_stats is
  'Idempotency figures per function and in total (function_name = ''*''), from counters; service_role only.';

revoke all on table public.v_idempotency_stats from public, anon, authenticated, service_role;
grant select on table public.v_idempotency_stats to service_role;

-- What pg_cron runs every minute: batches of 5,000 keys, each committed on its own (so each holds its row locks
-- and writes its WAL for one batch only, and the next starts after what it deleted), for at most 50 seconds,
-- then the counters are compacted. A DO block, because a function cannot commit and a procedure that commits
-- may not pin its search_path (Postgres refuses transaction control under a SET clause), which the advisors
-- require of every function and procedure. pg_cron sends it as a top-level statement, where COMMIT is allowed;
-- it is also what to paste to clear a backlog by hand (docs/operations.md). cron.schedule by name replaces the
-- hourly job, so re-running adds no second one.
do $schedule$
begin
  if exists (select 1 from pg_extension where extname = 'pg_cron') then
    perform cron.schedule('cleanup-expired-idempotency-keys', '* * * * *', $cmd$do $cleanup$
declare
  v_batch record;
  v_after timestamptz := '-infinity'::timestamptz;
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
  else
    raise notice 'pg_cron is not installed: enable it and schedule the cleanup block (docs/operations.md)';
  end if;
end
$schedule$;
