-- Idempotent actions: side effects a function, worker or agent performs (start a job, write a notification,
-- post to Slack), known by an action key rather than by a client's header. One row per action key; the
-- caller claims it with action_claim, and the holder of the lease token finishes it with action_complete or
-- action_fail, exactly as idempotency_begin / _complete / _fail do for HTTP requests.
--
-- Counters (hits, misses, duplicates prevented, expired cleaned) are kept in action_counters, one row per
-- shard (the backend pid modulo 16), so every instance sees the same figures without all claims queueing
-- on one row.
--
-- Everything here is for the service role only: RLS is on and no policy grants anon or authenticated any
-- row; every function is security invoker with an empty search_path and executable by service_role alone.
-- Also: a notifications table written by the run-actions edge function.

-- Bounded waits while this migration's transaction runs: a lock it cannot get fails the deploy fast instead of
-- queueing every request behind it (squawk: require-lock-timeout, require-statement-timeout).
set local lock_timeout = '5s';
set local statement_timeout = '60s';

create table if not exists public.action_records (
  action_key text primary key,
  action_type text,
  target text,
  signal_id text,
  params_hash text,
  status text not null,
  result jsonb,
  error text,
  attempt_count integer not null default 1,
  -- the lease: while status = 'processing' and locked_until > now(), the holder of lease_token runs it
  lease_token uuid,
  locked_until timestamptz,
  created_at timestamptz not null,
  executed_at timestamptz,
  expires_at timestamptz not null,

  constraint action_records_key_length check (char_length(action_key) between 1 and 512),
  constraint action_records_status_valid check (status in ('processing', 'completed', 'failed')),
  constraint action_records_params_hash_format check (params_hash is null or params_hash ~ '^[0-9a-f]{16}$'),
  constraint action_records_attempts_positive check (attempt_count >= 1),
  constraint action_records_expiry_after_creation check (expires_at > created_at),
  constraint action_records_status_columns check (
    case status
      when 'processing' then lease_token is not null and locked_until is not null and executed_at is null
      when 'completed' then lease_token is null and locked_until is null and executed_at is not null
      when 'failed' then lease_token is null and locked_until is null and executed_at is not null
    end
  )
);

comment on table public.action_records is
  'One row per idempotent action key: the claim, its lease, and the recorded result or error.';

-- the queries: findKeysByActionType / ByTarget / BySignalId, oldest first
create index if not exists action_records_action_type_idx on public.action_records (action_type, created_at);
create index if not exists action_records_target_idx on public.action_records (target, created_at);
create index if not exists action_records_signal_idx on public.action_records (signal_id, created_at);
-- getExpiringSoon and cleanup
create index if not exists action_records_expires_idx on public.action_records (expires_at);
-- getCachedKeys listing, oldest / newest in getCacheInfo
create index if not exists action_records_created_idx on public.action_records (created_at);

create table if not exists public.action_counters (
  shard integer primary key,
  hits bigint not null default 0,
  misses bigint not null default 0,
  duplicates_prevented bigint not null default 0,
  expired_cleaned bigint not null default 0,
  constraint action_counters_shard_range check (shard between 0 and 15)
);

comment on table public.action_counters is
  'Action statistics counters, sharded by backend pid so concurrent claims do not queue on one row.';

-- run-actions: notifications written for database events ---------------------------------------------------

create table if not exists public.notifications (
  id uuid primary key default gen_random_uuid(),
  user_id uuid references auth.users (id) on delete cascade,
  kind text not null,
  message text not null,
  -- the row the notification is about, e.g. {"table": "training_datasets", "id": "..."}
  subject jsonb not null default '{}'::jsonb,
  -- the action key that wrote this row
  action_key text not null,
  created_at timestamptz not null default now(),

  constraint notifications_kind_format check (kind ~ '^[a-z_]{1,64}$'),
  constraint notifications_message_length check (char_length(message) between 1 and 1000),
  constraint notifications_subject_object check (jsonb_typeof(subject) = 'object')
);

