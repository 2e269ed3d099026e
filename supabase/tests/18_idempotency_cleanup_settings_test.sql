-- idempotency_cleanup_settings(), what the every-minute cleanup job reads once per run: its defaults (batches of
-- 5,000, a pause as long as each batch, no cap), each idempotency.cleanup_* setting in their place, and a bad value refused with
-- 22023 and the setting's name rather than a cast error or a silent default.
begin;
set local search_path = public, extensions;
select plan(10);

select results_eq($$select batch_size, pause_ratio, max_keys from public.idempotency_cleanup_settings()$$,
  $$values (5000, 1::double precision, null::bigint)$$,
  'unset: batches of 5,000, each followed by a pause as long as it took, no cap');

set local idempotency.cleanup_batch_size = '500';
set local idempotency.cleanup_pause_ratio = '2.5';
set local idempotency.cleanup_max_keys = '1000000';
select results_eq($$select batch_size, pause_ratio, max_keys from public.idempotency_cleanup_settings()$$,
  $$values (500, 2.5::double precision, 1000000::bigint)$$, 'each setting replaces its default');

set local idempotency.cleanup_pause_ratio = '0';
select is((select pause_ratio from public.idempotency_cleanup_settings()), 0::double precision,
  'a pause ratio of 0 is allowed: batches back to back');

set local idempotency.cleanup_pause_ratio = '.5';
select is((select pause_ratio from public.idempotency_cleanup_settings()), 0.5::double precision,
  'a ratio may start with its decimal point');

-- set to '' (as `reset` leaves a placeholder set earlier in the session): the default
set local idempotency.cleanup_batch_size = '';
select is((select batch_size from public.idempotency_cleanup_settings()), 5000, 'an empty setting is unset');

set local idempotency.cleanup_batch_size = '0';
select throws_ok('select * from public.idempotency_cleanup_settings()', '22023',
  'idempotency.cleanup_batch_size must be a whole number of at least 1, got 0', 'a batch size of 0 is refused');

set local idempotency.cleanup_batch_size = '5k';
select throws_ok('select * from public.idempotency_cleanup_settings()', '22023',
  'idempotency.cleanup_batch_size must be a whole number of at least 1, got 5k',
  'a batch size that is not a number names the setting');

set local idempotency.cleanup_batch_size = '5000';
set local idempotency.cleanup_pause_ratio = '-1';
select throws_ok('select * from public.idempotency_cleanup_settings()', '22023',
  'idempotency.cleanup_pause_ratio must be a number of at least 0, got -1', 'a negative pause ratio is refused');

set local idempotency.cleanup_pause_ratio = '1';
set local idempotency.cleanup_max_keys = '0';
select throws_ok('select * from public.idempotency_cleanup_settings()', '22023',
  'idempotency.cleanup_max_keys must be a whole number of at least 1, got 0', 'a cap of 0 keys is refused');

select ok(
  (select command like '%public.idempotency_cleanup_settings()%' and command like '%pg_sleep(%'
   from cron.job where jobname = 'cleanup-expired-idempotency-keys'),
  'the every-minute job reads these settings and pauses between batches');

select * from finish();
rollback;
