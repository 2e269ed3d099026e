-- Rollback of supabase/migrations/20261130000800_idempotency_typed_constants.sql: the two cleanup functions as
-- 20261130000300_idempotency_scale.sql and 20261130000400_idempotent_actions.sql define them (untyped
-- constants; the same behaviour). Safe to run twice; one transaction.
--   psql "$DB_URL" -v ON_ERROR_STOP=1 -f supabase/rollback/20261130000800_idempotency_typed_constants_down.sql

begin;

create or replace function public.cleanup_expired_idempotency_keys(
  batch_size integer default 10000,
  max_batches integer default 100
)
returns bigint
language plpgsql
volatile
set search_path = ''
as $$
declare
  v_total bigint := 0;
  v_batch record;
  v_after timestamptz := '-infinity';
begin
  if batch_size is null or batch_size < 1 then
    raise exception 'batch_size must be at least 1, got %', batch_size using errcode = '22023';
  end if;
  for i in 1 .. greatest(coalesce(max_batches, 1), 1) loop
    select * into v_batch from public.idempotency_cleanup_batch(batch_size, v_after);
    v_total := v_total + v_batch.deleted;
    exit when v_batch.examined < batch_size;
    v_after := v_batch.last_purge_after;
  end loop;
  return v_total;
end;
$$;

create or replace function public.action_cleanup_expired(p_batch_size integer default 10000)
returns bigint
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_total bigint := 0;
  v_batch bigint;
begin
  if p_batch_size is null or p_batch_size < 1 then
    raise exception 'batch size must be at least 1, got %', p_batch_size using errcode = '22023';
  end if;
  loop
    with doomed as (
      select r.action_key from public.action_records r
      where r.expires_at <= now() and not (r.status = 'processing' and r.locked_until > now())
      order by r.expires_at
      limit p_batch_size
      for update skip locked
    )
    delete from public.action_records r using doomed where r.action_key = doomed.action_key;
    get diagnostics v_batch = row_count;
    v_total := v_total + v_batch;
    exit when v_batch < p_batch_size;
  end loop;
  if v_total > 0 then
    perform public.action_count(p_expired => v_total);
  end if;
  return v_total;
end;
$$;

do $$
begin
  if to_regclass('supabase_migrations.schema_migrations') is not null then
    delete from supabase_migrations.schema_migrations where version = '20261130000800';
  end if;
end;
$$;

commit;
