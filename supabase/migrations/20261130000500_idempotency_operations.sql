-- Operating the idempotency keys: metric counters shared by every function instance, and admin functions.
--
-- Every function here is `security invoker` with `search_path = ''` and executable by service_role only: it
-- runs with the caller's rights, so it can do nothing the service role could not do by hand. Rows are read
-- as `to_jsonb(k)` minus the secrets, so a later migration that adds or renames columns of idempotency_keys
-- (issue 9 reworks them) changes what these functions show, never whether they work.

-- Bounded waits while this migration's transaction runs: a lock it cannot get fails the deploy fast instead of
-- queueing every request behind it (squawk: require-lock-timeout, require-statement-timeout).
set local lock_timeout = '5s';
set local statement_timeout = '60s';

-- Counters and histogram buckets, summed over every function instance. An instance adds its deltas every
-- few seconds (idempotency_metrics_add), so a scrape that lands on any instance reads the same totals.
create table if not exists public.idempotency_metric_counters (
  function_name text not null,
  -- e.g. outcomes_total, claim_seconds_bucket, claim_seconds_sum, claim_seconds_count
  metric text not null,
  -- the metric's own label: the outcome of outcomes_total, the `le` of a bucket, '' for sums and counts
  label text not null default '',
  value double precision not null default 0,
  updated_at timestamptz not null default now(),
  primary key (function_name, metric, label),
  constraint idempotency_metric_counters_function_format check (function_name ~ '^[A-Za-z0-9_-]{1,128}$'),
  constraint idempotency_metric_counters_metric_format check (metric ~ '^[a-z_]{1,64}$'),
  constraint idempotency_metric_counters_label_length check (char_length(label) <= 64),
  constraint idempotency_metric_counters_monotonic check (value >= 0)
);

comment on table public.idempotency_metric_counters is
  'Idempotency counters and histogram buckets per function, summed over every instance; service_role only.';

alter table public.idempotency_metric_counters enable row level security;
revoke all on table public.idempotency_metric_counters from public, anon, authenticated;
grant select, insert, update on table public.idempotency_metric_counters to service_role;

-- Adds one batch of deltas in one statement: four arrays of the same length.
create or replace function public.idempotency_metrics_add(
  p_function_names text[],
  p_metrics text[],
  p_labels text[],
  p_deltas double precision[]
)
returns void
language sql
volatile
security invoker
set search_path = ''
as $$
  insert into public.idempotency_metric_counters as c (function_name, metric, label, value)
  select d.function_name, d.metric, d.label, sum(d.delta)
  from unnest(p_function_names, p_metrics, p_labels, p_deltas) as d (function_name, metric, label, delta)
  where d.delta > 0
  group by d.function_name, d.metric, d.label
  on conflict (function_name, metric, label)
  do update set value = c.value + excluded.value, updated_at = now();
$$;

comment on function public.idempotency_metrics_add(text[], text[], text[], double precision[]) is
  'Adds counter deltas from one function instance; the arrays are parallel.';

