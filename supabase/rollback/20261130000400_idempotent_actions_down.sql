-- Rollback of supabase/migrations/20261130000400_idempotent_actions.sql: drops the action tables and
-- functions (rows, indexes, policies and grants go with them) and forgets the migration, so
-- `supabase migration up` applies it again. Safe to run twice; one transaction.
--   psql "$DB_URL" -v ON_ERROR_STOP=1 -f supabase/rollback/20261130000400_idempotent_actions_down.sql

begin;

drop function if exists public.action_find(text, text, text, text, timestamptz, integer);
drop function if exists public.action_cache_info();
drop function if exists public.action_reset_stats();
drop function if exists public.action_stats();
drop function if exists public.action_cleanup_expired(integer);
drop function if exists public.action_clear_all();
drop function if exists public.action_delete(text);
drop function if exists public.action_get(text, boolean);
drop function if exists public.action_extend(text, uuid, integer);
drop function if exists public.action_fail(text, uuid, text);
drop function if exists public.action_complete(text, uuid, jsonb);
drop function if exists public.action_claim(text, text, text, text, text, integer, integer, boolean);
drop function if exists public.action_count(bigint, bigint, bigint, bigint);

drop table if exists public.notifications;
drop table if exists public.action_counters;
drop table if exists public.action_records;

do $$
begin
  if to_regclass('supabase_migrations.schema_migrations') is not null then
    delete from supabase_migrations.schema_migrations where version = '20261130000400';
  end if;
end
$$;

commit;
