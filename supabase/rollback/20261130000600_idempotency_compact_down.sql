-- Rollback of supabase/migrations/20261130000600_idempotency_compact.sql: the unique constraint on
-- (idempotency_key, user_id) in place of the digest's index, and the previous definitions of the functions that
-- looked keys up (idempotency_begin as 20261130000300 has it, idempotency_admin_inspect as 20261130000500). Rows are kept. Safe to run twice; one transaction.
--   psql "$DB_URL" -v ON_ERROR_STOP=1 -f supabase/rollback/20261130000600_idempotency_compact_down.sql
-- What cannot be put back: keys stored since with a 128-bit fingerprint get `mismatch` (422, nothing runs) from
-- the previous idempotency_begin until they expire, and `br` bodies can be read only by the toolkit version that
-- wrote them: keep that version of the functions deployed until those keys have expired. The two check
-- constraints are put back NOT VALID, so that such rows do not stop the rollback.

begin;
set local lock_timeout = '5s';

do $$
begin
  if to_regclass('public.idempotency_keys') is null then
    return;
  end if;
  if not exists (select 1 from pg_constraint where conname = 'idempotency_keys_key_user_unique') then
    alter table public.idempotency_keys add constraint idempotency_keys_key_user_unique
      unique nulls not distinct (idempotency_key, user_id);
  end if;
  alter table public.idempotency_keys drop constraint if exists idempotency_keys_fingerprint_format;
  alter table public.idempotency_keys add constraint idempotency_keys_fingerprint_format
    check (request_fingerprint ~ '^[0-9a-f]{64}$') not valid;
  alter table public.idempotency_keys drop constraint if exists idempotency_keys_encoding_valid;
  alter table public.idempotency_keys add constraint idempotency_keys_encoding_valid
    check (response_encoding in ('identity', 'gzip')) not valid;
  comment on column public.idempotency_keys.request_fingerprint is null;
  comment on column public.idempotency_keys.response_encoding is null;
end
$$;

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

create or replace function public.idempotency_admin_inspect(
  p_key text,
  p_user_id uuid default null,
  p_function_name text default null
)
returns setof jsonb
language sql
stable
security invoker
set search_path = ''
as $$
  select public.idempotency_admin_row(k)
  from public.idempotency_keys k
  where k.idempotency_key = p_key
    and (p_user_id is null or k.user_id = p_user_id)
    and (p_function_name is null or k.function_name = p_function_name)
  order by k.created_at desc;
$$;

drop index if exists public.idempotency_keys_key_digest_unique;
drop function if exists public.idempotency_key_digest(uuid, text);

do $$
begin
  if to_regclass('supabase_migrations.schema_migrations') is not null then
    delete from supabase_migrations.schema_migrations where version = '20261130000600';
  end if;
end
$$;

commit;
