-- Every lookup of one key goes through an index (20261130000600), never a scan of the table: at 10 million keys
-- a scan takes seconds. The service role's lookups use the digest's unique index. A signed-in user's
-- (get_idempotency_status, under RLS) uses the user_id index: Postgres applies a condition through an index
-- ahead of the RLS policy only when it is leakproof, which a call of the digest function (like any function a
-- non-superuser creates) is not (docs/scaling.md). Sequential scans are switched off here, so a query that
-- cannot use an index still scans the table (at a prohibitive cost estimate) and is counted: each check reads
-- this transaction's scan counters of the table (sequential scans) and of the two indexes.
begin;
set local search_path = public, extensions;
set local enable_seqscan = off;
select plan(7);

insert into auth.users (id, email) values ('00000000-0000-4000-8000-0000000014a1', 'pgtap-lookups@example.com');
insert into public.idempotency_keys (idempotency_key, user_id, function_name, request_fingerprint, status,
  status_code, response, completed_at, expires_at)
select 'pgtap-lookup-' || i, case when i % 2 = 0 then '00000000-0000-4000-8000-0000000014a1'::uuid end,
  'pgtap-lookups', repeat('e', 32), 'completed', 200, convert_to('{}', 'UTF8'), now(), now() + interval '1 day'
from generate_series(1, 200) i;
analyze public.idempotency_keys;

-- runs p_sql; returns the table scans it caused and the indexes it used
create function pg_temp.scans(p_sql text) returns text
language plpgsql
as $$
declare
  v_table bigint := pg_stat_get_xact_numscans('public.idempotency_keys'::regclass);
  v_digest bigint := pg_stat_get_xact_numscans('public.idempotency_keys_key_digest_unique'::regclass);
  v_user bigint := pg_stat_get_xact_numscans('public.idempotency_keys_user_idx'::regclass);
begin
  execute p_sql;
  return format('%s table scans, digest index: %s, user index: %s',
    pg_stat_get_xact_numscans('public.idempotency_keys'::regclass) - v_table,
    case when pg_stat_get_xact_numscans('public.idempotency_keys_key_digest_unique'::regclass) > v_digest
      then 'used' else 'not used' end,
    case when pg_stat_get_xact_numscans('public.idempotency_keys_user_idx'::regclass) > v_user
      then 'used' else 'not used' end);
end;
$$;

select is(pg_temp.scans($$select public.idempotency_begin('pgtap-lookup-7', null, 'pgtap-lookups', repeat('e', 64))$$),
  '0 table scans, digest index: used, user index: not used', 'idempotency_begin, replay of a user-less key');
select is(pg_temp.scans($$select public.idempotency_begin('pgtap-lookup-8', '00000000-0000-4000-8000-0000000014a1',
    'pgtap-lookups', repeat('f', 64))$$),
  '0 table scans, digest index: used, user index: not used', 'idempotency_begin, mismatch in a user''s scope');
select is(pg_temp.scans($$select public.idempotency_begin('pgtap-lookup-new', null, 'pgtap-lookups',
    repeat('e', 64))$$),
  '0 table scans, digest index: used, user index: not used', 'idempotency_begin, a new key');
select is(pg_temp.scans($$select * from public.idempotency_admin_inspect('pgtap-lookup-8')$$),
  '0 table scans, digest index: used, user index: not used', 'idempotency_admin_inspect of a key in any scope (one index range)');
select is(pg_temp.scans($$select * from public.idempotency_admin_inspect('pgtap-lookup-8',
    '00000000-0000-4000-8000-0000000014a1')$$),
  '0 table scans, digest index: used, user index: not used', 'idempotency_admin_inspect narrowed to a user');
-- the query PostgresStore.status sends (stores/postgres.ts)
select is(pg_temp.scans($$select idempotency_key, status from public.idempotency_keys
    where public.idempotency_key_digest(user_id, idempotency_key)
        = public.idempotency_key_digest('00000000-0000-4000-8000-0000000014a1'::uuid, 'pgtap-lookup-8'::text)
      and idempotency_key = 'pgtap-lookup-8'
      and user_id is not distinct from '00000000-0000-4000-8000-0000000014a1'::uuid
      and expires_at > now()$$),
  '0 table scans, digest index: used, user index: not used', 'PostgresStore.status''s query');

set local role authenticated;
set local request.jwt.claims to '{"sub": "00000000-0000-4000-8000-0000000014a1", "role": "authenticated"}';
select is(pg_temp.scans($$select * from public.get_idempotency_status('pgtap-lookup-8')$$),
  '0 table scans, digest index: not used, user index: used',
  'get_idempotency_status, as the signed-in user: through the user_id index');
reset role;

select * from finish();
rollback;