-- One row as an operator may see it: every column but the secrets (the lease token, which would let its
-- reader finish someone else's claim; the stored body and headers; the request fingerprint).
create or replace function public.idempotency_admin_row(k public.idempotency_keys)
returns jsonb
language sql
immutable
security invoker
set search_path = ''
as $$
  select (to_jsonb(k) - 'lease_token' - 'response' - 'response_headers' - 'request_fingerprint')
    || jsonb_build_object('response_bytes', octet_length(k.response));
$$;

comment on function public.idempotency_admin_row(public.idempotency_keys) is
  'An idempotency_keys row as jsonb without its secrets (lease token, stored body and headers, fingerprint).';

-- Every row of one key (one per user scope), optionally narrowed to a user (null: any) and a function.
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

comment on function public.idempotency_admin_inspect(text, uuid, text) is
  'The rows of one idempotency key (every column but secrets); service_role only.';

-- Rows by status and function, newest first; p_stuck_only keeps processing rows whose lease has run out.
create or replace function public.idempotency_admin_list(
  p_status text default null,
  p_function_name text default null,
  p_stuck_only boolean default false,
  p_limit integer default 100
)
returns setof jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
  if p_status is not null and p_status not in ('processing', 'completed', 'failed') then
    raise exception 'status must be processing, completed or failed, got %', p_status using errcode = '22023';
  end if;
  if p_limit is null or p_limit < 1 or p_limit > 10000 then
    raise exception 'limit must be between 1 and 10000, got %', p_limit using errcode = '22023';
  end if;
  return query
    select public.idempotency_admin_row(k)
    from public.idempotency_keys k
    where (p_status is null or k.status = p_status)
      and (p_function_name is null or k.function_name = p_function_name)
      and (not coalesce(p_stuck_only, false) or (k.status = 'processing' and k.locked_until <= now()))
    order by k.created_at desc
    limit p_limit;
end;
$$;

comment on function public.idempotency_admin_list(text, text, boolean, integer) is
  'Lists idempotency keys (every column but secrets) by status and function, or only the stuck ones.';

-- Marks stuck keys failed so that their retries run again, with the reason recorded in error_message and in
-- metadata.released. Stuck: processing, lease run out, started more than p_older_than ago. A key under a live
-- lease is never touched (its worker may still run), nor one a concurrent takeover holds locked.
create or replace function public.idempotency_admin_release_stuck(
  p_older_than interval,
  p_reason text,
  p_function_name text default null
)
returns setof jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
  if p_older_than is null or p_older_than < interval '0' then
    raise exception 'older_than must be a non-negative interval, got %', p_older_than using errcode = '22023';
  end if;
  if p_reason is null or btrim(p_reason) = '' then
    raise exception 'a reason is required' using errcode = '22023';
  end if;
  return query
    with doomed as (
      select k.id from public.idempotency_keys k
      where k.status = 'processing' and k.locked_until <= now() and k.started_at < now() - p_older_than
        and (p_function_name is null or k.function_name = p_function_name)
      for update skip locked
    )
    update public.idempotency_keys k set
      status = 'failed',
      error_message = left('released by an operator: ' || p_reason, 2000),
      completed_at = now(),
      metadata = k.metadata || jsonb_build_object('released', jsonb_build_object(
        'at', now(), 'reason', left(p_reason, 500), 'lease_ended_at', k.locked_until,
        'by', current_user)),
      locked_until = null,
      lease_token = null
    from doomed
    where k.id = doomed.id and k.status = 'processing' and k.locked_until <= now()
    returning public.idempotency_admin_row(k);
end;
$$;

comment on function public.idempotency_admin_release_stuck(interval, text, text) is
  'Marks stuck processing keys failed (reason recorded) so retries run again; returns the released rows.';

-- Deletes one user's keys, or one function's, except those under a live lease (deleting one would let a
-- duplicate run while the first still runs). Returns how many were deleted.
create or replace function public.idempotency_admin_purge_user(p_user_id uuid)
returns bigint
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_deleted bigint;
begin
  if p_user_id is null then
    raise exception 'a user id is required' using errcode = '22023';
  end if;
  delete from public.idempotency_keys k
  where k.user_id = p_user_id and not (k.status = 'processing' and k.locked_until > now());
  get diagnostics v_deleted = row_count;
  return v_deleted;
end;
$$;

comment on function public.idempotency_admin_purge_user(uuid) is
  'Deletes a user''s idempotency keys except those under a live lease; returns how many.';

create or replace function public.idempotency_admin_purge_function(p_function_name text)
returns bigint
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_deleted bigint;
begin
  if p_function_name is null or p_function_name = '' then
    raise exception 'a function name is required' using errcode = '22023';
  end if;
  delete from public.idempotency_keys k
  where k.function_name = p_function_name and not (k.status = 'processing' and k.locked_until > now());
  get diagnostics v_deleted = row_count;
  return v_deleted;
end;
$$;

comment on function public.idempotency_admin_purge_function(text) is
  'Deletes a function''s idempotency keys except those under a live lease; returns how many.';

revoke all on function public.idempotency_metrics_add(text[], text[], text[], double precision[])
  from public, anon, authenticated;
revoke all on function public.idempotency_admin_row(public.idempotency_keys) from public, anon, authenticated;
revoke all on function public.idempotency_admin_inspect(text, uuid, text) from public, anon, authenticated;
revoke all on function public.idempotency_admin_list(text, text, boolean, integer)
  from public, anon, authenticated;
revoke all on function public.idempotency_admin_release_stuck(interval, text, text)
  from public, anon, authenticated;
revoke all on function public.idempotency_admin_purge_user(uuid) from public, anon, authenticated;
revoke all on function public.idempotency_admin_purge_function(text) from public, anon, authenticated;

grant execute on function public.idempotency_metrics_add(text[], text[], text[], double precision[])
  to service_role;
grant execute on function public.idempotency_admin_row(public.idempotency_keys) to service_role;
grant execute on function public.idempotency_admin_inspect(text, uuid, text) to service_role;
grant execute on function public.idempotency_admin_list(text, text, boolean, integer) to service_role;
grant execute on function public.idempotency_admin_release_stuck(interval, text, text) to service_role;
grant execute on function public.idempotency_admin_purge_user(uuid) to service_role;
grant execute on function public.idempotency_admin_purge_function(text) to service_role;
