-- Schema of supabase/migrations/20261123000100_idempotency_keys.sql: the table, its columns, every check
-- constraint (each one fed a row that breaks it and nothing else), the indexes, RLS, the functions' shape,
-- and the cleanup cron job. Grants per role are in 04_idempotency_rls_test.sql.
begin;
-- pgTAP lives in schema extensions, as on a Supabase project.
set local search_path = public, extensions;
select plan(95);

-- ---------------------------------------------------------------------------------------------------------
-- table and columns
-- ---------------------------------------------------------------------------------------------------------
select has_table('public', 'idempotency_keys', 'table public.idempotency_keys exists');
select columns_are('public', 'idempotency_keys', array[
  'id', 'idempotency_key', 'user_id', 'function_name', 'request_fingerprint', 'status', 'response',
  'response_encoding', 'status_code', 'response_headers', 'error_message', 'locked_until', 'lease_token',
  'attempt_count', 'replay_count', 'last_replayed_at', 'created_at', 'started_at', 'completed_at',
  'expires_at', 'metadata', 'purge_after'
], 'idempotency_keys has exactly the expected columns');

-- name, type, not null: one row per column, compared as a whole so that a changed type or nullability fails
select results_eq(
  $$
    select a.attname::text collate "default", format_type(a.atttypid, a.atttypmod), a.attnotnull
    from pg_attribute a
    where a.attrelid = 'public.idempotency_keys'::regclass and a.attnum > 0 and not a.attisdropped
    order by a.attnum
  $$,
  $$
    values
      ('id', 'uuid', true),
      ('idempotency_key', 'text', true),
      ('user_id', 'uuid', false),
      ('function_name', 'text', true),
      ('request_fingerprint', 'text', true),
      ('status', 'text', true),
      ('response', 'bytea', false),
      ('response_encoding', 'text', true),
      ('status_code', 'integer', false),
      ('response_headers', 'jsonb', false),
      ('error_message', 'text', false),
      ('locked_until', 'timestamp with time zone', false),
      ('lease_token', 'uuid', false),
      ('attempt_count', 'integer', true),
      ('replay_count', 'integer', true),
      ('last_replayed_at', 'timestamp with time zone', false),
      ('created_at', 'timestamp with time zone', true),
      ('started_at', 'timestamp with time zone', true),
      ('completed_at', 'timestamp with time zone', false),
      ('expires_at', 'timestamp with time zone', true),
      ('metadata', 'jsonb', true),
      ('purge_after', 'timestamp with time zone', true)
  $$,
  'every column has its type and nullability'
);

select col_is_pk('public', 'idempotency_keys', 'id', 'id is the primary key');
select col_default_is('public', 'idempotency_keys', 'status', 'processing', 'status defaults to processing');
select col_default_is('public', 'idempotency_keys', 'response_encoding', 'identity',
  'response_encoding defaults to identity');
select col_default_is('public', 'idempotency_keys', 'attempt_count', 1, 'attempt_count defaults to 1');
select col_default_is('public', 'idempotency_keys', 'replay_count', 0, 'replay_count defaults to 0');
select col_default_is('public', 'idempotency_keys', 'metadata', '{}'::jsonb, 'metadata defaults to {}');
select fk_ok('public', 'idempotency_keys', 'user_id', 'auth', 'users', 'id',
  'user_id references auth.users (id)');
select is(
  (select confdeltype from pg_constraint
   where conrelid = 'public.idempotency_keys'::regclass and contype = 'f'),
  'c'::"char",
  'deleting a user deletes their keys (on delete cascade)'
);
select is(
  (select array_agg(conname::text order by conname) from pg_constraint
   where conrelid = 'public.idempotency_keys'::regclass and contype = 'c'),
  array[
    'idempotency_keys_counts_non_negative', 'idempotency_keys_encoding_valid',
    'idempotency_keys_expiry_after_creation', 'idempotency_keys_fingerprint_format',
    'idempotency_keys_function_name_format', 'idempotency_keys_key_format',
    'idempotency_keys_status_code_range', 'idempotency_keys_status_columns', 'idempotency_keys_status_valid'
  ],
  'idempotency_keys has exactly the nine check constraints tested below'
);

