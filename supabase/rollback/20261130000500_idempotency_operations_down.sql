-- Rollback of 20261130000500_idempotency_operations.sql: the admin functions and the metric counters.
begin;
drop function if exists public.idempotency_admin_purge_function(text);
drop function if exists public.idempotency_admin_purge_user(uuid);
drop function if exists public.idempotency_admin_release_stuck(interval, text, text);
drop function if exists public.idempotency_admin_list(text, text, boolean, integer);
drop function if exists public.idempotency_admin_inspect(text, uuid, text);
drop function if exists public.idempotency_admin_row(public.idempotency_keys);
drop function if exists public.idempotency_metrics_add(text[], text[], text[], double precision[]);
drop table if exists public.idempotency_metric_counters;
do $$
begin
  if to_regclass('supabase_migrations.schema_migrations') is not null then
    delete from supabase_migrations.schema_migrations where version = '20261130000500';
  end if;
end
$$;
commit;