comment on table public.notifications is 'Notifications written by the run-actions edge function.';

create index if not exists notifications_user_created_idx on public.notifications (user_id, created_at desc);
create index if not exists notifications_action_key_idx on public.notifications (action_key);

alter table public.action_records enable row level security;
alter table public.action_counters enable row level security;
alter table public.notifications enable row level security;

revoke all on table public.action_records, public.action_counters, public.notifications
  from public, anon, authenticated;
grant all on table public.action_records, public.action_counters, public.notifications to service_role;
grant select on table public.notifications to authenticated;

drop policy if exists "Users read their own notifications" on public.notifications;
create policy "Users read their own notifications"
  on public.notifications for select to authenticated
  using (user_id = (select auth.uid()));

-- Counters ----------------------------------------------------------------------------------------------------

create or replace function public.action_count(
  p_hits bigint default 0,
  p_misses bigint default 0,
  p_duplicates bigint default 0,
  p_expired bigint default 0
)
returns void
language sql
volatile
security invoker
set search_path = ''
as $$
  insert into public.action_counters as c (shard, hits, misses, duplicates_prevented, expired_cleaned)
  values (pg_backend_pid() % 16, p_hits, p_misses, p_duplicates, p_expired)
  on conflict (shard) do update set
    hits = c.hits + excluded.hits,
    misses = c.misses + excluded.misses,
    duplicates_prevented = c.duplicates_prevented + excluded.duplicates_prevented,
    expired_cleaned = c.expired_cleaned + excluded.expired_cleaned;
$$;

-- Claim ----------------------------------------------------------------------------------------------------
-- One outcome per call:
--   started      the caller owns the action (new row, or an expired, failed or lease-expired row taken over)
--   completed    done before: the recorded result
--   in_progress  another caller holds a live lease; retry_after_ms says how long it has left
--   failed       the last attempt failed and p_retry_failed is false
create or replace function public.action_claim(
  p_key text,
  p_action_type text,
  p_target text,
  p_signal_id text,
  p_params_hash text,
  p_ttl_ms integer,
  p_lease_ms integer,
  p_retry_failed boolean default true
)
returns table (
  outcome text,
  lease_token uuid,
  retry_after_ms integer,
  action_key text,
  action_type text,
  target text,
  signal_id text,
  params_hash text,
  status text,
  result jsonb,
  error text,
  attempt_count integer,
  created_at timestamptz,
  executed_at timestamptz,
  expires_at timestamptz,
  locked_until timestamptz
)
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_row public.action_records%rowtype;
  v_token uuid := gen_random_uuid();
  v_now timestamptz := clock_timestamp();
  v_live boolean;
  v_expired boolean;
  v_outcome text;