-- ---------------------------------------------------------------------------------------------------------
-- check constraints: a valid row, with one field overridden so that exactly one constraint breaks
-- ---------------------------------------------------------------------------------------------------------
create function pg_temp.put(p_overrides jsonb) returns void
language sql
as $$
  insert into public.idempotency_keys
  select * from jsonb_populate_record(null::public.idempotency_keys, jsonb_build_object(
    'id', gen_random_uuid(),
    'idempotency_key', 'pgtap-' || substr(md5(random()::text), 1, 12),
    'function_name', 'pgtap-schema',
    'request_fingerprint', repeat('ab', 32),
    'status', 'processing',
    'response_encoding', 'identity',
    'locked_until', now() + interval '30 seconds',
    'lease_token', gen_random_uuid(),
    'attempt_count', 1,
    'replay_count', 0,
    'created_at', now(),
    'started_at', now(),
    'expires_at', now() + interval '1 day',
    'metadata', '{}'::jsonb
  ) || p_overrides)
$$;

-- a completed row, valid as it stands
create function pg_temp.done(p_overrides jsonb) returns jsonb
language sql
as $$
  select jsonb_build_object('status', 'completed', 'lease_token', null, 'locked_until', null,
    'completed_at', now(), 'status_code', 200) || p_overrides
$$;

create function pg_temp.violation(p_constraint text) returns text
language sql
as $$
  select format('new row for relation "idempotency_keys" violates check constraint "%s"', p_constraint)
$$;

select lives_ok($$select pg_temp.put('{}')$$, 'the template processing row is valid');
select lives_ok($$select pg_temp.put(pg_temp.done('{}'))$$, 'the template completed row is valid');

-- idempotency_keys_key_format: 3 to 256 of [A-Za-z0-9_-]
select throws_ok($$select pg_temp.put('{"idempotency_key": "ab"}')$$, '23514',
  pg_temp.violation('idempotency_keys_key_format'), 'a key of 2 characters is rejected');
select lives_ok($$select pg_temp.put('{"idempotency_key": "abc"}')$$, 'a key of 3 characters is accepted');
select throws_ok(format('select pg_temp.put(%L)', jsonb_build_object('idempotency_key', repeat('k', 257))),
  '23514', pg_temp.violation('idempotency_keys_key_format'), 'a key of 257 characters is rejected');
select lives_ok(format('select pg_temp.put(%L)', jsonb_build_object('idempotency_key', repeat('k', 256))),
  'a key of 256 characters is accepted');
select throws_ok($$select pg_temp.put('{"idempotency_key": "has space"}')$$, '23514',
  pg_temp.violation('idempotency_keys_key_format'), 'a key with a space is rejected');
select throws_ok($$select pg_temp.put('{"idempotency_key": "semi;colon"}')$$, '23514',
  pg_temp.violation('idempotency_keys_key_format'), 'a key with a semicolon is rejected');
select throws_ok($$select pg_temp.put('{"idempotency_key": "caf\u00e9-key"}')$$, '23514',
  pg_temp.violation('idempotency_keys_key_format'), 'a key with a non-ASCII letter is rejected');
select throws_ok($$select pg_temp.put('{"idempotency_key": "new\nline"}')$$, '23514',
  pg_temp.violation('idempotency_keys_key_format'), 'a key with a newline is rejected');
select lives_ok($$select pg_temp.put('{"idempotency_key": "Az09_-key"}')$$,
  'a key of letters, digits, _ and - is accepted');

-- idempotency_keys_function_name_format
select throws_ok($$select pg_temp.put('{"function_name": ""}')$$, '23514',
  pg_temp.violation('idempotency_keys_function_name_format'), 'an empty function name is rejected');
select throws_ok($$select pg_temp.put('{"function_name": "process document"}')$$, '23514',
  pg_temp.violation('idempotency_keys_function_name_format'), 'a function name with a space is rejected');
select throws_ok(format('select pg_temp.put(%L)', jsonb_build_object('function_name', repeat('f', 129))),
  '23514', pg_temp.violation('idempotency_keys_function_name_format'),
  'a function name of 129 characters is rejected');

-- idempotency_keys_fingerprint_format: 32 lower-case hex digits (128 bits, written since 20261130000600) or
-- 64 (rows from before)
select throws_ok(format('select pg_temp.put(%L)', jsonb_build_object('request_fingerprint', fp)), '23514',
  pg_temp.violation('idempotency_keys_fingerprint_format'), format('a fingerprint of %s is rejected', what))
from (values
  (repeat('a', 31), '31 hex digits'),
  (repeat('a', 33), '33 hex digits'),
  (repeat('a', 63), '63 hex digits'),
  (repeat('a', 65), '65 hex digits'),
  (repeat('AB', 32), 'upper-case hex digits'),
  (repeat('g', 64), '64 non-hex letters')
) as bad(fp, what);
select lives_ok(format('select pg_temp.put(%L)', jsonb_build_object('request_fingerprint', repeat('c', 32))),
  'a fingerprint of 32 hex digits is accepted');

