-- One key per scope through the digest (20261130000600): the unique index on idempotency_key_digest(user, key)
-- keeps one row per (user, key), keys without a user share one scope, and every lookup compares key and
-- user exactly, so a row that holds another scope's digest is never replayed, taken over or shown in its name.
begin;
set local search_path = public, extensions;
select plan(19);

insert into auth.users (id, email) values
  ('00000000-0000-4000-8000-0000000012a1', 'pgtap-digest-1@example.com'),
  ('00000000-0000-4000-8000-0000000012a2', 'pgtap-digest-2@example.com');

create function pg_temp.claim(p_key text, p_user uuid, p_fingerprint text default repeat('1', 64))
returns text
language sql
as $$ select outcome from public.idempotency_begin(p_key, p_user, 'pgtap-digest', p_fingerprint) $$;

-- the digest ---------------------------------------------------------------------------------------------

select is(
  public.idempotency_key_digest('00000000-0000-4000-8000-0000000012a1', 'pgtap-digest-k'),
  public.idempotency_key_digest('00000000-0000-4000-8000-0000000012a1', 'pgtap-digest-k'),
  'the digest of a (user, key) is always the same'
);
select ok(
  public.idempotency_key_digest('00000000-0000-4000-8000-0000000012a1', 'pgtap-digest-k')
    <> public.idempotency_key_digest('00000000-0000-4000-8000-0000000012a2', 'pgtap-digest-k')
  and public.idempotency_key_digest('00000000-0000-4000-8000-0000000012a1', 'pgtap-digest-k')
    <> public.idempotency_key_digest(null, 'pgtap-digest-k'),
  'two users and the user-less scope give one key three digests'
);
select is(
  left(public.idempotency_key_digest('00000000-0000-4000-8000-0000000012a1', 'pgtap-digest-k')::text, 18),
  left(public.idempotency_key_digest(null, 'pgtap-digest-k')::text, 18),
  'every scope of a key shares the digest''s first 8 bytes (the key''s own hash)'
);
select is(
  (select p.provolatile::text || ':' || array_to_string(p.proconfig, ',') from pg_proc p
   where p.oid = 'public.idempotency_key_digest(uuid, text)'::regprocedure),
  'i:search_path=""',
  'the digest is immutable and runs with an empty search_path'
);

-- same key, different users; one shared scope without a user --------------------------------------------

select is(pg_temp.claim('pgtap-digest-k', '00000000-0000-4000-8000-0000000012a1'), 'started',
  'user 1 claims the key');
select is(pg_temp.claim('pgtap-digest-k', '00000000-0000-4000-8000-0000000012a2'), 'started',
  'user 2 claims the same key: another scope');
select is(pg_temp.claim('pgtap-digest-k', null), 'started', 'a call without a user claims it: a third scope');
select is(pg_temp.claim('pgtap-digest-k', null), 'in_progress',
  'a second call without a user finds the first (one shared scope, as nulls not distinct made it)');
select is(pg_temp.claim('pgtap-digest-k', '00000000-0000-4000-8000-0000000012a2', repeat('2', 64)), 'mismatch',
  'user 2 with another request: mismatch in user 2''s scope only');
select is((select count(*) from public.idempotency_keys where idempotency_key = 'pgtap-digest-k'), 3::bigint,
  'three rows, one per scope');
select throws_ok(
  $$insert into public.idempotency_keys (idempotency_key, function_name, request_fingerprint, lease_token,
      locked_until, expires_at)
    values ('pgtap-digest-k', 'pgtap-digest', repeat('1', 32), gen_random_uuid(), now() + interval '30 seconds',
      now() + interval '1 day')$$,
  '23505', null,
  'a second user-less row for the key breaks the unique digest index'
);

-- a row that holds another scope's digest: made here by a digest that collides on purpose for keys named
-- pgtap-collide-* (the replacement is rolled back with the test; no other row's digest changes)
create or replace function public.idempotency_key_digest(p_user_id uuid, p_key text)
returns uuid
language sql
immutable
set search_path = ''
as $$
  select case when p_key like 'pgtap-collide-%' then '00000000-0000-4000-8000-00000000c011'::uuid
    else pg_catalog.encode(
      pg_catalog.substr(pg_catalog.sha256(pg_catalog.convert_to(p_key, 'UTF8')), 1, 8)
        || pg_catalog.substr(
          pg_catalog.sha256(pg_catalog.convert_to(coalesce(p_user_id::text, '') || '/' || p_key, 'UTF8')), 1, 8),
      'hex')::uuid
  end
$$;

create temp table first_claim as
select * from public.idempotency_begin('pgtap-collide-a', '00000000-0000-4000-8000-0000000012a1',
  'pgtap-digest', repeat('3', 64));
select ok(public.idempotency_complete(f.record_id, f.lease_token, 200, convert_to('user 1 secret', 'UTF8'),
  'identity', '{}'), 'user 1''s key is completed with its response')
from first_claim f;
create temp table before as select k.* from public.idempotency_keys k where k.idempotency_key = 'pgtap-collide-a';

select throws_ok(
  $$select pg_temp.claim('pgtap-collide-a', '00000000-0000-4000-8000-0000000012a2', repeat('3', 64))$$,
  '23505', 'idempotency key digest collision: this key cannot be claimed in this scope',
  'the same key and request from user 2, whose digest user 1''s row holds: refused, no replay of user 1''s answer'
);
select throws_ok(
  $$select pg_temp.claim('pgtap-collide-b', '00000000-0000-4000-8000-0000000012a1', repeat('3', 64))$$,
  '23505', 'idempotency key digest collision: this key cannot be claimed in this scope',
  'another key of user 1 with that digest: refused as well'
);
select is(
  (select to_jsonb(k) from public.idempotency_keys k where k.idempotency_key = 'pgtap-collide-a'),
  (select to_jsonb(b) from before b),
  'user 1''s row is untouched: no replay counted, not taken over'
);
select is((select count(*) from public.idempotency_keys where idempotency_key like 'pgtap-collide-%'), 1::bigint,
  'no second row was written');

-- the readers compare key and user too
select is_empty(
  $$select * from public.idempotency_admin_inspect('pgtap-collide-b')$$,
  'idempotency_admin_inspect shows no row for a key that only shares a digest'
);
set local role authenticated;
set local request.jwt.claims to '{"sub": "00000000-0000-4000-8000-0000000012a2", "role": "authenticated"}';
select is_empty(
  $$select * from public.get_idempotency_status('pgtap-collide-a')$$,
  'get_idempotency_status shows user 2 nothing of user 1''s row that holds its digest'
);
reset role;
select is(
  (select count(*) from public.idempotency_admin_inspect('pgtap-collide-a')), 1::bigint,
  'the key''s own scope is still found'
);

select * from finish();
rollback;
