-- The stats view reads counters kept by triggers: after every kind of change (claim, completion, failure,
-- takeover, replay, lease renewal, expiry takeover, cleanup, a bulk delete, a purge_after move) its figures
-- equal the same figures counted from the table itself, and idempotency_stats_rebuild() gives the same again.
-- Each writer counts into rows of its own (shard = its backend pid) until a fold (idempotency_stats_compact,
-- run by the cron job) moves them into shard 0: every check is made before and after a fold, so each kind of
-- change is counted right whether the key's earlier changes sit in a writer's row or in a folded one.
begin;
set local search_path = public, extensions;
select plan(15);

delete from public.idempotency_keys;

-- what v_idempotency_stats shows, counted from idempotency_keys row by row (the first migration's definition)
create temp view exact as
select coalesce(k.function_name, '*') as function_name, count(*) as total,
  count(*) filter (where k.status = 'processing') as processing,
  count(*) filter (where k.status = 'completed') as completed,
  count(*) filter (where k.status = 'failed') as failed,
  coalesce(sum(k.replay_count), 0) as replays,
  count(*) filter (where k.status = 'processing' and k.locked_until > now()) as in_flight,
  count(*) filter (where k.status = 'processing' and k.locked_until <= now()) as stuck,
  count(*) filter (where k.expires_at < now() and not (k.status = 'processing' and k.locked_until > now()))
    as expired_pending_cleanup,
  min(k.created_at) as oldest_created_at, max(k.created_at) as newest_created_at
from public.idempotency_keys k
group by grouping sets ((k.function_name), ());

create temp view shown as
select function_name, total, processing, completed, failed, replays, in_flight, stuck, expired_pending_cleanup,
  oldest_created_at, newest_created_at
from public.v_idempotency_stats;

-- A statement of its own: as a join of idempotency_begin with the keys, a plan that read the (empty) keys
-- first never called idempotency_begin at all.
create function pg_temp.claim(p_key text, p_fn text, p_ttl integer default 86400)
returns void
language plpgsql
as $$
begin
  perform public.idempotency_begin(p_key, null, p_fn, repeat('7', 64), p_ttl, 30);
end;
$$;

-- the view equals a count of the table now, and still after a fold
create function pg_temp.check_both(p_what text)
returns setof text
language plpgsql
as $$
begin
  return next set_eq($q$select * from shown$q$, $q$select * from exact$q$, p_what);
  perform public.idempotency_stats_compact();
  return next set_eq($q$select * from shown$q$, $q$select * from exact$q$, p_what || ' (after a fold)');
end;
$$;

-- claims in two functions; complete some, fail some, replay some
select pg_temp.claim(format('pgtap-cnt-%s', i), case when i % 2 = 0 then 'pgtap-cnt-a' else 'pgtap-cnt-b' end)
from generate_series(1, 40) i;
select public.idempotency_complete(k.id, k.lease_token, 200, '\x7b7d', 'identity', '{}')
from public.idempotency_keys k where k.idempotency_key like 'pgtap-cnt-%' and right(k.idempotency_key, 1) in ('1', '2', '3', '4');
select public.idempotency_fail(k.id, k.lease_token, 'boom', 500)
from public.idempotency_keys k where k.idempotency_key like 'pgtap-cnt-%' and right(k.idempotency_key, 1) in ('5', '6');
select public.idempotency_begin(format('pgtap-cnt-%s', i), null, 'pgtap-cnt-a', repeat('7', 64))
from generate_series(2, 40, 10) i;
select pg_temp.check_both('after claims, completions, failures and replays the view equals a count of the table');

-- a failed key taken over (attempt 2: retried), a lease renewed, a lease ended (stuck)
select public.idempotency_begin('pgtap-cnt-5', null, 'pgtap-cnt-b', repeat('7', 64));
select public.idempotency_extend_lease(k.id, k.lease_token, 120) from public.idempotency_keys k
where k.idempotency_key = 'pgtap-cnt-7';
update public.idempotency_keys set locked_until = now() - interval '1 second' where idempotency_key = 'pgtap-cnt-9';
select is((select sum(retried) from public.idempotency_stats_counters where function_name = 'pgtap-cnt-b'),
  1::numeric, 'the taken-over failed key counts as retried');
select pg_temp.check_both('after a takeover, a renewed lease and an ended one the view equals a count of the table');

-- expiry: keys whose first expiry passed long ago (counters) and just now (checked one by one)
update public.idempotency_keys set created_at = now() - interval '2 days', expires_at = now() - interval '1 day'
where idempotency_key in ('pgtap-cnt-11', 'pgtap-cnt-12', 'pgtap-cnt-15', 'pgtap-cnt-17');
update public.idempotency_keys set created_at = now() - interval '2 days', expires_at = now() - interval '10 seconds'
where idempotency_key in ('pgtap-cnt-13', 'pgtap-cnt-14');
select pg_temp.check_both('keys expired a day ago and seconds ago are pending cleanup, as in the table');

-- an expired key claimed again starts afresh (function moves from b to a)
select public.idempotency_begin('pgtap-cnt-11', null, 'pgtap-cnt-a', repeat('8', 64));
select pg_temp.check_both('an expired key started afresh under another function moves between functions');

-- cleanup deletes the expired ones, statement by statement, and a bulk delete of a function's keys
select public.cleanup_expired_idempotency_keys(2, 10);
select pg_temp.check_both('after cleanup the view equals the table');
delete from public.idempotency_keys where function_name = 'pgtap-cnt-b';
select pg_temp.check_both('after deleting every key of one function it is gone from the view too');

-- the side tables rebuilt from scratch give the same figures
create temp table incremental as select * from shown;
select public.idempotency_stats_rebuild();
select set_eq($$select * from shown$$, $$select * from incremental$$,
  'idempotency_stats_rebuild() gives the figures the triggers kept');

-- and the open keys are exactly the keys not completed
select set_eq(
  $$select record_id, status, locked_until from public.idempotency_open_keys$$,
  $$select id, status, locked_until from public.idempotency_keys where status <> 'completed'$$,
  'idempotency_open_keys holds exactly the processing and failed keys, with their lease ends'
);

select * from finish();
rollback;
