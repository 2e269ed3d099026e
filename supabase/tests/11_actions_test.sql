-- Idempotent actions (20261130000400_idempotent_actions.sql): RLS on, every function for service_role only,
-- security invoker with an empty search_path, and the claim outcomes in SQL.
begin;
set local search_path = public, extensions;
select plan(76);

create temp table action_functions (fn regprocedure) on commit drop;
insert into action_functions values
  ('public.action_count(bigint, bigint, bigint, bigint)'),
  ('public.action_claim(text, text, text, text, text, integer, integer, boolean)'),
  ('public.action_complete(text, uuid, jsonb)'),
  ('public.action_fail(text, uuid, text)'),
  ('public.action_extend(text, uuid, integer)'),
  ('public.action_get(text, boolean)'),
  ('public.action_delete(text)'),
  ('public.action_clear_all()'),
  ('public.action_cleanup_expired(integer)'),
  ('public.action_stats()'),
  ('public.action_reset_stats()'),
  ('public.action_cache_info()'),
  ('public.action_find(text, text, text, text, timestamptz, integer)');

-- 39 tests: only service_role may execute each function
select ok(
  has_function_privilege(r.role, f.fn, 'execute') = (r.role = 'service_role'),
  format('%s %s execute %s', r.role, case when r.role = 'service_role' then 'may' else 'may not' end, f.fn)
)
from action_functions f cross join (values ('anon'), ('authenticated'), ('service_role')) r(role)
order by r.role, f.fn::text;

-- 13 tests: PUBLIC holds no execute grant
select ok(
  not exists (
    select 1 from pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
    where p.oid = f.fn and a.grantee = 0
  ),
  format('PUBLIC may not execute %s', f.fn)
)
from action_functions f order by f.fn::text;

-- 13 tests: security invoker, search_path pinned to ''
select ok(
  not p.prosecdef and p.proconfig @> array['search_path=""'],
  format('%s is security invoker with search_path = ''''', f.fn)
)
from action_functions f join pg_proc p on p.oid = f.fn order by f.fn::text;

-- 3 tests: RLS on every table
select ok(c.relrowsecurity, format('RLS is on for %s', c.relname))
from pg_class c where c.oid in ('public.action_records'::regclass, 'public.action_counters'::regclass,
  'public.notifications'::regclass)
order by c.relname;

-- 2 tests: the API roles cannot read the records
select ok(not has_table_privilege('anon', 'public.action_records', 'select'), 'anon may not read action_records');
select ok(not has_table_privilege('authenticated', 'public.action_records', 'select'),
  'authenticated may not read action_records');

-- 6 tests: the claim outcomes
create temp table claim1 on commit drop as
  select * from public.action_claim('pgtap:notify:slack:0123456789abcdef', 'notify', 'slack', 'pgtap',
    '0123456789abcdef', 60000, 30000);
select is((select outcome from claim1), 'started', 'a new key is started');
select is((select outcome from public.action_claim('pgtap:notify:slack:0123456789abcdef', 'notify', 'slack',
  'pgtap', '0123456789abcdef', 60000, 30000)), 'in_progress', 'a duplicate under the live lease is in_progress');
select is(public.action_complete('pgtap:notify:slack:0123456789abcdef', gen_random_uuid(), '1'), false,
  'another token cannot complete');
select is(public.action_complete('pgtap:notify:slack:0123456789abcdef', (select lease_token from claim1),
  '{"ts": "1"}'), true, 'the holder completes');
select is((select result from public.action_claim('pgtap:notify:slack:0123456789abcdef', 'notify', 'slack',
  'pgtap', '0123456789abcdef', 60000, 30000)), '{"ts": "1"}'::jsonb, 'a repeat gets the recorded result');
select throws_ok(
  $$select * from public.action_claim('k', null, null, null, null, 10, 30000)$$, '22023', null,
  'a TTL under 1000 ms is refused'
);

select * from finish();
rollback;
