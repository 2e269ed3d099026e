-- The statistics trigger does its writes itself: a begin+complete pair fires idempotency_keys_track once per
-- statement, and no tracked function runs inside it (its self time equals its total time). The released
-- version called a SQL helper per change that Postgres planned again at every call: half the claim's CPU.
begin;
set local search_path = public, extensions;
set local track_functions = 'all';
select plan(3);

create function pg_temp.pair(p_key text)
returns void
language plpgsql
as $$
declare
  v_begin record;
begin
  select b.record_id, b.lease_token into v_begin
  from public.idempotency_begin(p_key, null, 'pgtap-calls', repeat('6', 64), 86400, 30) b;
  perform public.idempotency_complete(v_begin.record_id, v_begin.lease_token, 200, '\x7b7d', 'identity', '{}');
end;
$$;
select pg_temp.pair(format('pgtap-calls-%s', i)) from generate_series(1, 20) i;

-- this transaction's own function statistics
create temp view calls as
select s.funcname::text as funcname, s.calls, s.total_time, s.self_time
from pg_stat_xact_user_functions s
where s.schemaname = 'public';

select is((select calls from calls where funcname = 'idempotency_keys_track'), 40::bigint,
  '20 pairs fire the statistics trigger 40 times: once for the claim, once for the completion');
select is((select total_time - self_time from calls where funcname = 'idempotency_keys_track'), 0::double precision,
  'no tracked function runs inside the statistics trigger');
select is((select count(*) from calls where funcname like 'idempotency_stats%'), 0::bigint,
  'no statistics helper function is called on the claim path');

select * from finish();
rollback;
