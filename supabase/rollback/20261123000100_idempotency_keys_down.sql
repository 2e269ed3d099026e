-- Rollback of supabase/migrations/20261123000100_idempotency_keys.sql.
--
-- Removes every object that migration created and its row in the migration history, so that
-- `supabase migration up` applies it again. It lives outside supabase/migrations/ because the CLI would
-- otherwise take it for a migration. Roll back later migrations first: the table is dropped without cascade,
-- so anything built on it since makes this script fail instead of silently disappearing with it.
--
-- Safe to run again: every step checks before it drops. One transaction: all of it or none of it.

begin;

-- The cron job first, so that no hourly run can call a function that is about to go. pg_cron exists only in
-- the database named by cron.database_name, and cron.unschedule raises for an unknown name: check both.
do $$
begin
  if to_regclass('cron.job') is not null then
    perform cron.unschedule(j.jobid)
    from cron.job j
    where j.jobname = 'cleanup-expired-idempotency-keys';
  end if;
end
$$;

-- The view reads the table, so it goes before it.
drop view if exists public.v_idempotency_stats;

drop function if exists public.cleanup_expired_idempotency_keys(integer, integer);
drop function if exists public.get_idempotency_status(text);
drop function if exists public.idempotency_extend_lease(uuid, uuid, integer);
drop function if exists public.idempotency_fail(uuid, uuid, text, integer);
drop function if exists public.idempotency_complete(uuid, uuid, integer, bytea, text, jsonb);
drop function if exists public.idempotency_begin(text, uuid, text, text, integer, integer);

-- Dropping the table drops its policy, indexes, constraints and grants with it; the policy is dropped by
-- name first only to say so. drop policy needs the table, hence the check.
do $$
begin
  if to_regclass('public.idempotency_keys') is not null then
    drop policy if exists "Users read their own idempotency keys" on public.idempotency_keys;
  end if;
end
$$;

drop table if exists public.idempotency_keys;

-- Forget that the migration ran, so that `supabase migration up` applies it again.
do $$
begin
  if to_regclass('supabase_migrations.schema_migrations') is not null then
    delete from supabase_migrations.schema_migrations where version = '20261123000100';
  end if;
end
$$;

commit;
