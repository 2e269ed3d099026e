-- Rollback of supabase/migrations/20261130001000_idempotency_dictionary_encoding.sql: the check on
-- `response_encoding` as 20261130000600 left it. Rows already stored as `zdict` stay (the check is NOT
-- VALID) and stay readable only by code that knows `zdict` and has their dictionary: roll the code back
-- no earlier than one TTL (24 h by default) after the last `zdict` row was written. Safe to run twice; one
-- transaction.
--   psql "$DB_URL" -v ON_ERROR_STOP=1 -f supabase/rollback/20261130001000_idempotency_dictionary_encoding_down.sql

begin;

set local lock_timeout = '5s';

alter table public.idempotency_keys drop constraint if exists idempotency_keys_encoding_valid;
alter table public.idempotency_keys add constraint idempotency_keys_encoding_valid
  check (response_encoding in ('identity', 'gzip', 'br')) not valid;
comment on column public.idempotency_keys.response_encoding is
  'How response is stored: identity (as sent), gzip, or br (brotli).';

do $$
begin
  if to_regclass('supabase_migrations.schema_migrations') is not null then
    delete from supabase_migrations.schema_migrations where version = '20261130001000';
  end if;
end;
$$;

commit;
