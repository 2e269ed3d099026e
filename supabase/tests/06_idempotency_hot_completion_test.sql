-- A completion is a HOT update: no index covers a column that idempotency_complete, idempotency_fail or a
-- replay changes (not even in a partial index's predicate or an expression), so Postgres writes no index
-- entry for it; and, measured, 50 completions in a row are 50 HOT updates.
begin;
set local search_path = public, extensions;
select plan(4);

-- every column an index reads: key columns, expressions and predicates
create temp view indexed_columns as
select distinct a.attname::text as col
from pg_index i
join pg_attribute a on a.attrelid = i.indrelid
where i.indrelid = 'public.idempotency_keys'::regclass
  and (a.attnum = any (i.indkey)
    or pg_get_expr(i.indexprs, i.indrelid) ~ ('\m' || a.attname || '\M')
    or pg_get_expr(i.indpred, i.indrelid) ~ ('\m' || a.attname || '\M'));

select is(
  (select array_agg(col order by col) from indexed_columns
   where col in ('status', 'response', 'response_encoding', 'status_code', 'response_headers', 'error_message',
     'completed_at', 'expires_at', 'locked_until', 'lease_token', 'replay_count', 'last_replayed_at')),
  null,
  'no index reads a column that a completion, a failure or a replay changes'
);
select bag_eq(
  $$select col from indexed_columns$$,
  $$values ('id'), ('user_id'), ('idempotency_key'), ('purge_after')$$,
  'the indexes read id, (user_id, idempotency_key) and purge_after, and nothing else'
);

-- 50 requests, each a claim and then its completion, as traffic makes them (there each one commits on its
-- own; here they share one transaction, whose own counters tell HOT updates apart)
create temp table before as
select pg_stat_get_xact_tuples_updated('public.idempotency_keys'::regclass) as upd,
  pg_stat_get_xact_tuples_hot_updated('public.idempotency_keys'::regclass) as hot;

create function pg_temp.request(p_i integer) returns boolean
language sql
as $$
  select public.idempotency_complete(b.record_id, b.lease_token, 201,
    convert_to(repeat('{"ok":true}', 40), 'UTF8'), 'identity', '{"content-type": "application/json"}')
  from public.idempotency_begin(format('pgtap-hot-%s', p_i), null, 'pgtap-hot', repeat('6', 64)) b
$$;

select is(
  (select count(*) filter (where pg_temp.request(i)) from generate_series(1, 50) i),
  50::bigint,
  '50 requests claimed and completed'
);
select results_eq(
  $$select pg_stat_get_xact_tuples_updated('public.idempotency_keys'::regclass) - b.upd,
      pg_stat_get_xact_tuples_hot_updated('public.idempotency_keys'::regclass) - b.hot
    from before b$$,
  $$values (50::bigint, 50::bigint)$$,
  'all 50 completions were HOT updates: no index entry written'
);

select * from finish();
rollback;