begin
  if p_ttl_ms is null or p_ttl_ms < 1000 then
    raise exception 'ttl must be at least 1000 ms, got %', p_ttl_ms using errcode = '22023';
  end if;
  if p_lease_ms is null or p_lease_ms < 1000 then
    raise exception 'lease must be at least 1000 ms, got %', p_lease_ms using errcode = '22023';
  end if;

  -- The common repeat, a completed action, is answered by one index lookup without a row lock: a completed
  -- record changes only by expiring or being deleted, and either may as well happen just after this read.
  select r.* into v_row from public.action_records r where r.action_key = p_key;
  if found and v_row.status = 'completed' and v_row.expires_at > v_now then
    v_outcome := 'completed';
  end if;

  while v_outcome is null loop
    insert into public.action_records as r (
      action_key, action_type, target, signal_id, params_hash, status, lease_token, locked_until,
      created_at, expires_at
    ) values (
      p_key, p_action_type, p_target, p_signal_id, p_params_hash, 'processing', v_token,
      v_now + make_interval(secs => p_lease_ms / 1000.0), v_now, v_now + make_interval(secs => p_ttl_ms / 1000.0)
    )
    on conflict on constraint action_records_pkey do nothing
    returning r.* into v_row;
    if found then
      v_outcome := 'started';
      exit;
    end if;

    select r.* into v_row from public.action_records r where r.action_key = p_key for update;
    -- deleted since the insert: claim it again
    continue when not found;

    -- the clock after the row lock is ours: waiting for it must not make a lease look longer than it is
    v_now := clock_timestamp();
    v_live := v_row.status = 'processing' and v_row.locked_until > v_now;
    v_expired := v_row.expires_at <= v_now and not v_live;

    if not v_expired and v_row.status = 'completed' then
      v_outcome := 'completed';
    elsif v_live then
      v_outcome := 'in_progress';
    elsif not v_expired and v_row.status = 'failed' and not coalesce(p_retry_failed, true) then
      v_outcome := 'failed';
    else
      -- take over: an expired record starts afresh; a failed or abandoned one is attempted again
      update public.action_records r set
        action_type = case when v_expired then p_action_type else r.action_type end,
        target = case when v_expired then p_target else r.target end,
        signal_id = case when v_expired then p_signal_id else r.signal_id end,
        params_hash = case when v_expired then p_params_hash else r.params_hash end,
        status = 'processing',
        result = null,
        error = null,
        lease_token = v_token,
        locked_until = v_now + make_interval(secs => p_lease_ms / 1000.0),
        attempt_count = case when v_expired then 1 else r.attempt_count + 1 end,
        created_at = case when v_expired then v_now else r.created_at end,
        executed_at = null,
        expires_at = case when v_expired then v_now + make_interval(secs => p_ttl_ms / 1000.0) else r.expires_at end
      where r.action_key = p_key
      returning r.* into v_row;
      v_outcome := 'started';
    end if;
  end loop;

  -- Only a started claim must survive a crash (its holder is about to run the work); the other outcomes
  -- changed nothing but counters, which need not wait for the WAL flush.
  if v_outcome <> 'started' then
    perform pg_catalog.set_config('synchronous_commit', 'off', true);
  end if;
  perform public.action_count(
    p_hits => case when v_outcome = 'completed' then 1 else 0 end,
    p_misses => case when v_outcome = 'started' then 1 else 0 end,
    p_duplicates => case when v_outcome in ('completed', 'in_progress') then 1 else 0 end
  );

  return query select v_outcome,
    case when v_outcome = 'started' then v_token end,
    case when v_outcome = 'in_progress'
      then greatest(1, ceil(extract(epoch from v_row.locked_until - v_now) * 1000))::integer end,
    v_row.action_key, v_row.action_type, v_row.target, v_row.signal_id, v_row.params_hash, v_row.status,
    v_row.result, v_row.error, v_row.attempt_count, v_row.created_at, v_row.executed_at, v_row.expires_at,
    v_row.locked_until;
end;
$$;

comment on function public.action_claim(text, text, text, text, text, integer, integer, boolean) is
  'Claims an action key in one round trip: started (with a lease token), completed, in_progress or failed.';

-- Finish: only the holder of the current lease token may; a worker whose lease was taken over gets false.
create or replace function public.action_complete(p_key text, p_lease_token uuid, p_result jsonb)
returns boolean
language sql
volatile
security invoker
set search_path = ''
as $$
  with done as (
    update public.action_records r set
      status = 'completed', result = coalesce(p_result, 'null'::jsonb), error = null,
      executed_at = clock_timestamp(), lease_token = null, locked_until = null,
      -- kept at least its TTL from completion: a run that outlasted the TTL is not repeated at once
      expires_at = greatest(r.expires_at, clock_timestamp() + (r.expires_at - r.created_at))
    where r.action_key = p_key and r.lease_token = p_lease_token and r.status = 'processing'
    returning 1
  )
  select exists (select 1 from done);
$$;

create or replace function public.action_fail(p_key text, p_lease_token uuid, p_error text)
returns boolean
language sql
volatile
security invoker
set search_path = ''
as $$
  with done as (
    update public.action_records r set
      status = 'failed', error = left(p_error, 2000), result = null,
      executed_at = clock_timestamp(), lease_token = null, locked_until = null
    where r.action_key = p_key and r.lease_token = p_lease_token and r.status = 'processing'
    returning 1
  )
  select exists (select 1 from done);
