-- Issue 7's SQL: idempotency_begin_async (a claim committed without waiting for its WAL flush) and the
-- resumable steps table, whose rows only the current lease holder may write.
begin;
set local search_path = public, extensions;
select plan(17);

-- grants: service_role only, never PUBLIC, anon or authenticated
select ok(has_function_privilege('service_role',
  'public.idempotency_begin_async(text, uuid, text, text, integer, integer)', 'execute'),
  'service_role may execute idempotency_begin_async');
select ok(has_function_privilege('service_role',
  'public.idempotency_record_step(uuid, uuid, text, jsonb)', 'execute'),
  'service_role may execute idempotency_record_step');
select ok(not has_function_privilege(r, 'public.idempotency_begin_async(text, uuid, text, text, integer, integer)',
  'execute') and not has_function_privilege(r, 'public.idempotency_record_step(uuid, uuid, text, jsonb)', 'execute'),
  format('%s may execute neither', r))
from unnest(array['anon', 'authenticated']) r;
select ok((select relrowsecurity from pg_class where oid = 'public.idempotency_steps'::regclass),
  'idempotency_steps has row level security on');
select ok(not has_table_privilege(r, 'public.idempotency_steps', 'select'), format('%s may not read steps', r))
from unnest(array['anon', 'authenticated']) r;

-- the async claim: the same outcomes as idempotency_begin, and synchronous_commit off for this transaction only
create temp table claim on commit drop as
  select * from public.idempotency_begin_async('steps-test-key', null, 'steps-test', repeat('a', 64), 60, 30);
select is((select outcome from claim), 'started', 'the first async claim starts');
select is(current_setting('synchronous_commit'), 'off', 'the claiming transaction commits asynchronously');
select is((select outcome from public.idempotency_begin_async('steps-test-key', null, 'steps-test',
  repeat('a', 64), 60, 30)), 'in_progress', 'a duplicate async claim sees the live lease');

-- steps: only the lease holder records; a second record of the same step overwrites, never duplicates
select ok(public.idempotency_record_step((select record_id from claim), (select lease_token from claim), 'one',
  '{"id": "x"}'::jsonb), 'the lease holder records a step');
select ok(not public.idempotency_record_step((select record_id from claim), gen_random_uuid(), 'two',
  '{}'::jsonb), 'another token records nothing');
select is((select count(*)::int from public.idempotency_steps where record_id = (select record_id from claim)), 1,
  'one step row');
select ok(public.idempotency_record_step((select record_id from claim), (select lease_token from claim), 'one',
  '{"id": "y"}'::jsonb), 'recording the same step again succeeds');
select is((select result from public.idempotency_steps where record_id = (select record_id from claim)),
  '{"id": "y"}'::jsonb, 'and keeps one row with the newest result');
select ok(public.idempotency_complete((select record_id from claim), (select lease_token from claim), 201,
  'ok'::bytea), 'the holder completes');
select ok(not public.idempotency_record_step((select record_id from claim), (select lease_token from claim),
  'late', '{}'::jsonb), 'a completed key takes no more steps');

select * from finish();
rollback;
