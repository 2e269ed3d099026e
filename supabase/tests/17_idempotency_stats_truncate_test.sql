-- TRUNCATE of the keys empties the side tables with them (no deletion trigger fires for it): the view shows an
-- empty table, and keys claimed afterwards are counted from zero, before and after a fold.
begin;
set local search_path = public, extensions;
select plan(5);

-- what v_idempotency_stats shows, counted from idempotency_keys row by row
create temp view exact as
select coalesce(k.function_name, '*') as function_name, count(*) as total,
  count(*) filter (where k.status = 'processing') as processing,
  count(*) filter (where k.status = 'completed') as completed,
  count(*) filter (where k.status = 'failed') as failed,
  coalesce(sum(k.replay_count), 0) as replays,
  count(*) filter (where k.status = 'processing' and k.locked_until > now()) as in_flight,
  count(*) filter (where k.status = 'processing' and k.locked_until <= now()) as stuck
from public.idempotency_keys k
group by grouping sets ((k.function_name), ());
create temp view shown as
select function_name, total, processing, completed, failed, replays, in_flight, stuck
from public.v_idempotency_stats;

select public.idempotency_begin(format('pgtap-trunc-%s', i), null, 'pgtap-trunc', repeat('6', 64))
from generate_series(1, 10) i;
select public.idempotency_fail(k.id, k.lease_token, 'boom', 500)
from public.idempotency_keys k where k.idempotency_key = 'pgtap-trunc-1';
-- some of them folded, the rest still in this writer's rows
select public.idempotency_stats_compact();
select public.idempotency_begin(format('pgtap-trunc-%s', i), null, 'pgtap-trunc', repeat('6', 64))
from generate_series(11, 15) i;

set local client_min_messages = warning; -- the cascade to idempotency_steps is expected
truncate public.idempotency_keys cascade;
select is((select count(*) from public.idempotency_stats_counters), 0::bigint, 'no counter row is left');
select is((select count(*) from public.idempotency_open_keys), 0::bigint, 'no open key is left');
select results_eq($$select function_name, total from shown$$, $$values ('*'::text, 0::bigint)$$,
  'the view shows an empty table');

select public.idempotency_begin(format('pgtap-trunc-%s', i), null, 'pgtap-trunc', repeat('6', 64))
from generate_series(1, 3) i;
select public.idempotency_fail(k.id, k.lease_token, 'boom', 500)
from public.idempotency_keys k where k.idempotency_key = 'pgtap-trunc-2';
select set_eq($$select * from shown$$, $$select * from exact$$, 'keys claimed after it are counted from zero');
select public.idempotency_stats_compact();
select set_eq($$select * from shown$$, $$select * from exact$$, 'and still after a fold');

select * from finish();
rollback;
