-- Idempotency keys for Supabase Edge Functions.
--
-- One row per (idempotency_key, user). A request claims its key with idempotency_begin, which returns one
-- outcome in one round trip; the holder of the lease token then finishes the row with idempotency_complete
-- or idempotency_fail. Every state change is a single statement or a single locked row, so concurrent
-- duplicates are decided by Postgres, never by the caller.
--
-- Re-running this file is harmless: every object is created or replaced, and the cron job is upserted by name.

create table if not exists public.idempotency_keys (
  id uuid primary key default gen_random_uuid(),
  idempotency_key text not null,
  -- null for calls without a signed-in user (service role, webhooks), which share one scope per key
  user_id uuid references auth.users (id) on delete cascade,
  function_name text not null,
  -- SHA-256 (hex) over method, path and canonical body: the same key with another request is misuse
  request_fingerprint text not null,
  status text not null default 'processing',
  response bytea,
  -- 'identity' when response holds the body as sent, 'gzip' when it holds the gzip of it
  response_encoding text not null default 'identity',
  status_code integer,
  response_headers jsonb,
  error_message text,
  -- the lease: while status = 'processing' and locked_until > now(), the holder of lease_token owns the key
  locked_until timestamptz,
  lease_token uuid,
  attempt_count integer not null default 1,
  replay_count integer not null default 0,
  last_replayed_at timestamptz,
  created_at timestamptz not null default now(),
  started_at timestamptz not null default now(),
  completed_at timestamptz,
  expires_at timestamptz not null,
  metadata jsonb not null default '{}'::jsonb,

  -- 3 to 256 characters; the length is checked apart because a regex bound may not exceed 255 in Postgres
  constraint idempotency_keys_key_format
    check (char_length(idempotency_key) between 3 and 256 and idempotency_key ~ '^[A-Za-z0-9_-]+$'),
  constraint idempotency_keys_function_name_format
    check (function_name ~ '^[A-Za-z0-9_-]{1,128}$'),
  constraint idempotency_keys_fingerprint_format
    check (request_fingerprint ~ '^[0-9a-f]{64}$'),
  constraint idempotency_keys_status_valid
    check (status in ('processing', 'completed', 'failed')),
  constraint idempotency_keys_encoding_valid
    check (response_encoding in ('identity', 'gzip')),
  constraint idempotency_keys_status_code_range
    check (status_code is null or status_code between 100 and 599),
  constraint idempotency_keys_counts_non_negative
    check (attempt_count >= 1 and replay_count >= 0),
  constraint idempotency_keys_expiry_after_creation
    check (expires_at > created_at),
  -- each status carries exactly the columns that status means
  constraint idempotency_keys_status_columns check (
    case status
      when 'processing' then lease_token is not null and locked_until is not null
        and completed_at is null and status_code is null and response is null
      when 'completed' then lease_token is null and locked_until is null
        and completed_at is not null and status_code is not null
      when 'failed' then lease_token is null and locked_until is null and completed_at is not null
    end
  ),
  constraint idempotency_keys_key_user_unique unique nulls not distinct (idempotency_key, user_id)
);

comment on table public.idempotency_keys is
  'One row per idempotency key and user: the claim, its lease, and the stored first response.';

-- cleanup_expired_idempotency_keys: delete where expires_at < now(), oldest first
create index if not exists idempotency_keys_expires_at_idx
  on public.idempotency_keys (expires_at);
-- stuck-processing dashboard and lease takeover scans: processing rows ordered by lease end
create index if not exists idempotency_keys_processing_lease_idx
  on public.idempotency_keys (locked_until) where status = 'processing';
-- per-user listing (newest first), and the foreign key's cascade on auth.users delete
create index if not exists idempotency_keys_user_created_idx
  on public.idempotency_keys (user_id, created_at desc);
-- per-function figures in v_idempotency_stats and per-function dashboards
create index if not exists idempotency_keys_function_created_idx
  on public.idempotency_keys (function_name, created_at desc);
