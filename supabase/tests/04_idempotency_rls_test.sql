-- Who may do what: grants per role on the table, the view and each function, and row level security as
-- each Data API role sees it (anon, a signed-in owner, another user, a signed-in user without sub,
-- service_role). Roles are switched with set local role plus request.jwt.claims, as PostgREST does.
begin;
set local search_path = public, extensions;
select plan(104);

-- ---------------------------------------------------------------------------------------------------------
-- grants
-- ---------------------------------------------------------------------------------------------------------
create temp table our_functions (fn regprocedure, caller_api boolean) on commit drop;
-- caller_api: the one function a signed-in user may call; the others are for the edge functions'
-- service role only, which is why anon and authenticated (and PUBLIC) must not reach them.
insert into our_functions values
  ('public.idempotency_begin(text, uuid, text, text, integer, integer)', false),
  ('public.idempotency_complete(uuid, uuid, integer, bytea, text, jsonb)', false),
  ('public.idempotency_fail(uuid, uuid, text, integer)', false),
  ('public.idempotency_extend_lease(uuid, uuid, integer)', false),
  ('public.cleanup_expired_idempotency_keys(integer, integer)', false),
  ('public.idempotency_key_digest(uuid, text)', false),
  ('public.get_idempotency_status(text)', true);

-- 21 tests: each role and function
select ok(
  has_function_privilege(r.role, f.fn, 'execute') = case r.role
    when 'service_role' then true
    when 'authenticated' then f.caller_api
    else false
  end,
  format('%s %s execute %s', r.role, case r.role when 'service_role' then 'may'
    when 'authenticated' then case when f.caller_api then 'may' else 'may not' end else 'may not' end, f.fn)
)
from our_functions f
cross join (values ('anon'), ('authenticated'), ('service_role')) r(role)
order by r.role, f.fn::text;

-- 7 tests: PUBLIC (every role, present and future) holds no execute grant on any of them
select ok(
  not exists (
    select 1 from pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
    where p.oid = f.fn and a.grantee = 0
  ),
  format('PUBLIC may not execute %s', f.fn)
)
from our_functions f
order by f.fn::text;

select table_privs_are('public', 'idempotency_keys', 'anon', array[]::text[],
  'anon has no privilege on the table');
select table_privs_are('public', 'idempotency_keys', 'authenticated', array[]::text[],
  'authenticated has no table-wide privilege: only the columns below');
select column_privs_are('public', 'idempotency_keys', c, 'authenticated', array['SELECT'],
  format('authenticated may read %s of its own rows', c))
from unnest(array['id', 'idempotency_key', 'user_id', 'function_name', 'status', 'status_code',
  'attempt_count', 'replay_count', 'last_replayed_at', 'created_at', 'started_at', 'completed_at',
  'expires_at', 'locked_until']) c;
select column_privs_are('public', 'idempotency_keys', c, 'authenticated', array[]::text[],
  format('authenticated may not read %s, not even of its own rows', c))
from unnest(array['response', 'response_encoding', 'response_headers', 'error_message',
  'request_fingerprint', 'lease_token', 'metadata']) c;
select table_privs_are('public', 'idempotency_keys', 'service_role',
  array['DELETE', 'INSERT', 'REFERENCES', 'SELECT', 'TRIGGER', 'TRUNCATE', 'UPDATE'],
  'service_role has every privilege on the table');
select table_privs_are('public', 'v_idempotency_stats', 'anon', array[]::text[],
  'anon may not read the stats view');
select table_privs_are('public', 'v_idempotency_stats', 'authenticated', array[]::text[],
  'authenticated may not read the stats view');
select table_privs_are('public', 'v_idempotency_stats', 'service_role', array['SELECT'],
  'service_role may only read the stats view');
select ok(
  not exists (
    select 1 from pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
    where c.oid in ('public.idempotency_keys'::regclass, 'public.v_idempotency_stats'::regclass)
      and a.grantee = 0
  ),
  'PUBLIC has no privilege on the table or the view'
);
select ok(has_table_privilege('service_role', 'public.idempotency_keys', 'select')
  and (select rolbypassrls from pg_roles where rolname = 'service_role'),
  'service_role reads past RLS (bypassrls), as on Supabase');

