#!/usr/bin/env bash
# Static checks of the SQL, on top of the pgTAP suite:
#   1. squawk (pinned in .tools/package.json, settings and their reasons in .squawk.toml) over the migrations;
#   2. plpgsql_check (Debian postgresql-15-plpgsql-check, what `supabase db lint` runs) over every plpgsql
#      function in schema public of the running database, with extra, performance and security warnings on.
# Exits non-zero on any finding not excepted below; each exception says why where it is made.
set -euo pipefail
source "$(dirname "$0")/lib/env.sh"
cd "$ROOT"
status=0

say "squawk over supabase/migrations"
# Deliberate exception: the two migrations released before this check existed create new objects in an empty
# schema on first deploy, where no other session holds a lock to wait for; they cannot be edited now (see
# scripts/migrations.sh). Every later migration must set lock_timeout and statement_timeout.
GRANDFATHERED=(supabase/migrations/20261123000100_idempotency_keys.sql
  supabase/migrations/20261123000200_edge_function_tables.sql)
later=()
for file in supabase/migrations/*.sql; do
  [[ " ${GRANDFATHERED[*]} " == *" $file "* ]] || later+=("$file")
done
# (--exclude replaces the config's excluded_rules, so it repeats that list's one rule)
squawk --config .squawk.toml --exclude=prefer-bigint-over-int,require-lock-timeout,require-statement-timeout \
  "${GRANDFATHERED[@]}" || status=1
if [ "${#later[@]}" -gt 0 ]; then squawk --config .squawk.toml "${later[@]}" || status=1; fi

say "plpgsql_check over the plpgsql functions in schema public"
# In a transaction that is rolled back: the extension is never left installed.
findings=$(psql_run -At -F ' | ' <<'SQL'
begin;
create extension plpgsql_check;
select p.oid::regprocedure, c.level, c.sqlstate, c.message, coalesce(c.detail, '')
from pg_proc p
join pg_namespace n on n.oid = p.pronamespace
join pg_language l on l.oid = p.prolang
-- a trigger function is checked against its table and, for statement triggers, its transition tables
left join lateral (select t.tgrelid, t.tgoldtable, t.tgnewtable from pg_trigger t where t.tgfoid = p.oid limit 1) t
  on true
cross join lateral plpgsql_check_function_tb(
  p.oid,
  coalesce(t.tgrelid, 0),
  extra_warnings => true, performance_warnings => true, security_warnings => true,
  oldtable => t.tgoldtable, newtable => t.tgnewtable
) c
where n.nspname = 'public' and l.lanname = 'plpgsql'
order by 1;
rollback;
SQL
)
if [ -n "$findings" ]; then
  echo "$findings"
  status=1
else
  echo "plpgsql_check: no findings in $(psql_run -At -c "select count(*) from pg_proc p join pg_language l on l.oid = p.prolang where p.pronamespace = 'public'::regnamespace and l.lanname = 'plpgsql'") functions"
fi
exit "$status"