-- recent failures dashboard: failed rows by time
create index if not exists idempotency_keys_failed_idx
  on public.idempotency_keys (completed_at desc) where status = 'failed';

alter table public.idempotency_keys enable row level security;

-- Supabase grants every new public table to anon and authenticated; take that back. Users may read the
-- state of their own keys (RLS picks the rows), not what only the function should see: stored bodies and
-- headers, error details (a thrown error's message is hidden from the client too), fingerprints, lease tokens.
revoke all on table public.idempotency_keys from public, anon, authenticated;
grant select (
  id, idempotency_key, user_id, function_name, status, status_code, attempt_count, replay_count,
  last_replayed_at, created_at, started_at, completed_at, expires_at, locked_until
) on table public.idempotency_keys to authenticated;
grant all on table public.idempotency_keys to service_role;

drop policy if exists "Users read their own idempotency keys" on public.idempotency_keys;
create policy "Users read their own idempotency keys"
  on public.idempotency_keys for select to authenticated
  using (user_id = (select auth.uid()));

-- Claim a key. One outcome per call:
--   started      the caller owns the key now (new row, or an expired, failed or lease-expired row taken
--                over); lease_token must be passed to idempotency_complete / idempotency_fail
--   replay       completed before: the stored response; replay_count goes up
--   in_progress  another caller holds a live lease; retry_after_seconds says how long it has left
--   mismatch     the key was used with another request fingerprint
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

comment on function public.idempotency_begin(text, uuid, text, text, integer, integer) is
  'Claims an idempotency key in one round trip: started (with a lease token), replay, in_progress or mismatch.';

-- Store the response. Only the holder of the current lease token may finish the row: a worker whose lease
-- was taken over gets false and must not overwrite the new owner's result.
create or replace function public.idempotency_complete(
  p_record_id uuid,
  p_lease_token uuid,
  p_status_code integer,
  p_response bytea,
  p_response_encoding text default 'identity',
  p_response_headers jsonb default '{}'::jsonb
)
returns boolean
language plpgsql
volatile
set search_path = ''
as $$
begin
  update public.idempotency_keys k set
    status = 'completed',
    status_code = p_status_code,
    response = p_response,
    response_encoding = coalesce(p_response_encoding, 'identity'),
    response_headers = coalesce(p_response_headers, '{}'::jsonb),
    error_message = null,
    completed_at = clock_timestamp(),
    -- kept at least its TTL (expires_at - created_at) from now: work that outlasted the TTL is not run
    -- again by the next retry
    expires_at = greatest(k.expires_at, clock_timestamp() + (k.expires_at - k.created_at)),
    locked_until = null,
    lease_token = null
  where k.id = p_record_id and k.lease_token = p_lease_token and k.status = 'processing';
  return found;
end;
$$;

comment on function public.idempotency_complete(uuid, uuid, integer, bytea, text, jsonb) is
  'Stores the first response; true only for the holder of the current lease token.';

-- Release the key after a failure (5xx or a throw) so that a retry runs the work again.
create or replace function public.idempotency_fail(
  p_record_id uuid,
  p_lease_token uuid,
  p_error_message text default null,
  p_status_code integer default null
)
returns boolean
language plpgsql
volatile
set search_path = ''
as $$
begin
  update public.idempotency_keys k set
    status = 'failed',
    status_code = p_status_code,
    error_message = left(p_error_message, 2000),
    completed_at = clock_timestamp(),
    locked_until = null,
    lease_token = null
  where k.id = p_record_id and k.lease_token = p_lease_token and k.status = 'processing';
  return found;
end;
$$;

comment on function public.idempotency_fail(uuid, uuid, text, integer) is
  'Marks the row failed so a retry runs again; true only for the holder of the current lease token.';

-- Long work renews its lease before it runs out, so no one takes the key over while it still runs.
create or replace function public.idempotency_extend_lease(
  p_record_id uuid,
  p_lease_token uuid,
  p_lock_timeout_seconds integer default 30
)
returns boolean
language plpgsql
volatile
set search_path = ''
as $$
begin
  update public.idempotency_keys k
  set locked_until = clock_timestamp() + make_interval(secs => greatest(p_lock_timeout_seconds, 1))
  where k.id = p_record_id and k.lease_token = p_lease_token and k.status = 'processing';
  return found;
end;
$$;

comment on function public.idempotency_extend_lease(uuid, uuid, integer) is
  'Renews the lease of a running request; true only for the holder of the current lease token.';

-- The signed-in user's own key, and nothing else: security invoker, so the table's RLS policy applies.
create or replace function public.get_idempotency_status(p_key text)
returns table (
  idempotency_key text,
  function_name text,
  status text,
  status_code integer,
  attempt_count integer,
  replay_count integer,
  created_at timestamptz,
  completed_at timestamptz,
  expires_at timestamptz,
  locked_until timestamptz
)
language sql
stable
set search_path = ''
as $$
  select k.idempotency_key, k.function_name, k.status, k.status_code, k.attempt_count, k.replay_count,
    k.created_at, k.completed_at, k.expires_at, k.locked_until
  from public.idempotency_keys k
  where k.idempotency_key = p_key
    and k.user_id = (select auth.uid())
    and k.expires_at > now()
$$;

comment on function public.get_idempotency_status(text) is
  'Status of the calling user''s own key (no response body); empty for anyone else''s or an unknown key.';

-- Deletes expired rows in batches of batch_size, at most max_batches of them, and returns how many went.
-- Rows locked by a concurrent takeover are skipped, never waited on; the next run gets them.
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

comment on function public.cleanup_expired_idempotency_keys(integer, integer) is
  'Deletes expired idempotency keys in batches; returns the number deleted.';

-- Functions are executable by PUBLIC by default, and Supabase also grants them to its API roles.
revoke all on function public.idempotency_begin(text, uuid, text, text, integer, integer)
  from public, anon, authenticated;
revoke all on function public.idempotency_complete(uuid, uuid, integer, bytea, text, jsonb)
  from public, anon, authenticated;
revoke all on function public.idempotency_fail(uuid, uuid, text, integer) from public, anon, authenticated;
revoke all on function public.idempotency_extend_lease(uuid, uuid, integer) from public, anon, authenticated;
revoke all on function public.get_idempotency_status(text) from public, anon;
revoke all on function public.cleanup_expired_idempotency_keys(integer, integer)
  from public, anon, authenticated;

grant execute on function public.idempotency_begin(text, uuid, text, text, integer, integer) to service_role;
grant execute on function public.idempotency_complete(uuid, uuid, integer, bytea, text, jsonb) to service_role;
grant execute on function public.idempotency_fail(uuid, uuid, text, integer) to service_role;
grant execute on function public.idempotency_extend_lease(uuid, uuid, integer) to service_role;
grant execute on function public.get_idempotency_status(text) to authenticated, service_role;
grant execute on function public.cleanup_expired_idempotency_keys(integer, integer) to service_role;

-- One row per function plus a total row (function_name = '*'). Security invoker: it shows only what the
-- reader may see, and only service_role (and postgres) may read it at all.
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

comment on view public.v_idempotency_stats is
  'Idempotency figures per function and in total (function_name = ''*''); service_role only.';

-- Supabase's default privileges grant all on a new view to service_role as well: take that back too, so
-- that service_role may read it and do nothing else with it.
revoke all on table public.v_idempotency_stats from public, anon, authenticated, service_role;
grant select on table public.v_idempotency_stats to service_role;

-- Hourly cleanup. cron.schedule with a job name replaces that job, so re-running adds no second job.
do $$
begin
  if exists (select 1 from pg_extension where extname = 'pg_cron') then
    perform cron.schedule(
      'cleanup-expired-idempotency-keys',
      '0 * * * *',
      'select public.cleanup_expired_idempotency_keys()'
    );
  else
    raise notice 'pg_cron is not installed: enable it, then schedule public.cleanup_expired_idempotency_keys()';
  end if;
end
$$;
