-- idempotency_begin and the lease: every outcome (started, replay, in_progress, mismatch), the takeovers
-- (failed, lease-expired, expired), the lease-token guard of complete / fail / extend_lease, and TTL expiry.
-- Runs as postgres; what each role may call is in 04_idempotency_rls_test.sql.
begin;
set local search_path = public, extensions;
select plan(88);

-- Each call's result row is kept under a label, so that later assertions can name it. (with no data: the
-- table takes the function's result columns without calling it)
create temp table calls as
select ''::text as label, b.*
from public.idempotency_begin('pgtap-shape', null, 'pgtap-begin', repeat('0', 64)) b
with no data;

-- idempotency_begin(key, user, 'pgtap-begin', fingerprint, ttl, lock timeout), kept as p_label
create function pg_temp.claim(
  p_label text, p_key text, p_fingerprint text, p_user uuid default null,
  p_ttl integer default 86400, p_lock integer default 30
) returns text
language sql
as $$
  insert into calls
  select p_label, b.*
  from public.idempotency_begin(p_key, p_user, 'pgtap-begin', p_fingerprint, p_ttl, p_lock) b
  returning outcome
$$;

create function pg_temp.call(p_label text) returns calls
language sql
as $$ select c from calls c where c.label = p_label $$;

-- complete / fail / extend_lease with the record and lease token that the call p_label got
create function pg_temp.complete(p_label text, p_status integer, p_body bytea, p_headers jsonb default '{}')
returns boolean
language sql
as $$
  select public.idempotency_complete(c.record_id, c.lease_token, p_status, p_body, 'identity', p_headers)
  from calls c where c.label = p_label
$$;

create function pg_temp.fail(p_label text, p_message text, p_status integer default null) returns boolean
language sql
as $$
  select public.idempotency_fail(c.record_id, c.lease_token, p_message, p_status)
  from calls c where c.label = p_label
$$;

create function pg_temp.extend(p_label text, p_seconds integer default 30) returns boolean
language sql
as $$
  select public.idempotency_extend_lease(c.record_id, c.lease_token, p_seconds)
  from calls c where c.label = p_label
$$;

create function pg_temp.row_of(p_key text) returns public.idempotency_keys
language sql
as $$ select k from public.idempotency_keys k where k.idempotency_key = p_key and k.user_id is null $$;

-- the whole row as jsonb: equal before and after means nothing changed
create temp table snapshots (label text primary key, row jsonb);

create function pg_temp.snap(p_label text, p_key text) returns void
language sql
as $$ insert into snapshots values (p_label, to_jsonb(pg_temp.row_of(p_key))) $$;

create function pg_temp.unchanged_since(p_label text, p_key text) returns boolean
language sql
as $$ select s.row = to_jsonb(pg_temp.row_of(p_key)) from snapshots s where s.label = p_label $$;

-- ---------------------------------------------------------------------------------------------------------
-- started: a new key
-- ---------------------------------------------------------------------------------------------------------
select is(pg_temp.claim('a1', 'pgtap-begin-a', repeat('1', 64)), 'started', 'rule new-key: a new key is started');
select ok((pg_temp.call('a1')).lease_token is not null and (pg_temp.call('a1')).record_id is not null,
  'started returns a record id and a lease token');
select results_eq(
  $$
    select attempt_count, replay_count, status_code, response, retry_after_seconds
    from calls where label = 'a1'
  $$,
  $$values (1, 0, null::integer, null::bytea, null::integer)$$,
  'started: first attempt, no replays, no response, no retry hint'
);
select results_eq(
  $$
    select k.id, k.status, k.lease_token, k.function_name, k.request_fingerprint, k.attempt_count,
      k.expires_at
    from public.idempotency_keys k where k.idempotency_key = 'pgtap-begin-a'
  $$,
  $$
    select c.record_id, 'processing'::text, c.lease_token, 'pgtap-begin'::text, repeat('1', 32), 1,
      c.expires_at
    from calls c where c.label = 'a1'
  $$,
  'the row is processing under the returned lease token, with the fingerprint''s first 128 bits'
);
select is((pg_temp.row_of('pgtap-begin-a')).locked_until - (pg_temp.row_of('pgtap-begin-a')).started_at,
  interval '30 seconds', 'the lease runs for the lock timeout (30 s by default)');