-- idempotency_keys_status_valid (an unknown status matches no branch of status_columns, so only this fires)
select throws_ok($$select pg_temp.put('{"status": "done"}')$$, '23514',
  pg_temp.violation('idempotency_keys_status_valid'), 'an unknown status is rejected');
select throws_ok($$select pg_temp.put('{"status": "PROCESSING"}')$$, '23514',
  pg_temp.violation('idempotency_keys_status_valid'), 'status is case-sensitive');

-- idempotency_keys_encoding_valid
select throws_ok($$select pg_temp.put('{"response_encoding": "deflate"}')$$, '23514',
  pg_temp.violation('idempotency_keys_encoding_valid'), 'an unknown response encoding is rejected');
select lives_ok($$select pg_temp.put('{"response_encoding": "gzip"}')$$, 'gzip encoding is accepted');
select lives_ok($$select pg_temp.put('{"response_encoding": "br"}')$$, 'br (brotli) encoding is accepted');
select lives_ok($$select pg_temp.put('{"response_encoding": "zdict"}')$$,
  'zdict (zlib with a preset dictionary) encoding is accepted');
select throws_ok($$select pg_temp.put('{"response_encoding": "ZDICT"}')$$, '23514',
  pg_temp.violation('idempotency_keys_encoding_valid'), 'encodings are case-sensitive');

-- idempotency_keys_status_code_range (on completed rows: processing ones may carry no status code at all)
select throws_ok($$select pg_temp.put(pg_temp.done('{"status_code": 99}'))$$, '23514',
  pg_temp.violation('idempotency_keys_status_code_range'), 'status code 99 is rejected');
select throws_ok($$select pg_temp.put(pg_temp.done('{"status_code": 600}'))$$, '23514',
  pg_temp.violation('idempotency_keys_status_code_range'), 'status code 600 is rejected');
select lives_ok($$select pg_temp.put(pg_temp.done('{"status_code": 100}'))$$, 'status code 100 is accepted');
select lives_ok($$select pg_temp.put(pg_temp.done('{"status_code": 599}'))$$, 'status code 599 is accepted');

-- idempotency_keys_counts_non_negative
select throws_ok($$select pg_temp.put('{"attempt_count": 0}')$$, '23514',
  pg_temp.violation('idempotency_keys_counts_non_negative'), 'attempt_count 0 is rejected');
select throws_ok($$select pg_temp.put('{"replay_count": -1}')$$, '23514',
  pg_temp.violation('idempotency_keys_counts_non_negative'), 'a negative replay_count is rejected');

-- idempotency_keys_expiry_after_creation
select throws_ok(
  format('select pg_temp.put(%L)', jsonb_build_object('created_at', now(), 'expires_at', now())), '23514',
  pg_temp.violation('idempotency_keys_expiry_after_creation'),
  'expires_at equal to created_at is rejected');
select throws_ok(
  format('select pg_temp.put(%L)', jsonb_build_object('expires_at', now() - interval '1 second')),
  '23514', pg_temp.violation('idempotency_keys_expiry_after_creation'),
  'expires_at before created_at is rejected');

-- idempotency_keys_status_columns: each status with a column that contradicts it
select throws_ok($$select pg_temp.put('{"lease_token": null}')$$, '23514',
  pg_temp.violation('idempotency_keys_status_columns'), 'processing without a lease token is rejected');
select throws_ok($$select pg_temp.put('{"locked_until": null}')$$, '23514',
  pg_temp.violation('idempotency_keys_status_columns'), 'processing without locked_until is rejected');
select throws_ok(format('select pg_temp.put(%L)', jsonb_build_object('completed_at', now())), '23514',
  pg_temp.violation('idempotency_keys_status_columns'), 'processing with completed_at is rejected');
select throws_ok($$select pg_temp.put('{"status_code": 200}')$$, '23514',
  pg_temp.violation('idempotency_keys_status_columns'), 'processing with a status code is rejected');
select throws_ok($$select pg_temp.put('{"response": "\\x00"}')$$, '23514',
  pg_temp.violation('idempotency_keys_status_columns'), 'processing with a response is rejected');
select throws_ok(
  format('select pg_temp.put(pg_temp.done(%L))', jsonb_build_object('lease_token', gen_random_uuid())),
  '23514',
  pg_temp.violation('idempotency_keys_status_columns'), 'completed with a lease token is rejected');
select throws_ok(
  format('select pg_temp.put(pg_temp.done(%L))',
    jsonb_build_object('locked_until', now() + interval '1 minute')), '23514',
  pg_temp.violation('idempotency_keys_status_columns'), 'completed with locked_until is rejected');
