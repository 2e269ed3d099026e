-- The request fingerprint stored as 128 bits (20261130000600): idempotency_begin keeps the first 32 hex digits
-- of a 64-digit SHA-256, and compares every fingerprint on its first 32 digits, so rows written before, with
-- all 64, keep matching their retries (and mismatching other requests) whichever form the caller sends.
begin;
set local search_path = public, extensions;
select plan(12);

create function pg_temp.claim(p_key text, p_fingerprint text) returns text
language sql
as $$ select outcome from public.idempotency_begin(p_key, null, 'pgtap-fp', p_fingerprint) $$;

-- two fingerprints that share their first 128 bits, and one that differs only past them
create temp table fp (name text primary key, value text);
insert into fp values
  ('a', repeat('a1', 16) || repeat('b2', 16)),
  ('a_other_tail', repeat('a1', 16) || repeat('c3', 16)),
  ('d', repeat('d4', 32));

-- new rows -------------------------------------------------------------------------------------------------

select is(pg_temp.claim('pgtap-fp-new', (select value from fp where name = 'a')), 'started', 'a new key starts');
select is((select request_fingerprint from public.idempotency_keys where idempotency_key = 'pgtap-fp-new'),
  repeat('a1', 16), 'its row keeps the first 32 hex digits (128 bits) of the 64 sent');
select ok(public.idempotency_complete(b.record_id, b.lease_token, 200, convert_to('new', 'UTF8'), 'identity', '{}'),
  'and is completed')
from (select k.id as record_id, k.lease_token from public.idempotency_keys k
  where k.idempotency_key = 'pgtap-fp-new') b;
select is(pg_temp.claim('pgtap-fp-new', (select value from fp where name = 'a')), 'replay',
  'the same request replays');
select is(pg_temp.claim('pgtap-fp-new', repeat('a1', 16)), 'replay',
  'a caller sending only the 32 digits gets the same answer');
select is(pg_temp.claim('pgtap-fp-new', (select value from fp where name = 'd')), 'mismatch',
  'another request is a mismatch');

-- a row stored before the migration, with all 64 digits ----------------------------------------------------

insert into public.idempotency_keys (idempotency_key, function_name, request_fingerprint, status, status_code,
  response, completed_at, expires_at)
values ('pgtap-fp-old', 'pgtap-fp', (select value from fp where name = 'a'), 'completed', 200,
  convert_to('old', 'UTF8'), now(), now() + interval '1 day');

select is(pg_temp.claim('pgtap-fp-old', (select value from fp where name = 'a')), 'replay',
  'a 64-digit row replays the same 64-digit request');
select is(pg_temp.claim('pgtap-fp-old', repeat('a1', 16)), 'replay',
  'and the same request sent as 32 digits (compared on the common prefix)');
select is(pg_temp.claim('pgtap-fp-old', (select value from fp where name = 'd')), 'mismatch',
  'another request is still a mismatch');
select is(pg_temp.claim('pgtap-fp-old', (select value from fp where name = 'a_other_tail')), 'replay',
  'a request differing only past the first 128 bits counts as the same (what 128 bits means)');
select results_eq(
  $$select replay_count, length(request_fingerprint) from public.idempotency_keys
    where idempotency_key = 'pgtap-fp-old'$$,
  $$values (3, 64)$$,
  'three replays counted on the old row, which keeps its 64 digits'
);

-- what is not a fingerprint is refused as before
select throws_ok($$select pg_temp.claim('pgtap-fp-bad', repeat('A1', 32))$$, '23514', null,
  'an upper-case fingerprint is refused by the table''s check');

select * from finish();
rollback;