select is((pg_temp.row_of('pgtap-begin-a')).expires_at - (pg_temp.row_of('pgtap-begin-a')).created_at,
  interval '1 day', 'the key lives for the TTL (86400 s by default)');
select ok((pg_temp.row_of('pgtap-begin-a')).created_at >= now(),
  'the row is stamped with the clock, not the transaction start');

-- ---------------------------------------------------------------------------------------------------------
-- in_progress: a live lease held by someone else
-- ---------------------------------------------------------------------------------------------------------
select pg_temp.snap('a-processing', 'pgtap-begin-a');
select is(pg_temp.claim('a2', 'pgtap-begin-a', repeat('1', 64)), 'in_progress',
  'rule in-flight: the same request while the first runs is in_progress');
select is((pg_temp.call('a2')).record_id, (pg_temp.call('a1')).record_id,
  'in_progress names the same record');
select is((pg_temp.call('a2')).lease_token, null, 'in_progress hands out no lease token');
select is((pg_temp.call('a2')).retry_after_seconds, 30, 'retry_after_seconds is what is left of the lease');
select is(pg_temp.claim('a3', 'pgtap-begin-a', repeat('1', 64), null, 86400, 5), 'in_progress',
  'a caller with a shorter lock timeout is in_progress too');
select is((pg_temp.call('a3')).retry_after_seconds, 30,
  'retry_after_seconds follows the holder''s lease, not the caller''s lock timeout');
select ok(pg_temp.unchanged_since('a-processing', 'pgtap-begin-a'), 'in_progress changes nothing in the row');

-- mismatch while processing
select is(pg_temp.claim('a4', 'pgtap-begin-a', repeat('2', 64)), 'mismatch',
  'rule mismatch: the same key with another fingerprint is a mismatch');
select ok((pg_temp.call('a4')).record_id = (pg_temp.call('a1')).record_id
  and (pg_temp.call('a4')).lease_token is null, 'mismatch names the record and hands out no lease');
select ok(pg_temp.unchanged_since('a-processing', 'pgtap-begin-a'), 'a mismatch changes nothing in the row');

-- ---------------------------------------------------------------------------------------------------------
-- the lease-token guard: a stale or made-up token changes nothing
-- ---------------------------------------------------------------------------------------------------------
select is(public.idempotency_complete((pg_temp.call('a1')).record_id, gen_random_uuid(), 200, 'x'), false,
  'complete with a wrong token returns false');
select is(public.idempotency_fail((pg_temp.call('a1')).record_id, gen_random_uuid(), 'nope'), false,
  'fail with a wrong token returns false');
select is(public.idempotency_extend_lease((pg_temp.call('a1')).record_id, gen_random_uuid(), 600), false,
  'extend_lease with a wrong token returns false');
select is(public.idempotency_complete((pg_temp.call('a1')).record_id, null, 200, 'x'), false,
  'complete with a null token returns false');
select is(public.idempotency_complete(gen_random_uuid(), (pg_temp.call('a1')).lease_token, 200, 'x'), false,
  'complete with the token of another record returns false');
select ok(pg_temp.unchanged_since('a-processing', 'pgtap-begin-a'),
  'wrong tokens changed nothing in the row');

select is(pg_temp.extend('a1', 120), true, 'extend_lease with the current token returns true');
select ok((pg_temp.row_of('pgtap-begin-a')).locked_until > now() + interval '119 seconds',
  'extend_lease moved the lease to 120 s from now');
select is(pg_temp.claim('a5', 'pgtap-begin-a', repeat('1', 64)), 'in_progress',
  'still in_progress after the extension');
select ok((pg_temp.call('a5')).retry_after_seconds between 119 and 120,
  'retry_after_seconds follows the extension');

select is(pg_temp.complete('a1', 201, convert_to('{"id":1}', 'UTF8'), '{"content-type": "application/json"}'),
  true, 'complete with the current token returns true');
select results_eq(
  $$
    select status, status_code, response, response_encoding, response_headers,
      lease_token is null, locked_until is null, completed_at is not null, error_message is null
    from public.idempotency_keys where idempotency_key = 'pgtap-begin-a'
  $$,
  $$
    values ('completed'::text, 201, convert_to('{"id":1}', 'UTF8'), 'identity'::text,
      '{"content-type": "application/json"}'::jsonb, true, true, true, true)
  $$,
  'the completed row holds the response and no lease'
);
select pg_temp.snap('a-completed', 'pgtap-begin-a');
select is(pg_temp.complete('a1', 500, 'again'), false,
  'a second complete with the spent token returns false');