select throws_ok($$select pg_temp.put(pg_temp.done('{"completed_at": null}'))$$, '23514',
  pg_temp.violation('idempotency_keys_status_columns'), 'completed without completed_at is rejected');
select throws_ok($$select pg_temp.put(pg_temp.done('{"status_code": null}'))$$, '23514',
  pg_temp.violation('idempotency_keys_status_columns'), 'completed without a status code is rejected');
select throws_ok($$select pg_temp.put(pg_temp.done('{"status": "failed", "completed_at": null}'))$$, '23514',
  pg_temp.violation('idempotency_keys_status_columns'), 'failed without completed_at is rejected');
select throws_ok(
  format('select pg_temp.put(pg_temp.done(%L))',
    jsonb_build_object('status', 'failed', 'lease_token', gen_random_uuid())),
  '23514', pg_temp.violation('idempotency_keys_status_columns'), 'failed with a lease token is rejected');
select throws_ok(
  format('select pg_temp.put(pg_temp.done(%L))',
    jsonb_build_object('status', 'failed', 'locked_until', now() + interval '1 minute')),
  '23514', pg_temp.violation('idempotency_keys_status_columns'), 'failed with locked_until is rejected');
select lives_ok($$select pg_temp.put(pg_temp.done('{"status": "failed", "status_code": null}'))$$,
  'failed without a status code is accepted');

-- not null columns
select throws_ok($$select pg_temp.put('{"idempotency_key": null}')$$, '23502', null,
  'a null idempotency_key is rejected');
select throws_ok($$select pg_temp.put('{"request_fingerprint": null}')$$, '23502', null,
  'a null request_fingerprint is rejected');
select throws_ok($$select pg_temp.put('{"expires_at": null}')$$, '23502', null,
  'a null expires_at is rejected');

-- idempotency_keys_key_digest_unique: one digest per (user, key), keys without a user sharing one scope
select lives_ok($$select pg_temp.put('{"idempotency_key": "pgtap-unique-key"}')$$, 'a first user-less key');
select throws_ok($$select pg_temp.put('{"idempotency_key": "pgtap-unique-key"}')$$, '23505', null,
  'the same key without a user again is rejected (nulls not distinct)');
insert into auth.users (id, email)
values ('00000000-0000-4000-8000-0000000000a1', 'pgtap-schema@example.com');
select lives_ok(
  $$select pg_temp.put('{"idempotency_key": "pgtap-unique-key",
    "user_id": "00000000-0000-4000-8000-0000000000a1"}')$$,
  'the same key for a user is another scope');
select throws_ok(
  $$select pg_temp.put('{"idempotency_key": "pgtap-unique-key",
    "user_id": "00000000-0000-4000-8000-0000000000a1"}')$$,
  '23505', null, 'the same key for the same user again is rejected');
select throws_ok(
  $$select pg_temp.put('{"idempotency_key": "pgtap-fk-key",
    "user_id": "00000000-0000-4000-8000-00000000dead"}')$$,
  '23503', null, 'a user_id that is not in auth.users is rejected');
delete from auth.users where id = '00000000-0000-4000-8000-0000000000a1';
select is(
  (select count(*) from public.idempotency_keys where idempotency_key = 'pgtap-unique-key'),
  1::bigint,
  'deleting the user deleted their key and left the user-less one'
);

-- ---------------------------------------------------------------------------------------------------------
-- indexes
-- ---------------------------------------------------------------------------------------------------------
-- Only what a query in the product or the docs uses, and nothing a completion changes (docs/scaling.md):
-- a completion that changes no indexed column is a HOT update.
select has_index('public', 'idempotency_keys', 'idempotency_keys_purge_after_idx', array['purge_after'],
  'index on purge_after for cleanup');
select index_is_unique('public', 'idempotency_keys', 'idempotency_keys_key_digest_unique',
  'the (user, key) digest index is unique');
select has_index('public', 'idempotency_keys', 'idempotency_keys_user_idx', array['user_id'],
  'index on user_id: per-user reads and the cascade when a user is deleted');
select is(
  (select count(*) from pg_index where indrelid = 'public.idempotency_keys'::regclass and indpred is not null),
  0::bigint,
  'no partial index: a predicate on status would stop every completion from being HOT'
);
select is(
  (select count(*) from pg_index where indrelid = 'public.idempotency_keys'::regclass),
  4::bigint,
  'four indexes: primary key, unique (user, key) digest, user_id and purge_after'
);

-- ---------------------------------------------------------------------------------------------------------
-- row level security
-- ---------------------------------------------------------------------------------------------------------
select ok(
  (select relrowsecurity from pg_class where oid = 'public.idempotency_keys'::regclass),
  'row level security is enabled on idempotency_keys'
);
select policies_are('public', 'idempotency_keys', array['Users read their own idempotency keys'],
  'idempotency_keys has exactly one policy');