-- ---------------------------------------------------------------------------------------------------------
-- data: user A, user B and calls without a user, all with a key named pgtap-rls-shared
-- ---------------------------------------------------------------------------------------------------------
insert into auth.users (id, email) values
  ('00000000-0000-4000-8000-0000000004a1', 'pgtap-rls-a@example.com'),
  ('00000000-0000-4000-8000-0000000004b1', 'pgtap-rls-b@example.com');

-- begin, then complete (p_status > 0), fail (p_status < 0) or leave processing (null)
create function pg_temp.seed(p_key text, p_user uuid, p_status integer) returns void
language sql
as $$
  select case
    when p_status > 0 then public.idempotency_complete(b.record_id, b.lease_token, p_status, 'body'::bytea)
    when p_status < 0 then public.idempotency_fail(b.record_id, b.lease_token, 'boom', -p_status)
    else true
  end
  from public.idempotency_begin(p_key, p_user, 'pgtap-rls', repeat('4', 64)) b
$$;

select pg_temp.seed('pgtap-rls-a1', '00000000-0000-4000-8000-0000000004a1', 200);
select pg_temp.seed('pgtap-rls-shared', '00000000-0000-4000-8000-0000000004a1', null);
select pg_temp.seed('pgtap-rls-a-expired', '00000000-0000-4000-8000-0000000004a1', 201);
update public.idempotency_keys
set created_at = now() - interval '2 days', expires_at = now() - interval '1 day'
where idempotency_key = 'pgtap-rls-a-expired';
select pg_temp.seed('pgtap-rls-b1', '00000000-0000-4000-8000-0000000004b1', 200);
select pg_temp.seed('pgtap-rls-shared', '00000000-0000-4000-8000-0000000004b1', 202);
select pg_temp.seed('pgtap-rls-shared', null, -503);

create temp table totals as select count(*) as n from public.idempotency_keys;
grant select on totals to service_role;

-- ---------------------------------------------------------------------------------------------------------
-- anon: nothing at all
-- ---------------------------------------------------------------------------------------------------------
set local role anon;
set local request.jwt.claims to '{"role": "anon"}';

select throws_ok($$select * from public.idempotency_keys$$, '42501',
  'permission denied for table idempotency_keys', 'anon cannot read the table');
select throws_ok(
  $$insert into public.idempotency_keys (idempotency_key, function_name, request_fingerprint, lease_token,
    locked_until, expires_at) values ('pgtap-rls-anon', 'x', repeat('4', 64), gen_random_uuid(),
    now() + interval '1 minute', now() + interval '1 day')$$,
  '42501', 'permission denied for table idempotency_keys', 'anon cannot insert');
select throws_ok($$select response from public.idempotency_keys$$, '42501',
  'permission denied for table idempotency_keys', 'A cannot read the stored bodies, even their own');
select throws_ok($$select error_message from public.idempotency_keys$$, '42501',
  'permission denied for table idempotency_keys', 'A cannot read error details, even their own');
select throws_ok($$select lease_token from public.idempotency_keys$$, '42501',
  'permission denied for table idempotency_keys', 'A cannot read lease tokens, even their own');
select throws_ok($$update public.idempotency_keys set replay_count = 99$$, '42501',
  'permission denied for table idempotency_keys', 'anon cannot update');
select throws_ok($$delete from public.idempotency_keys$$, '42501',
  'permission denied for table idempotency_keys', 'anon cannot delete');
select throws_ok($$select * from public.v_idempotency_stats$$, '42501',
  'permission denied for view v_idempotency_stats', 'anon cannot read the stats view');
select throws_ok($$select * from public.idempotency_begin('pgtap-rls-anon', null, 'x', repeat('4', 64))$$,
  '42501', 'permission denied for function idempotency_begin', 'anon cannot execute idempotency_begin');
select throws_ok($$select public.idempotency_complete(gen_random_uuid(), gen_random_uuid(), 200, null)$$,
  '42501', 'permission denied for function idempotency_complete', 'anon cannot execute idempotency_complete');
