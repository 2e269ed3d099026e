-- idempotency_cleanup_batch, the unit the every-minute cron block commits one at a time: it takes the due keys
-- in purge_after order from where the previous batch stopped, deletes the expired ones, and moves purge_after
-- of the ones that cannot go yet (a live lease, a response stored after the first expiry) to when they can.
begin;
set local search_path = public, extensions;
select plan(10);

delete from public.idempotency_keys;

-- 10 completed keys whose first expiry (purge_after) passed 10..1 minutes ago: 8 expired, 2 whose response
-- was stored late and keeps them 1 hour more; 1 processing key under a live lease, expired; 1 not yet due
insert into public.idempotency_keys (
  idempotency_key, function_name, request_fingerprint, status, status_code, completed_at, created_at,
  started_at, expires_at, purge_after
)
select format('pgtap-batch-%s', lpad(i::text, 2, '0')), 'pgtap-batch', repeat('b', 64), 'completed', 200, now(),
  now() - interval '1 day', now() - interval '1 day',
  case when i in (3, 7) then now() + interval '1 hour' else now() - make_interval(mins => 11 - i) end,
  now() - make_interval(mins => 11 - i)
from generate_series(1, 10) i;
insert into public.idempotency_keys (
  idempotency_key, function_name, request_fingerprint, status, lease_token, locked_until, created_at,
  started_at, expires_at
) values
  ('pgtap-batch-live', 'pgtap-batch', repeat('b', 64), 'processing', gen_random_uuid(),
    now() + interval '20 seconds', now() - interval '1 day', now(), now() - interval '30 seconds'),
  ('pgtap-batch-later', 'pgtap-batch', repeat('b', 64), 'processing', gen_random_uuid(),
    now() + interval '20 seconds', now(), now(), now() + interval '1 day');

select is((select purge_after from public.idempotency_keys where idempotency_key = 'pgtap-batch-live'),
  now() - interval '30 seconds', 'a key inserted without purge_after gets its expires_at');

create temp table b1 as select * from public.idempotency_cleanup_batch(4);
select results_eq($$select examined, deleted from b1$$, $$values (4, 3)$$,
  'a batch of 4 looks at the 4 oldest due keys and deletes the 3 expired ones');
select is((select last_purge_after from b1), now() - interval '7 minutes',
  'and says where it stopped: the 4th key''s purge_after');
select is((select purge_after from public.idempotency_keys where idempotency_key = 'pgtap-batch-03'),
  now() + interval '1 hour', 'the key kept by its late response has purge_after moved to its expiry');

create temp table b2 as select * from public.idempotency_cleanup_batch(4, (select last_purge_after from b1));
select results_eq($$select examined, deleted from b2$$, $$values (4, 3)$$,
  'the next batch starts where the first stopped: 4 more looked at, 3 deleted');

create temp table b3 as select * from public.idempotency_cleanup_batch(4, (select last_purge_after from b2));
select results_eq($$select examined, deleted from b3$$, $$values (3, 2)$$,
  'the last batch is short (3 of 4): the caller knows it is done');
select is((select purge_after from public.idempotency_keys where idempotency_key = 'pgtap-batch-live'),
  now() + interval '20 seconds', 'an expired key under a live lease waits until its lease ends');
select results_eq(
  $$select idempotency_key from public.idempotency_keys order by 1$$,
  $$values ('pgtap-batch-03'), ('pgtap-batch-07'), ('pgtap-batch-later'), ('pgtap-batch-live')$$,
  'left: the two late responses, the live lease and the key not yet due'
);
select results_eq($$select examined, deleted from public.idempotency_cleanup_batch(4)$$, $$values (0, 0)$$,
  'a batch from the start finds nothing due: no key is read twice before its time');
select throws_ok($$select * from public.idempotency_cleanup_batch(0)$$, '22023',
  'batch_size must be at least 1, got 0', 'batch_size 0 raises');

select * from finish();
rollback;