select policy_cmd_is('public', 'idempotency_keys', 'Users read their own idempotency keys', 'select',
  'the policy is for select only');
select policy_roles_are('public', 'idempotency_keys', 'Users read their own idempotency keys',
  array['authenticated'], 'the policy applies to authenticated only');
select is(
  (select qual from pg_policies where schemaname = 'public' and tablename = 'idempotency_keys'),
  '(user_id = ( SELECT auth.uid() AS uid))',
  'the policy compares user_id with auth.uid(), evaluated once per statement'
);

-- ---------------------------------------------------------------------------------------------------------
-- functions
-- ---------------------------------------------------------------------------------------------------------
select has_function('public', 'idempotency_begin',
  array['text', 'uuid', 'text', 'text', 'integer', 'integer'], 'idempotency_begin exists');
select has_function('public', 'idempotency_complete',
  array['uuid', 'uuid', 'integer', 'bytea', 'text', 'jsonb'], 'idempotency_complete exists');
select has_function('public', 'idempotency_fail', array['uuid', 'uuid', 'text', 'integer'],
  'idempotency_fail exists');
select has_function('public', 'idempotency_extend_lease', array['uuid', 'uuid', 'integer'],
  'idempotency_extend_lease exists');
select has_function('public', 'get_idempotency_status', array['text'], 'get_idempotency_status exists');
select has_function('public', 'cleanup_expired_idempotency_keys', array['integer', 'integer'],
  'cleanup_expired_idempotency_keys exists');

create temp table our_functions (fn regprocedure) on commit drop;
insert into our_functions values
  ('public.idempotency_begin(text, uuid, text, text, integer, integer)'),
  ('public.idempotency_complete(uuid, uuid, integer, bytea, text, jsonb)'),
  ('public.idempotency_fail(uuid, uuid, text, integer)'),
  ('public.idempotency_extend_lease(uuid, uuid, integer)'),
  ('public.get_idempotency_status(text)'),
  ('public.cleanup_expired_idempotency_keys(integer, integer)');

select is_empty(
  $$
    select f.fn::text from our_functions f join pg_proc p on p.oid = f.fn
    where p.proconfig is null or not ('search_path=""' = any (p.proconfig))
  $$,
  'all six functions pin search_path to the empty string'
);
select is_empty(
  $$select f.fn::text from our_functions f join pg_proc p on p.oid = f.fn where p.prosecdef$$,
  'none of the six functions is security definer: they run with the caller''s rights and RLS'
);
-- Any security definer function in public (ours or a later migration's) must pin its search_path, or a
-- caller could put their own objects in front of the ones it means.
select is_empty(
  $$
    select p.oid::regprocedure::text from pg_proc p
    where p.pronamespace = 'public'::regnamespace and p.prosecdef
      and not exists (select 1 from unnest(p.proconfig) c where c like 'search_path=%')
  $$,
  'every security definer function in public sets search_path'
);
select is(
  (select array_agg(p.provolatile::text order by p.oid::regprocedure::text)
   from our_functions f join pg_proc p on p.oid = f.fn),
  array['v', 's', 'v', 'v', 'v', 'v'],
  'get_idempotency_status is stable; the other five are volatile'
);
select is(
  (select array_agg(p.proname::text order by p.proname) from our_functions f join pg_proc p on p.oid = f.fn
   where p.prorettype = 'boolean'::regtype),
  array['idempotency_complete', 'idempotency_extend_lease', 'idempotency_fail'],
  'complete, fail and extend_lease return a boolean'
);
select has_view('public', 'v_idempotency_stats', 'view v_idempotency_stats exists');
select is(
  (select reloptions from pg_class where oid = 'public.v_idempotency_stats'::regclass),
  array['security_invoker=true'],
  'v_idempotency_stats is security invoker, so RLS and grants of the reader apply'
);

-- ---------------------------------------------------------------------------------------------------------
-- cron job
-- ---------------------------------------------------------------------------------------------------------
select is(
  (select count(*) from cron.job where jobname = 'cleanup-expired-idempotency-keys'),
  1::bigint,
  'the cleanup cron job exists exactly once'
);
select results_eq(
  $$select schedule, active, command ~ 'idempotency_cleanup_batch\(.*commit;' from cron.job
    where jobname = 'cleanup-expired-idempotency-keys'$$,
  $$values ('* * * * *'::text, true, true)$$,
  'the cron job runs the batched cleanup every minute, committing after each batch'
);

select * from finish();
rollback;