select throws_ok($$select public.idempotency_fail(gen_random_uuid(), gen_random_uuid())$$, '42501',
  'permission denied for function idempotency_fail', 'anon cannot execute idempotency_fail');
select throws_ok($$select public.idempotency_extend_lease(gen_random_uuid(), gen_random_uuid())$$, '42501',
  'permission denied for function idempotency_extend_lease', 'anon cannot execute idempotency_extend_lease');
select throws_ok($$select public.cleanup_expired_idempotency_keys()$$, '42501',
  'permission denied for function cleanup_expired_idempotency_keys', 'anon cannot execute the cleanup');
select throws_ok($$select * from public.get_idempotency_status('pgtap-rls-a1')$$, '42501',
  'permission denied for function get_idempotency_status', 'anon cannot execute get_idempotency_status');
reset role;

-- ---------------------------------------------------------------------------------------------------------
-- user A: their own rows only
-- ---------------------------------------------------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to '{"sub": "00000000-0000-4000-8000-0000000004a1", "role": "authenticated"}';

select results_eq(
  $$select idempotency_key, status from public.idempotency_keys order by idempotency_key$$,
  $$values ('pgtap-rls-a-expired'::text, 'completed'::text), ('pgtap-rls-a1', 'completed'),
    ('pgtap-rls-shared', 'processing')$$,
  'user A reads exactly their three rows'
);
select is_empty($$select 1 from public.idempotency_keys where user_id is distinct from auth.uid()$$,
  'not one row of B or of user-less calls is visible to A');
select results_eq(
  $$select idempotency_key, function_name, status, status_code, attempt_count, replay_count
    from public.get_idempotency_status('pgtap-rls-a1')$$,
  $$values ('pgtap-rls-a1'::text, 'pgtap-rls'::text, 'completed'::text, 200, 1, 0)$$,
  'get_idempotency_status returns A''s own key'
);
select results_eq(
  $$select status, status_code from public.get_idempotency_status('pgtap-rls-shared')$$,
  $$values ('processing'::text, null::integer)$$,
  'for a key B and user-less calls share, A gets their own row and only it'
);
select is_empty($$select * from public.get_idempotency_status('pgtap-rls-b1')$$,
  'get_idempotency_status returns nothing for B''s key');
select is_empty($$select * from public.get_idempotency_status('pgtap-rls-a-expired')$$,
  'get_idempotency_status returns nothing for an expired key');
select is_empty($$select * from public.get_idempotency_status('pgtap-rls-unknown')$$,
  'get_idempotency_status returns nothing for an unknown key');
select throws_ok($$update public.idempotency_keys set replay_count = 99$$, '42501',
  'permission denied for table idempotency_keys', 'A cannot update even their own rows');
select throws_ok($$delete from public.idempotency_keys$$, '42501',
  'permission denied for table idempotency_keys', 'A cannot delete even their own rows');
select throws_ok(
  $$insert into public.idempotency_keys (idempotency_key, user_id, function_name, request_fingerprint,
    lease_token, locked_until, expires_at) values ('pgtap-rls-own', auth.uid(), 'x', repeat('4', 64),
    gen_random_uuid(), now() + interval '1 minute', now() + interval '1 day')$$,
  '42501', 'permission denied for table idempotency_keys', 'A cannot insert, not even for themselves');
select throws_ok(
  $$select * from public.idempotency_begin('pgtap-rls-own', auth.uid(), 'x', repeat('4', 64))$$, '42501',
  'permission denied for function idempotency_begin', 'A cannot execute idempotency_begin');
select throws_ok($$select public.idempotency_complete(gen_random_uuid(), gen_random_uuid(), 200, null)$$,
  '42501', 'permission denied for function idempotency_complete', 'A cannot execute idempotency_complete');
select throws_ok($$select public.idempotency_fail(gen_random_uuid(), gen_random_uuid())$$, '42501',
  'permission denied for function idempotency_fail', 'A cannot execute idempotency_fail');
select throws_ok($$select public.idempotency_extend_lease(gen_random_uuid(), gen_random_uuid())$$, '42501',
  'permission denied for function idempotency_extend_lease', 'A cannot execute idempotency_extend_lease');