select is(pg_temp.fail('a1', 'late'), false, 'fail after complete returns false');
select is(pg_temp.extend('a1'), false, 'extend_lease after complete returns false');
select ok(pg_temp.unchanged_since('a-completed', 'pgtap-begin-a'),
  'the spent token changed nothing in the completed row');

-- ---------------------------------------------------------------------------------------------------------
-- replay
-- ---------------------------------------------------------------------------------------------------------
select is(pg_temp.claim('a6', 'pgtap-begin-a', repeat('1', 64)), 'replay',
  'rule replay: the same request after completion is a replay');
select results_eq(
  $$
    select record_id, lease_token, status_code, response, response_encoding, response_headers,
      attempt_count, replay_count
    from calls where label = 'a6'
  $$,
  $$
    select record_id, null::uuid, 201, convert_to('{"id":1}', 'UTF8'), 'identity'::text,
      '{"content-type": "application/json"}'::jsonb, 1, 1
    from calls where label = 'a1'
  $$,
  'replay returns the stored response, with replay_count 1'
);
select is(pg_temp.claim('a7', 'pgtap-begin-a', repeat('1', 64)), 'replay', 'and again');
select is((pg_temp.call('a7')).replay_count, 2, 'replay_count goes up with each replay');
select ok((pg_temp.row_of('pgtap-begin-a')).replay_count = 2
  and (pg_temp.row_of('pgtap-begin-a')).last_replayed_at is not null,
  'the row counts replays and stamps the last');
select is(pg_temp.claim('a8', 'pgtap-begin-a', repeat('2', 64)), 'mismatch',
  'rule mismatch: another fingerprint on a completed key is a mismatch');
select is((pg_temp.row_of('pgtap-begin-a')).replay_count, 2, 'a mismatch is not counted as a replay');

-- ---------------------------------------------------------------------------------------------------------
-- takeover of a failed key
-- ---------------------------------------------------------------------------------------------------------
select is(pg_temp.claim('b1', 'pgtap-begin-b', repeat('1', 64)), 'started', 'key b is started');
select is(pg_temp.fail('b1', 'boom', 503), true, 'fail with the current token returns true');
select results_eq(
  $$
    select status, status_code, error_message, lease_token is null, locked_until is null,
      completed_at is not null
    from public.idempotency_keys where idempotency_key = 'pgtap-begin-b'
  $$,
  $$values ('failed'::text, 503, 'boom'::text, true, true, true)$$,
  'the failed row keeps the error and releases the lease'
);
select is(pg_temp.claim('b2', 'pgtap-begin-b', repeat('2', 64)), 'mismatch',
  'a failed key is taken over by the same request only');
select is(pg_temp.claim('b3', 'pgtap-begin-b', repeat('1', 64)), 'started',
  'rule retry-after-failure: the same request takes a failed key over');
select results_eq(
  $$
    select b3.record_id, b3.attempt_count, b3.lease_token <> b1.lease_token
    from calls b3, calls b1 where b3.label = 'b3' and b1.label = 'b1'
  $$,
  $$select record_id, 2, true from calls where label = 'b1'$$,
  'the takeover keeps the record, counts a second attempt and hands out a new token'
);
select results_eq(
  $$
    select status, status_code, error_message, completed_at, lease_token
    from public.idempotency_keys where idempotency_key = 'pgtap-begin-b'
  $$,
  $$
    select 'processing'::text, null::integer, null::text, null::timestamptz, lease_token
    from calls where label = 'b3'
  $$,
  'the taken-over row is processing again, with the failure cleared'
);
select is(pg_temp.complete('b1', 200, 'x'), false, 'the first attempt''s token cannot complete the second');
select is(pg_temp.fail('b3', repeat('e', 5000)), true, 'the second attempt fails too');
select is(char_length((pg_temp.row_of('pgtap-begin-b')).error_message), 2000,
  'error messages are cut to 2000 characters');

