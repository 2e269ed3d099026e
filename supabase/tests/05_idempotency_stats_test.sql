-- v_idempotency_stats on known data: per function and in total ('*'), every figure, including the
-- processing-time percentiles of completed rows; and who may read it.
begin;
set local search_path = public, extensions;
select plan(12);

-- The total row covers the whole table: start from an empty one (rolled back at the end).
delete from public.idempotency_keys;

select results_eq(
  $$
    select function_name, total, processing, completed, failed, replays, in_flight, stuck,
      expired_pending_cleanup, median_processing_ms, p95_processing_ms
    from public.v_idempotency_stats
  $$,
  $$values ('*'::text, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint,
      null::numeric, null::numeric)$$,
  'an empty table gives one total row of zeros and no percentiles'
);

-- One row. p_ms: completed_at - started_at for completed and failed rows. p_lease (processing only):
-- 'live' ends in 30 s, 'stuck' ended 1 s ago, 'now' ends at this very instant (which counts as ended).
create function pg_temp.put(
  p_key text, p_function text, p_status text, p_ms integer default null, p_replays integer default 0,
  p_lease text default null, p_expired boolean default false
) returns void
language sql
as $$
  insert into public.idempotency_keys (
    idempotency_key, function_name, request_fingerprint, status, status_code, lease_token, locked_until,
    replay_count, created_at, started_at, completed_at, expires_at
  ) values (
    p_key, p_function, repeat('5', 64), p_status,
    case when p_status = 'completed' then 200 end,
    case when p_status = 'processing' then gen_random_uuid() end,
    case p_lease when 'live' then now() + interval '30 seconds' when 'stuck' then now() - interval '1 second'
      when 'now' then now() end,
    p_replays,
    case when p_expired then now() - interval '2 days' else now() end,
    now() - interval '1 hour',
    case when p_status <> 'processing'
      then now() - interval '1 hour' + make_interval(secs => p_ms / 1000.0) end,
    case when p_expired then now() - interval '1 day' else now() + interval '1 day' end
  )
$$;

-- stats-a: 5 completed taking 100, 200, 300, 400 and 1000 ms (the last one expired), a failed row whose
-- 5 s must not count as processing time, one live lease and two ended ones; 2 + 1 replays
select pg_temp.put('pgtap-stats-a-c1', 'pgtap-stats-a', 'completed', 100, 2);
select pg_temp.put('pgtap-stats-a-c2', 'pgtap-stats-a', 'completed', 200);
select pg_temp.put('pgtap-stats-a-c3', 'pgtap-stats-a', 'completed', 300, 1);
select pg_temp.put('pgtap-stats-a-c4', 'pgtap-stats-a', 'completed', 400);
select pg_temp.put('pgtap-stats-a-c5', 'pgtap-stats-a', 'completed', 1000, 0, null, true);
select pg_temp.put('pgtap-stats-a-f1', 'pgtap-stats-a', 'failed', 5000);
select pg_temp.put('pgtap-stats-a-p1', 'pgtap-stats-a', 'processing', null, 0, 'live');
select pg_temp.put('pgtap-stats-a-p2', 'pgtap-stats-a', 'processing', null, 0, 'stuck');
select pg_temp.put('pgtap-stats-a-p3', 'pgtap-stats-a', 'processing', null, 0, 'now');
-- stats-b: one completed in 50 ms with 5 replays, one live lease, two failed (one expired)
select pg_temp.put('pgtap-stats-b-c1', 'pgtap-stats-b', 'completed', 50, 5);
select pg_temp.put('pgtap-stats-b-p1', 'pgtap-stats-b', 'processing', null, 0, 'live');
select pg_temp.put('pgtap-stats-b-f1', 'pgtap-stats-b', 'failed', 10, 0, null, true);
select pg_temp.put('pgtap-stats-b-f2', 'pgtap-stats-b', 'failed', 20);