select throws_ok($$select public.cleanup_expired_idempotency_keys()$$, '42501',
  'permission denied for function cleanup_expired_idempotency_keys', 'A cannot execute the cleanup');
select throws_ok($$select * from public.v_idempotency_stats$$, '42501',
  'permission denied for view v_idempotency_stats', 'A cannot read the stats view');
reset role;

-- ---------------------------------------------------------------------------------------------------------
-- user B: nothing of A's
-- ---------------------------------------------------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to '{"sub": "00000000-0000-4000-8000-0000000004b1", "role": "authenticated"}';

select results_eq(
  $$select idempotency_key, status from public.idempotency_keys order by idempotency_key$$,
  $$values ('pgtap-rls-b1'::text, 'completed'::text), ('pgtap-rls-shared', 'completed')$$,
  'user B reads exactly their two rows'
);
select is_empty($$select * from public.get_idempotency_status('pgtap-rls-a1')$$,
  'get_idempotency_status returns nothing of A''s key to B');
select results_eq(
  $$select status, status_code from public.get_idempotency_status('pgtap-rls-shared')$$,
  $$values ('completed'::text, 202)$$,
  'for the shared key B gets their own row'
);
select is_empty(
  $$select 1 from public.idempotency_keys where user_id = '00000000-0000-4000-8000-0000000004a1'$$,
  'asking for A''s rows by user_id returns nothing to B');
reset role;

-- a signed-in role without sub (a malformed or anonymous-but-authenticated token) sees nothing
set local role authenticated;
set local request.jwt.claims to '{"role": "authenticated"}';
select is_empty($$select 1 from public.idempotency_keys$$, 'authenticated without sub reads nothing');
select is_empty($$select * from public.get_idempotency_status('pgtap-rls-shared')$$,
  'authenticated without sub gets no status, not even of user-less keys');
reset role;

-- ---------------------------------------------------------------------------------------------------------
-- service_role: everything, and the functions
-- ---------------------------------------------------------------------------------------------------------
set local role service_role;
set local request.jwt.claims to '{"role": "service_role"}';

select is((select count(*) from public.idempotency_keys), (select n from totals),
  'service_role reads every row of the table');
select is((select count(*) from public.idempotency_keys where idempotency_key like 'pgtap-rls-%'), 6::bigint,
  'service_role reads the rows of A, B and user-less calls');
select is(
  (select outcome from public.idempotency_begin('pgtap-rls-svc', null, 'pgtap-rls', repeat('4', 64))),
  'started', 'service_role may execute idempotency_begin');
select is(
  (select public.idempotency_complete(b.record_id, b.lease_token, 200, 'ok'::bytea)
   from public.idempotency_begin('pgtap-rls-svc-complete', null, 'pgtap-rls', repeat('4', 64)) b),
  true, 'service_role may execute idempotency_complete');
select is(
  (select public.idempotency_fail(b.record_id, b.lease_token, 'boom')
   from public.idempotency_begin('pgtap-rls-svc-fail', null, 'pgtap-rls', repeat('4', 64)) b),
  true, 'service_role may execute idempotency_fail');
select is(
  (select public.idempotency_extend_lease(b.record_id, b.lease_token, 90)
   from public.idempotency_begin('pgtap-rls-svc-extend', null, 'pgtap-rls', repeat('4', 64)) b),
  true, 'service_role may execute idempotency_extend_lease');
select is(
  (select outcome from public.idempotency_begin('pgtap-rls-a1', '00000000-0000-4000-8000-0000000004a1',
    'pgtap-rls', repeat('4', 64))),
  'replay', 'service_role begins on behalf of a user and gets that user''s stored response');
select ok(public.cleanup_expired_idempotency_keys() >= 1, 'service_role may execute the cleanup');
select is_empty($$select 1 from public.idempotency_keys where idempotency_key = 'pgtap-rls-a-expired'$$,
  'the cleanup deleted A''s expired row');
select isnt_empty($$select * from public.v_idempotency_stats$$, 'service_role reads the stats view');
select is_empty($$select * from public.get_idempotency_status('pgtap-rls-shared')$$,
  'get_idempotency_status is for signed-in users: service_role has no uid and gets nothing');
reset role;

select * from finish();
rollback;
