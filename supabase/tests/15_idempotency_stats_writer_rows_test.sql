-- The request path counts into rows of its own: every change a claim, completion, failure, replay, takeover or
-- deletion makes to idempotency_stats_counters lands in rows whose shard is the writer's backend pid, so no
-- writer ever waits for another's counter row, and the folded rows (shard 0) are left alone until the cleanup
-- job's fold (idempotency_stats_compact) moves the writers' rows into them. Replays count per function (one
-- row at expiry_minute -infinity), so a writer has a few rows whatever the keys it replays. (Checked on this
-- file's function only: the cleanup job may fold other rows meanwhile.)
begin;
set local search_path = public, extensions;
select plan(7);

create function pg_temp.begin_key(p_key text)
returns table (record_id uuid, lease_token uuid)
language plpgsql
as $$
begin
  return query select b.record_id, b.lease_token
    from public.idempotency_begin(p_key, null, 'pgtap-writer', repeat('6', 64), 86400, 30) b;
end;
$$;
create temp view writer_rows as
select * from public.idempotency_stats_counters where function_name = 'pgtap-writer';

-- keys claimed and folded: their counts sit in shard 0
select public.idempotency_complete(b.record_id, b.lease_token, 200, '\x7b7d', 'identity', '{}')
from pg_temp.begin_key('pgtap-writer-done') b;
select pg_temp.begin_key('pgtap-writer-failed');
select pg_temp.begin_key('pgtap-writer-renewed');
select public.idempotency_stats_compact();
select is((select array_agg(distinct shard) from writer_rows), array[0], 'after a fold the counts sit in shard 0');
create temp table folded as select * from writer_rows;

-- one of each change on the request path, each its own statement as PostgresStore sends them
select public.idempotency_begin('pgtap-writer-done', null, 'pgtap-writer', repeat('6', 64));
select public.idempotency_fail(k.id, k.lease_token, 'boom', 500)
from public.idempotency_keys k where k.idempotency_key = 'pgtap-writer-failed';
select public.idempotency_begin('pgtap-writer-failed', null, 'pgtap-writer', repeat('6', 64));
select public.idempotency_extend_lease(k.id, k.lease_token, 120)
from public.idempotency_keys k where k.idempotency_key = 'pgtap-writer-renewed';
select pg_temp.begin_key('pgtap-writer-new');

select set_eq($$select distinct shard from writer_rows where shard <> 0$$, $$values (pg_backend_pid())$$,
  'a claim, a replay, a failure, a takeover and a renewal counted into this backend''s rows only');
select set_eq($$select * from writer_rows where shard = 0$$, $$select * from folded$$,
  'the folded rows were not written');

delete from public.idempotency_keys where idempotency_key = 'pgtap-writer-failed';
select is((select sum(keys) from writer_rows where shard = pg_backend_pid()), 0::numeric,
  'a deletion counts into this backend''s rows too (one key added, one deleted)');
select set_eq($$select * from writer_rows where shard = 0$$, $$select * from folded$$,
  'and leaves the folded rows alone');

select public.idempotency_stats_compact();
select is((select array_agg(distinct shard) from writer_rows), array[0], 'a fold moves them into shard 0');

-- replays of completed keys that expire in 30 different minutes: one row, the function's
insert into public.idempotency_keys (idempotency_key, function_name, request_fingerprint, status, status_code,
  completed_at, expires_at)
select format('pgtap-writer-old-%s', i), 'pgtap-writer', repeat('6', 64), 'completed', 200, now(),
  now() + make_interval(hours => 1, mins => i)
from generate_series(1, 30) i;
select public.idempotency_stats_compact();
select public.idempotency_begin(format('pgtap-writer-old-%s', i), null, 'pgtap-writer', repeat('6', 64))
from generate_series(1, 30) i;
select results_eq(
  $$select expiry_minute, replays from writer_rows where shard = pg_backend_pid()$$,
  $$values ('-infinity'::timestamptz, 30::bigint)$$,
  'replays of keys of 30 minutes of first expiry count into one row of this backend''s: the function''s'
);

select * from finish();
rollback;
