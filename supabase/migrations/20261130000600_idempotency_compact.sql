-- Fewer stored bytes per key (issue 9: docs/scaling.md, "Bytes per key", has the figures behind each choice).
--
--   * The claim's uniqueness moves from the constraint on (idempotency_key, user_id), a B-tree of the key's
--     text (~100 bytes a key at 10 million random keys), to a unique index on one 16-byte digest of the
--     pair (~41 bytes a key). Every lookup of a key goes through the digest, then compares key and user
--     exactly, so two pairs that shared a digest could never be taken for one another. The one lookup that
--     cannot use it, get_idempotency_status under RLS, uses the user_id index.
--   * The request fingerprint is stored as 128 bits: its first 32 hex digits. Rows written before keep
--     their 64; every comparison reads the first 32 of both sides, so they keep matching their retries.
--   * A new stored body encoding, `br` (brotli, written by the TypeScript codec); `gzip` and `identity`
--     rows are read as before.
--
-- Deploying onto a large table: the unique index is built inside this migration (a SHARE lock: reads go on,
-- writes wait) unless it already exists; docs/scaling.md says how to build it first without blocking
-- writes. Everything else here is a catalog change, held for an instant. The two check constraints are
-- replaced NOT VALID: every existing row met the stricter constraint they replace, and validating would
-- scan the whole table under this transaction's exclusive lock.
--
-- Re-running this file is harmless: each step replaces or checks first.

set local lock_timeout = '5s';
set local statement_timeout = '30min';

-- the digest ----------------------------------------------------------------------------------------------

-- 16 bytes as a uuid: the first 8 of SHA-256 of the key, then the first 8 of SHA-256 of user and key (an
-- empty user for calls without one, so those share one scope per key, as the old constraint's
-- `nulls not distinct` made them). Every scope of one key thus sits in one narrow range of the index: an
-- operator looking a key up without knowing its user reads that range (idempotency_admin_inspect), not the
-- table. A uuid compares as 16 bytes, and its index entry is 24 bytes where the key's text took ~60.
-- Immutable: it reads only its arguments (the key is ASCII, so its UTF-8 bytes never depend on settings).
create or replace function public.idempotency_key_digest(p_user_id uuid, p_key text)
returns uuid
language sql
immutable
parallel safe
set search_path = ''
as $$
  select pg_catalog.encode(
    pg_catalog.substr(pg_catalog.sha256(pg_catalog.convert_to(p_key, 'UTF8')), 1, 8)
      || pg_catalog.substr(
        pg_catalog.sha256(pg_catalog.convert_to(coalesce(p_user_id::text, '') || '/' || p_key, 'UTF8')), 1, 8),
    'hex')::uuid
$$;

comment on function public.idempotency_key_digest(uuid, text) is
  'The 16-byte digest the claim''s unique index holds for (user, key): key hash (8 bytes), then user+key hash.';

-- An index expression runs with the rights of whoever writes the row: the functions' service role.
revoke all on function public.idempotency_key_digest(uuid, text) from public, anon, authenticated;
grant execute on function public.idempotency_key_digest(uuid, text) to service_role;

-- Skipped when it already exists, e.g. built beforehand with CREATE UNIQUE INDEX CONCURRENTLY (docs/scaling.md);
-- a concurrent build that failed leaves an invalid index of that name, which must not pass for the real one.
do $$
begin
  if exists (
    select 1 from pg_index i
    where i.indexrelid = to_regclass('public.idempotency_keys_key_digest_unique') and not i.indisvalid
  ) then
    raise exception 'index idempotency_keys_key_digest_unique is invalid (a failed concurrent build): drop it first';
  end if;
end
$$;

-- Deliberate: the Supabase CLI applies a migration in one transaction, where CONCURRENTLY cannot run; a large
-- project builds it concurrently before deploying (docs/scaling.md) and this statement then does nothing.
-- squawk-ignore require-concurrent-index-creation
create unique index if not exists idempotency_keys_key_digest_unique
  on public.idempotency_keys (public.idempotency_key_digest(user_id, idempotency_key));

-- the claim ------------------------------------------------------------------------------------------------

