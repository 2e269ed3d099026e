-- Undoes 20261123000200_edge_function_tables.sql: drops the tables the example edge functions write (their
-- rows, indexes and policies go with them) and forgets the migration, so `supabase migration up` (or
-- `supabase db push`) applies it again. Safe to run twice.
--   psql "$DB_URL" -v ON_ERROR_STOP=1 -f supabase/rollback/20261123000200_edge_function_tables_down.sql

begin;

-- children first: training_jobs and training_dataset_stats reference training_datasets,
-- document_processing_jobs references documents
drop table if exists public.training_jobs;
drop table if exists public.training_dataset_stats;
drop table if exists public.training_datasets;
drop table if exists public.document_processing_jobs;
drop table if exists public.documents;

do $$
begin
  if to_regclass('supabase_migrations.schema_migrations') is not null then
    delete from supabase_migrations.schema_migrations where version = '20261123000200';
  end if;
end
$$;

commit;