-- Percentiles interpolate: stats-a's median is the 3rd of 5 (300); its p95 lies at 0.95 * 4 = 3.8, i.e.
-- 400 + 0.8 * (1000 - 400) = 880. In total, 6 durations: the median at 2.5 is 250, the p95 at 4.75 is 850.
create temp view figures as
select function_name, total, processing, completed, failed, replays, in_flight, stuck,
  expired_pending_cleanup, median_processing_ms, p95_processing_ms
from public.v_idempotency_stats;

select results_eq(
  $$select * from figures where function_name = 'pgtap-stats-a'$$,
  $$
    values ('pgtap-stats-a'::text, 9::bigint, 3::bigint, 5::bigint, 1::bigint, 3::bigint, 1::bigint,
      2::bigint, 1::bigint, 300.000::numeric, 880.000::numeric)
  $$,
  'stats-a: 9 rows, 3 processing (1 in flight, 2 stuck), 5 completed, 1 failed, 3 replays, 1 expired, '
    || '300/880 ms'
);
select results_eq(
  $$select * from figures where function_name = 'pgtap-stats-b'$$,
  $$
    values ('pgtap-stats-b'::text, 4::bigint, 1::bigint, 1::bigint, 2::bigint, 5::bigint, 1::bigint,
      0::bigint, 1::bigint, 50.000::numeric, 50.000::numeric)
  $$,
  'stats-b: 4 rows, 1 processing in flight, 1 completed, 2 failed, 5 replays, 1 expired, 50/50 ms'
);
select results_eq(
  $$select * from figures where function_name = '*'$$,
  $$values ('*'::text, 13::bigint, 4::bigint, 6::bigint, 3::bigint, 8::bigint, 2::bigint, 2::bigint,
      2::bigint, 250.000::numeric, 850.000::numeric)$$,
  'the total row adds both up, with percentiles over all completed rows: 250/850 ms'
);
select is(
  (select array_agg(function_name order by function_name) from public.v_idempotency_stats),
  array['*', 'pgtap-stats-a', 'pgtap-stats-b'],
  'one row per function and one total row'
);
select results_eq(
  $$select oldest_created_at, newest_created_at from public.v_idempotency_stats where function_name = '*'$$,
  $$values (now() - interval '2 days', now())$$,
  'oldest and newest created_at span the table'
);
select is(
  (select scale(median_processing_ms) from public.v_idempotency_stats where function_name = '*'),
  3,
  'percentiles are rounded to microseconds (3 decimals of ms)'
);

-- a lease that ends moves the row from in_flight to stuck
update public.idempotency_keys set locked_until = now() - interval '1 second'
where idempotency_key = 'pgtap-stats-b-p1';
select results_eq(
  $$select in_flight, stuck from public.v_idempotency_stats where function_name = 'pgtap-stats-b'$$,
  $$values (0::bigint, 1::bigint)$$,
  'an ended lease counts as stuck, not in flight'
);

-- who may read it
set local role service_role;
set local request.jwt.claims to '{"role": "service_role"}';
select is((select total from public.v_idempotency_stats where function_name = '*'), 13::bigint,
  'service_role reads the view, over every row');
reset role;

set local role authenticated;
set local request.jwt.claims to '{"sub": "00000000-0000-4000-8000-0000000005a1", "role": "authenticated"}';
select throws_ok($$select * from public.v_idempotency_stats$$, '42501',
  'permission denied for view v_idempotency_stats', 'authenticated may not read the view');
reset role;

set local role anon;
set local request.jwt.claims to '{"role": "anon"}';
select throws_ok($$select * from public.v_idempotency_stats$$, '42501',
  'permission denied for view v_idempotency_stats', 'anon may not read the view');
reset role;

-- security invoker: were the view owner's rights used, authenticated would read every user's figures
select ok(
  not exists (
    select 1 from pg_class c
    where c.oid = 'public.v_idempotency_stats'::regclass
      and not coalesce('security_invoker=true' = any (c.reloptions), false)
  ),
  'the view runs with the reader''s rights'
);

select * from finish();
rollback;