-- As in 20261130000300, with the key found through its digest and the fingerprint compared on 128 bits.
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
  v_digest uuid := public.idempotency_key_digest(p_user_id, p_key);
  -- What is stored and compared: the first 128 bits of a SHA-256 fingerprint (a caller may send all 256);
  -- anything else as sent, which the table's check refuses on insert and which matches no stored row.
  v_fingerprint text := case when p_fingerprint ~ '^[0-9a-f]{64}$' then left(p_fingerprint, 32) else p_fingerprint end;
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
      p_key, p_user_id, p_function_name, v_fingerprint, 'processing',
      v_now + make_interval(secs => p_lock_timeout_seconds), v_token, v_now, v_now,
      v_now + make_interval(secs => p_ttl_seconds), v_now + make_interval(secs => p_ttl_seconds)
    )
    on conflict ((public.idempotency_key_digest(user_id, idempotency_key))) do nothing
    returning k.* into v_row;
    exit when found;

    -- The common duplicate, a retry of completed work, is answered by this one statement. clock_timestamp()
    -- is read after any wait for the row lock, so expiry is judged at the moment the row is ours. Rows
    -- stored with a 64-digit fingerprint (before 128 bits) compare on their first 32 digits.
    update public.idempotency_keys k
    set replay_count = k.replay_count + 1, last_replayed_at = clock_timestamp()
    where public.idempotency_key_digest(k.user_id, k.idempotency_key) = v_digest
      and k.idempotency_key = p_key and k.user_id is not distinct from p_user_id
      and k.status = 'completed' and left(k.request_fingerprint, 32) = v_fingerprint
      and k.expires_at > clock_timestamp()
    returning k.* into v_row;

    if found then
      return query select 'replay'::text, v_row.id, null::uuid, v_row.status_code, v_row.response,
        v_row.response_encoding, v_row.response_headers, null::integer, v_row.attempt_count,
        v_row.replay_count, v_row.expires_at;
      return;
    end if;

    -- the row that holds the digest: this scope's, or (odds of 2^-64 per pair of users sharing a key, far
    -- less otherwise) another scope's, which is never claimed, replayed or taken over in this one's name
    select k.* into v_row
    from public.idempotency_keys k
    where public.idempotency_key_digest(k.user_id, k.idempotency_key) = v_digest
    for update;
    -- removed by cleanup since the insert: claim it again
    continue when not found;
    if v_row.idempotency_key <> p_key or v_row.user_id is distinct from p_user_id then
      raise exception 'idempotency key digest collision: this key cannot be claimed in this scope'
        using errcode = '23505', hint = 'Use another idempotency key.';
    end if;

    -- Read the clock again now that the row is locked: the insert and the lock may have waited for other
    -- callers, and a clock read before that wait would make a live lease look longer than it is (retry_after
    -- above the lock timeout), keep an ended lease from being taken over, and shorten a taken-over lease.
    v_now := clock_timestamp();
    v_expired := v_row.expires_at <= v_now
      and not (v_row.status = 'processing' and v_row.locked_until > v_now);

    -- completed since the replay update looked: go round, and that update counts the replay
    continue when not v_expired and v_row.status = 'completed'
      and left(v_row.request_fingerprint, 32) = v_fingerprint;

    if not v_expired and left(v_row.request_fingerprint, 32) <> v_fingerprint then
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
      request_fingerprint = v_fingerprint,
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

-- the readers of one key -------------------------------------------------------------------------------------

-- get_idempotency_status (20261123000100) keeps its query: it runs as the signed-in user, under the table's
-- RLS policy, and Postgres uses an index for a condition ahead of that policy only when the condition is
-- leakproof, which a call of idempotency_key_digest (like any function a non-superuser creates) is not. Its
-- key and user conditions find the row through the user_id index (docs/scaling.md says what that costs).

-- As in 20261130000500: every row of one key, optionally narrowed to a user (null: any) and a function. The
-- scopes of one key share the first 8 bytes of their digests: one range of the unique index.
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
  with key_hash as (
    select left(replace(public.idempotency_key_digest(null, p_key)::text, '-', ''), 16) as prefix
  )
  select public.idempotency_admin_row(k)
  from key_hash h
  join public.idempotency_keys k
    on public.idempotency_key_digest(k.user_id, k.idempotency_key)
      between (h.prefix || '0000000000000000')::uuid and (h.prefix || 'ffffffffffffffff')::uuid
  where k.idempotency_key = p_key
    and (p_user_id is null or k.user_id = p_user_id)
    and (p_function_name is null or k.function_name = p_function_name)
  order by k.created_at desc;
$$;

-- the table ------------------------------------------------------------------------------------------------

-- the digest's unique index holds the claim's uniqueness now (the functions above no longer name this)
alter table public.idempotency_keys drop constraint if exists idempotency_keys_key_user_unique;

alter table public.idempotency_keys drop constraint if exists idempotency_keys_fingerprint_format;
alter table public.idempotency_keys add constraint idempotency_keys_fingerprint_format
  check (request_fingerprint ~ '^[0-9a-f]{32}([0-9a-f]{32})?$') not valid;
comment on column public.idempotency_keys.request_fingerprint is
  'First 32 hex digits (128 bits) of the request''s SHA-256; rows from before 20261130000600 hold all 64.';

alter table public.idempotency_keys drop constraint if exists idempotency_keys_encoding_valid;
alter table public.idempotency_keys add constraint idempotency_keys_encoding_valid
  check (response_encoding in ('identity', 'gzip', 'br')) not valid;
comment on column public.idempotency_keys.response_encoding is
  'How response is stored: identity (as sent), gzip, or br (brotli).';