$$;

create or replace function public.action_extend(p_key text, p_lease_token uuid, p_lease_ms integer)
returns boolean
language sql
volatile
security invoker
set search_path = ''
as $$
  with done as (
    update public.action_records r
    set locked_until = clock_timestamp() + make_interval(secs => greatest(p_lease_ms, 1000) / 1000.0)
    where r.action_key = p_key and r.lease_token = p_lease_token and r.status = 'processing'
    returning 1
  )
  select exists (select 1 from done);
$$;

-- Records -----------------------------------------------------------------------------------------------------

-- A live record: not past its TTL, or still under a live lease.
create or replace function public.action_get(p_key text, p_count boolean default false)
returns setof public.action_records
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_row public.action_records%rowtype;
  v_found boolean;
begin
  select r.* into v_row from public.action_records r
  where r.action_key = p_key
    and (r.expires_at > now() or (r.status = 'processing' and r.locked_until > now()));
  -- kept apart: the perform below resets FOUND
  v_found := found;
  if coalesce(p_count, false) then
    perform pg_catalog.set_config('synchronous_commit', 'off', true);
    if v_found and v_row.status = 'completed' then
      perform public.action_count(p_hits => 1);
    else
      perform public.action_count(p_misses => 1);
    end if;
  end if;
  if v_found then
    return next v_row;
  end if;
end;
$$;

create or replace function public.action_delete(p_key text)
returns boolean
language sql
volatile
security invoker
set search_path = ''
as $$
  with gone as (
    delete from public.action_records r
    where r.action_key = p_key and not (r.status = 'processing' and r.locked_until > now())
    returning 1
  )
  select exists (select 1 from gone);
$$;

-- Admin: every record not under a live lease. Service role only.
create or replace function public.action_clear_all()
returns bigint
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_count bigint;
begin
  delete from public.action_records r where not (r.status = 'processing' and r.locked_until > now());
  get diagnostics v_count = row_count;
  return v_count;
end;
$$;

-- Expired records in batches, oldest first, skipping rows a concurrent claim holds; counted.
create or replace function public.action_cleanup_expired(p_batch_size integer default 10000)
returns bigint
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_total bigint := 0::bigint;
  v_batch bigint;
begin
  if p_batch_size is null or p_batch_size < 1 then
    raise exception 'batch size must be at least 1, got %', p_batch_size using errcode = '22023';
  end if;
  loop
    with doomed as (
      select r.action_key from public.action_records r
      where r.expires_at <= now() and not (r.status = 'processing' and r.locked_until > now())
      order by r.expires_at
      limit p_batch_size
      for update skip locked
    )
    delete from public.action_records r using doomed where r.action_key = doomed.action_key;
    get diagnostics v_batch = row_count;
    v_total := v_total + v_batch;
    exit when v_batch < p_batch_size;
  end loop;
  if v_total > 0 then
    perform public.action_count(p_expired => v_total);
  end if;
  return v_total;
end;
$$;

-- Statistics --------------------------------------------------------------------------------------------------

create or replace function public.action_stats()
returns table (
  total bigint,
  processing bigint,
  completed bigint,
  failed bigint,
  hits bigint,
  misses bigint,
  duplicates_prevented bigint,
  expired_cleaned bigint
)
language sql
stable
security invoker
set search_path = ''
as $$
  with live as (
    select r.status from public.action_records r
    where r.expires_at > now() or (r.status = 'processing' and r.locked_until > now())
  ),
  counts as (
    select coalesce(sum(c.hits), 0)::bigint as hits, coalesce(sum(c.misses), 0)::bigint as misses,
      coalesce(sum(c.duplicates_prevented), 0)::bigint as duplicates_prevented,
      coalesce(sum(c.expired_cleaned), 0)::bigint as expired_cleaned
    from public.action_counters c
  )
  select (select count(*) from live),
    (select count(*) from live where live.status = 'processing'),
    (select count(*) from live where live.status = 'completed'),
    (select count(*) from live where live.status = 'failed'),
    counts.hits, counts.misses, counts.duplicates_prevented, counts.expired_cleaned
  from counts;
