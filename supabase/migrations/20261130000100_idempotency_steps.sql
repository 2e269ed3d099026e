-- Exactly-once for the work itself (issue 7): an asynchronously committed claim for transactional handlers,
-- and resumable steps recorded with the key for work with external side effects.
--
-- The finishers of 20261123000100 (idempotency_complete / _fail / _extend_lease) are used unchanged; the
-- transactional mode calls idempotency_complete inside the handler's own transaction.

-- Bounded waits while this migration's transaction runs: a lock it cannot get fails the deploy fast instead of
-- queueing every request behind it (squawk: require-lock-timeout, require-statement-timeout).
set local lock_timeout = '5s';
set local statement_timeout = '60s';

-- Claim a key like idempotency_begin, but let this transaction commit without waiting for its WAL flush
-- (synchronous_commit = off for this transaction only). Why this is safe for a transactional handler:
--   * the claim's commit record is in the WAL before anything the handler's transaction writes afterwards;
--   * the handler's transaction updates this very row (idempotency_complete) and commits with the session's
--     synchronous_commit (on in production), and a synchronous commit flushes the WAL up to its own commit
--     record, which includes every earlier record, the claim's among them;
--   * so a crash can lose the claim only together with everything the handler did: no trace is left, and
--     the retry runs the work once. A crash that keeps the work keeps the completed record: the retry replays.
-- A lost claim never hides a live one either: the client that sent it has no answer yet (its response waits
-- for the durable completion), and a duplicate that saw it got 409 and retries.
-- Not for handlers whose effects live outside this database: use steps (below) or the durable
-- idempotency_begin, since an external call is not rolled back with a lost claim.
create or replace function public.idempotency_begin_async(
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
begin
  -- local to this transaction: a later transaction on this connection (or pooler connection) is unaffected
  perform set_config('synchronous_commit', 'off', true);
  return query select * from public.idempotency_begin(
    p_key, p_user_id, p_function_name, p_fingerprint, p_ttl_seconds, p_lock_timeout_seconds);
end;
$$;

comment on function public.idempotency_begin_async(text, uuid, text, text, integer, integer) is
  'idempotency_begin committed with synchronous_commit = off: for transactional handlers, whose durable '
  'completion flushes the claim''s WAL.';

-- One row per completed step of a keyed request: its recorded result, reused by every later attempt.
create table if not exists public.idempotency_steps (
  record_id uuid not null references public.idempotency_keys (id) on delete cascade,
  step_name text not null,
  result jsonb not null,
  completed_at timestamptz not null default now(),
  primary key (record_id, step_name),
  constraint idempotency_steps_name_format check (step_name ~ '^[A-Za-z0-9_.:-]{1,128}$')
);

comment on table public.idempotency_steps is
  'Completed steps of keyed requests (resumable work): a retry skips them and reuses their results.';

alter table public.idempotency_steps enable row level security;
revoke all on table public.idempotency_steps from public, anon, authenticated;
grant all on table public.idempotency_steps to service_role;

-- Record a step's result. Only the current lease holder may: the key row is share-locked first, so a
-- takeover (which locks it for update) either happens before (the token no longer matches: false, nothing
-- written) or waits until this step is recorded (and the new holder then reads it).
create or replace function public.idempotency_record_step(
  p_record_id uuid,
  p_lease_token uuid,
  p_step_name text,
  p_result jsonb
)
returns boolean
language plpgsql
volatile
set search_path = ''
as $$
begin
  perform 1 from public.idempotency_keys k
  where k.id = p_record_id and k.lease_token = p_lease_token and k.status = 'processing'
  for share;
  if not found then
    return false;
  end if;
  -- a row left by an expired, restarted key is overwritten: the lease holder's result is the truth
  insert into public.idempotency_steps as s (record_id, step_name, result)
  values (p_record_id, p_step_name, coalesce(p_result, 'null'::jsonb))
  on conflict (record_id, step_name) do update set result = excluded.result, completed_at = now();
  return true;
end;
$$;

comment on function public.idempotency_record_step(uuid, uuid, text, jsonb) is
  'Records a completed step of a keyed request; true only for the holder of the current lease token.';

revoke all on function public.idempotency_begin_async(text, uuid, text, text, integer, integer)
  from public, anon, authenticated;
revoke all on function public.idempotency_record_step(uuid, uuid, text, jsonb) from public, anon, authenticated;
grant execute on function public.idempotency_begin_async(text, uuid, text, text, integer, integer)
  to service_role;
grant execute on function public.idempotency_record_step(uuid, uuid, text, jsonb) to service_role;

-- start-training hands each job to an external trainer: its id there (null when no trainer is configured)
alter table public.training_jobs add column if not exists trainer_job_id text;
