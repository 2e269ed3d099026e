-- cleanup_expired_idempotency_keys: deletes expired rows only, oldest first, batch_size at a time and at most
-- max_batches batches, and returns how many went.
begin;
set local search_path = public, extensions;
select plan(19);

-- Counts below are of the whole table: start from an empty one (rolled back at the end).
delete from public.idempotency_keys;

-- n expired rows named <prefix>-01.. whose expiry is older the lower the number, in all three statuses
create function pg_temp.add_expired(p_prefix text, p_count integer) returns void
language sql
as $$
  insert into public.idempotency_keys (
    idempotency_key, function_name, request_fingerprint, status, locked_until, lease_token, status_code,
    completed_at, created_at, started_at, expires_at
  )
  select format('%s-%s', p_prefix, lpad(i::text, 2, '0')), 'pgtap-cleanup', repeat('c', 64), s.status,
    case when s.status = 'processing' then now() - interval '1 day' end,
    case when s.status = 'processing' then gen_random_uuid() end,
    case when s.status = 'completed' then 200 end,
    case when s.status <> 'processing' then now() - interval '2 days' end,
    now() - interval '3 days', now() - interval '3 days',
    now() - interval '1 day' + make_interval(mins => i)
  from generate_series(1, p_count) i
  cross join lateral (select (array['processing', 'completed', 'failed'])[1 + i % 3] as status) s
$$;

select pg_temp.add_expired('pgtap-exp', 25);
-- live rows, one of them a minute from expiry: not expired is not expired
insert into public.idempotency_keys (
  idempotency_key, function_name, request_fingerprint, status, locked_until, lease_token, expires_at
)
select format('pgtap-live-%s', i), 'pgtap-cleanup', repeat('c', 64), 'processing',
  now() + interval '30 seconds', gen_random_uuid(), now() + make_interval(mins => i)
from generate_series(1, 5) i;

select is((select count(*) from public.idempotency_keys), 30::bigint,
  '25 expired and 5 live rows to start with');
select is((select expired_pending_cleanup from public.v_idempotency_stats where function_name = '*'), 25::bigint,
  'the stats view counts the 25 rows cleanup would delete');
select is(public.cleanup_expired_idempotency_keys(10), 25::bigint,
  'batches of 10 delete all 25 expired rows (10 + 10 + 5) and say so');
select results_eq(
  $$select idempotency_key from public.idempotency_keys order by idempotency_key$$,
  $$select format('pgtap-live-%s', i) from generate_series(1, 5) i$$,
  'the 5 live rows are left, and only they'
);
select is(public.cleanup_expired_idempotency_keys(10), 0::bigint, 'a second run finds nothing');

-- max_batches caps the work of one run; the oldest expiry goes first
select pg_temp.add_expired('pgtap-cap', 25);
select is(public.cleanup_expired_idempotency_keys(10, 1), 10::bigint,
  'batch_size 10, max_batches 1 deletes 10');
select results_eq(
  $$select idempotency_key from public.idempotency_keys where idempotency_key like 'pgtap-cap-%' order by 1$$,
  $$select format('pgtap-cap-%s', lpad(i::text, 2, '0')) from generate_series(11, 25) i$$,
  'the 10 that went are those that expired first'
);
select is(public.cleanup_expired_idempotency_keys(4, 2), 8::bigint, 'batch_size 4, max_batches 2 deletes 8');
select is(public.cleanup_expired_idempotency_keys(5, 0), 5::bigint, 'max_batches 0 still runs one batch');
select is(public.cleanup_expired_idempotency_keys(5, null), 2::bigint, 'max_batches null runs one batch');
select is((select count(*) from public.idempotency_keys), 5::bigint, 'the live rows are still all there');

-- the defaults (10000 rows, 100 batches) as the cron job calls it
select pg_temp.add_expired('pgtap-dflt', 3);
select is(public.cleanup_expired_idempotency_keys(), 3::bigint, 'the defaults delete every expired row');

-- a row expiring exactly now is kept until it is past
update public.idempotency_keys set created_at = now() - interval '1 minute', expires_at = now()
where idempotency_key = 'pgtap-live-1';
select is(public.cleanup_expired_idempotency_keys(), 0::bigint, 'expires_at = now() is not yet deleted');

-- an expired row whose worker still holds a live lease is left alone until the lease ends
update public.idempotency_keys set created_at = now() - interval '2 hours', expires_at = now() - interval '1 hour'
where idempotency_key = 'pgtap-live-2';
select is(public.cleanup_expired_idempotency_keys(), 0::bigint,
  'an expired row under a live lease is not deleted: its worker is still running');
select is((select expired_pending_cleanup from public.v_idempotency_stats where function_name = '*'), 0::bigint,
  'nor does the stats view count it as pending cleanup');

-- bad batch sizes
select throws_ok($$select public.cleanup_expired_idempotency_keys(0)$$, '22023',
  'batch_size must be at least 1, got 0', 'batch_size 0 raises');
select throws_ok($$select public.cleanup_expired_idempotency_keys(-5, 1)$$, '22023',
  'batch_size must be at least 1, got -5', 'a negative batch_size raises');
select throws_ok($$select public.cleanup_expired_idempotency_keys(null, 1)$$, '22023',
  'batch_size must be at least 1, got <NULL>', 'a null batch_size raises');
select is((select count(*) from public.idempotency_keys), 5::bigint, 'failed calls deleted nothing');

select * from finish();
rollback;
