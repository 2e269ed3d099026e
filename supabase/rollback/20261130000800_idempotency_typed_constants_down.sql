-- Rollback of supabase/migrations/20261130000800_idempotency_typed_constants.sql. That migration redefines
-- the two cleanup functions with exactly the bodies 20261130000300_idempotency_scale.sql and
-- 20261130000400_idempotent_actions.sql give them as released (typed constants), so there is no schema to
-- put back: only its row in the migration history goes. Safe to run twice; one transaction.
--   psql "$DB_URL" -v ON_ERROR_STOP=1 -f supabase/rollback/20261130000800_idempotency_typed_constants_down.sql

begin;

do $$
begin
  if to_regclass('supabase_migrations.schema_migrations') is not null then
    delete from supabase_migrations.schema_migrations where version = '20261130000800';
  end if;
end;
$$;

commit;