$$;

create or replace function public.action_reset_stats()
returns void
language sql
volatile
security invoker
set search_path = ''
as $$
  update public.action_counters c
  set hits = 0, misses = 0, duplicates_prevented = 0, expired_cleaned = 0
  where c.shard between 0 and 15;
$$;

create or replace function public.action_cache_info()
returns table (current_size bigint, oldest_entry timestamptz, newest_entry timestamptz, approximate_bytes bigint)
language sql
stable
security invoker
set search_path = ''
as $$
  select (select count(*) from public.action_records),
    (select min(r.created_at) from public.action_records r),
    (select max(r.created_at) from public.action_records r),
    pg_catalog.pg_total_relation_size('public.action_records'::regclass);
$$;

-- Queries: live records matching every given field, oldest first (each field has its index).
create or replace function public.action_find(
  p_action_type text default null,
  p_target text default null,
  p_signal_id text default null,
  p_status text default null,
  p_expires_before timestamptz default null,
  p_limit integer default 1000
)
returns setof public.action_records
language sql
stable
security invoker
set search_path = ''
as $$
  select r.* from public.action_records r
  where (p_action_type is null or r.action_type = p_action_type)
    and (p_target is null or r.target = p_target)
    and (p_signal_id is null or r.signal_id = p_signal_id)
    and (p_status is null or r.status = p_status)
    and (p_expires_before is null or r.expires_at < p_expires_before)
    and (r.expires_at > now() or (r.status = 'processing' and r.locked_until > now()))
  order by r.created_at, r.action_key
  limit greatest(coalesce(p_limit, 1000), 0);
$$;

-- Access: service_role only ---------------------------------------------------------------------------------

revoke all on function public.action_count(bigint, bigint, bigint, bigint) from public, anon, authenticated;
revoke all on function public.action_claim(text, text, text, text, text, integer, integer, boolean)
  from public, anon, authenticated;
revoke all on function public.action_complete(text, uuid, jsonb) from public, anon, authenticated;
revoke all on function public.action_fail(text, uuid, text) from public, anon, authenticated;
revoke all on function public.action_extend(text, uuid, integer) from public, anon, authenticated;
revoke all on function public.action_get(text, boolean) from public, anon, authenticated;
revoke all on function public.action_delete(text) from public, anon, authenticated;
revoke all on function public.action_clear_all() from public, anon, authenticated;
revoke all on function public.action_cleanup_expired(integer) from public, anon, authenticated;
revoke all on function public.action_stats() from public, anon, authenticated;
revoke all on function public.action_reset_stats() from public, anon, authenticated;
revoke all on function public.action_cache_info() from public, anon, authenticated;
revoke all on function public.action_find(text, text, text, text, timestamptz, integer)
  from public, anon, authenticated;

grant execute on function public.action_count(bigint, bigint, bigint, bigint) to service_role;
grant execute on function public.action_claim(text, text, text, text, text, integer, integer, boolean)
  to service_role;
grant execute on function public.action_complete(text, uuid, jsonb) to service_role;
grant execute on function public.action_fail(text, uuid, text) to service_role;
grant execute on function public.action_extend(text, uuid, integer) to service_role;
grant execute on function public.action_get(text, boolean) to service_role;
grant execute on function public.action_delete(text) to service_role;
grant execute on function public.action_clear_all() to service_role;
grant execute on function public.action_cleanup_expired(integer) to service_role;
grant execute on function public.action_stats() to service_role;
grant execute on function public.action_reset_stats() to service_role;
grant execute on function public.action_cache_info() to service_role;
grant execute on function public.action_find(text, text, text, text, timestamptz, integer) to service_role;