-- ---------------------------------------------------------------------------------------------------------
-- takeover of a processing key whose lease ran out (the worker died)
-- ---------------------------------------------------------------------------------------------------------
select is(pg_temp.claim('c1', 'pgtap-begin-c', repeat('1', 64)), 'started', 'key c is started');
update public.idempotency_keys set locked_until = now() - interval '1 second'
where idempotency_key = 'pgtap-begin-c' and user_id is null;
select is(pg_temp.claim('c2', 'pgtap-begin-c', repeat('2', 64)), 'mismatch',
  'rule mismatch: another request does not take over an abandoned key');
select is(pg_temp.claim('c3', 'pgtap-begin-c', repeat('1', 64)), 'started',
  'rule takeover: the same request takes over a key whose lease ran out');
select results_eq(
  $$
    select c3.record_id, c3.attempt_count, c3.lease_token <> c1.lease_token
    from calls c3, calls c1 where c3.label = 'c3' and c1.label = 'c1'
  $$,
  $$select record_id, 2, true from calls where label = 'c1'$$,
  'the takeover keeps the record, counts a second attempt and hands out a new token'
);
select ok((pg_temp.row_of('pgtap-begin-c')).locked_until > now() + interval '29 seconds',
  'the new holder has a fresh lease');
select pg_temp.snap('c-taken-over', 'pgtap-begin-c');
select is(pg_temp.complete('c1', 200, 'stale'), false, 'the old worker cannot complete after the takeover');
select is(pg_temp.fail('c1', 'stale'), false, 'the old worker cannot fail after the takeover');
select is(pg_temp.extend('c1'), false, 'the old worker cannot extend the new lease');
select ok(pg_temp.unchanged_since('c-taken-over', 'pgtap-begin-c'),
  'the old worker''s calls left the new holder''s row unchanged');
select is(pg_temp.complete('c3', 200, 'fresh'), true, 'the new holder completes');
select is((pg_temp.row_of('pgtap-begin-c')).response, 'fresh'::bytea, 'with its own response');

-- ---------------------------------------------------------------------------------------------------------
-- takeover of an expired key: it starts afresh, whatever the fingerprint
-- ---------------------------------------------------------------------------------------------------------
select is(pg_temp.claim('d1', 'pgtap-begin-d', repeat('1', 64)), 'started', 'key d is started');
select is(pg_temp.complete('d1', 200, 'old'), true, 'and completed');
select is(pg_temp.claim('d2', 'pgtap-begin-d', repeat('1', 64)), 'replay', 'and replayed once');
update public.idempotency_keys
set created_at = now() - interval '2 days', started_at = now() - interval '2 days',
  completed_at = now() - interval '2 days', expires_at = now() - interval '1 hour'
where idempotency_key = 'pgtap-begin-d' and user_id is null;
select is(pg_temp.claim('d3', 'pgtap-begin-d', repeat('2', 64)), 'started',
  'rule expired-restart: an expired key is started again, even for another request');
select results_eq(
  $$select record_id, attempt_count, replay_count, expires_at > now() from calls where label = 'd3'$$,
  $$select record_id, 1, 0, true from calls where label = 'd1'$$,
  'the expired key starts afresh: attempt_count 1, replay_count 0, a new expiry'
);
select results_eq(
  $$
    select status, request_fingerprint, response, last_replayed_at, created_at >= now(),
      expires_at - created_at
    from public.idempotency_keys where idempotency_key = 'pgtap-begin-d'
  $$,
  $$values ('processing'::text, repeat('2', 32), null::bytea, null::timestamptz, true, interval '1 day')$$,
  'the expired row is reset: new fingerprint, no response, no replays, created now'
);

-- ---------------------------------------------------------------------------------------------------------
-- TTL expiry in real time: a key with a TTL of 1 s replays within the second and starts afresh after it
-- ---------------------------------------------------------------------------------------------------------
select is(pg_temp.claim('e1', 'pgtap-begin-e', repeat('1', 64), null, 1, 30), 'started',
  'key e is started with a TTL of 1 s');
select is(pg_temp.complete('e1', 200, 'e'), true, 'and completed');
select is(pg_temp.claim('e2', 'pgtap-begin-e', repeat('1', 64), null, 1, 30), 'replay',
  'within the TTL it replays');
select pg_sleep(1.1);
select is(pg_temp.claim('e3', 'pgtap-begin-e', repeat('1', 64), null, 1, 30), 'started',
  'after the TTL it starts afresh');
select is((pg_temp.call('e3')).attempt_count, 1, 'as a first attempt');

