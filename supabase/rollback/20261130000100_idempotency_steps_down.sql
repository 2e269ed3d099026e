-- Undoes 20261130000100_idempotency_steps.sql and forgets the migration. Safe to run twice.
--   psql "$DB_URL" -v ON_ERROR_STOP=1 -f supabase/rollback/20261130000100_idempotency_steps_down.sql

begin;

drop function if exists public.idempotency_record_step(uuid, uuid, text, jsonb);
drop function if exists public.idempotency_begin_async(text, uuid, text, text, integer, integer);
drop table if exists public.idempotency_steps;
do $$
begin
  if to_regclass('public.training_jobs') is not null then
    alter table public.training_jobs drop column if exists trainer_job_id;
  end if;
  if to_regclass('supabase_migrations.schema_migrations') is not null then
    delete from supabase_migrations.schema_migrations where version = '20261130000100';
  end if;
end;
$$;

commit;