-- ---------------------------------------------------------------------------------------------------------
-- scopes: one key per user; calls without a user share one scope
-- ---------------------------------------------------------------------------------------------------------
insert into auth.users (id, email) values
  ('00000000-0000-4000-8000-0000000002a1', 'pgtap-begin-a@example.com'),
  ('00000000-0000-4000-8000-0000000002b1', 'pgtap-begin-b@example.com');
select is(pg_temp.claim('f1', 'pgtap-begin-f', repeat('1', 64), '00000000-0000-4000-8000-0000000002a1'),
  'started', 'user A starts key f');
select is(pg_temp.claim('f2', 'pgtap-begin-f', repeat('2', 64), '00000000-0000-4000-8000-0000000002b1'),
  'started', 'user B starts the same key f, another request: their own scope');
select is(pg_temp.claim('f3', 'pgtap-begin-f', repeat('1', 64)), 'started',
  'a call without a user has its own scope');
select is(pg_temp.claim('f4', 'pgtap-begin-f', repeat('1', 64)), 'in_progress',
  'and a second call without a user shares it');

-- ---------------------------------------------------------------------------------------------------------
-- bad input
-- ---------------------------------------------------------------------------------------------------------
select throws_ok($$select pg_temp.claim('g1', 'pgtap-begin-g', repeat('1', 64), null, 0, 30)$$, '22023',
  'ttl must be at least 1 second, got 0', 'rule invalid-durations: a TTL of 0 is rejected');
select throws_ok($$select pg_temp.claim('g2', 'pgtap-begin-g', repeat('1', 64), null, null, 30)$$, '22023',
  'ttl must be at least 1 second, got <NULL>', 'a null TTL is rejected');
select throws_ok($$select pg_temp.claim('g3', 'pgtap-begin-g', repeat('1', 64), null, 60, 0)$$, '22023',
  'lock timeout must be at least 1 second, got 0', 'a lock timeout of 0 is rejected');
select throws_ok($$select pg_temp.claim('g4', 'ab', repeat('1', 64))$$, '23514', null,
  'a key that is too short is rejected by the table');
select throws_ok($$select pg_temp.claim('g5', 'pgtap-begin-g', 'not-a-sha256')$$, '23514', null,
  'a fingerprint that is not SHA-256 hex is rejected by the table');

-- ---------------------------------------------------------------------------------------------------------
-- expiry never pre-empts a worker that still holds a live lease
-- ---------------------------------------------------------------------------------------------------------
select is(pg_temp.claim('h1', 'pgtap-begin-h', repeat('1', 64)), 'started', 'key h is started');
update public.idempotency_keys set created_at = now() - interval '2 hours', expires_at = now() - interval '1 second'
where idempotency_key = 'pgtap-begin-h';
select is(pg_temp.claim('h2', 'pgtap-begin-h', repeat('1', 64)), 'in_progress',
  'rule lease-outlives-ttl: an expired key whose lease is live stays in progress: its worker is still running');
update public.idempotency_keys set locked_until = now() - interval '1 second'
where idempotency_key = 'pgtap-begin-h';
select is(pg_temp.claim('h3', 'pgtap-begin-h', repeat('1', 64)), 'started',
  'once the lease has run out too, the expired key starts afresh');

-- ---------------------------------------------------------------------------------------------------------
-- work that outlasted its TTL: the stored response is kept a full TTL from completion
-- ---------------------------------------------------------------------------------------------------------
select is(pg_temp.claim('i1', 'pgtap-begin-i', repeat('1', 64)), 'started', 'key i is started');
update public.idempotency_keys set created_at = now() - interval '3 hours', started_at = now() - interval '3 hours',
  expires_at = now() - interval '1 hour'
where idempotency_key = 'pgtap-begin-i';
select ok(pg_temp.complete('i1', 201, 'late'::bytea), 'the worker completes past the TTL of 2 hours');
select ok((select expires_at between now() + interval '119 minutes' and now() + interval '121 minutes'
  from public.idempotency_keys where idempotency_key = 'pgtap-begin-i'),
  'and its response is kept 2 hours from completion, not expired at once');
select is(pg_temp.claim('i2', 'pgtap-begin-i', repeat('1', 64)), 'replay',
  'so the retry that follows replays it instead of running the work again');

select * from finish();
rollback;
