#!/usr/bin/env bash
# Database proofs for the idempotency migration, against the local stack's database (scripts/stack.sh start):
#   1. rollback: every supabase/rollback/*_down.sql, newest first, removes its migration's objects and
#      history row; `supabase migration up` puts them back; re-running every migration with psql, in order,
#      gives the same objects (no second cron job). Rows in the migrated tables are lost: this is for the local stack only.
#   2. pgTAP: `supabase test db` over supabase/tests
#   3. advisors: `supabase db advisors` at level warn reports nothing about our objects
# Each step prints one summary line; the first failure stops the script with a non-zero exit.
set -euo pipefail
source "$(dirname "$0")/lib/env.sh"
cd "$ROOT"

VERSION=20261123000100
LOG="$LOG_DIR/db-check.log"
mkdir -p "$LOG_DIR"

# one value, unaligned (psql_run, for scripts, is in lib/env.sh)
psql_value() { psql -X -A -t -v ON_ERROR_STOP=1 "$DB_URL" -c "$1"; }

# What the migration created, as one comparable line.
objects() {
  psql_value "
    select format('table=%s view=%s functions=%s policies=%s indexes=%s cron_jobs=%s history=%s',
      (to_regclass('public.idempotency_keys') is not null)::int,
      (to_regclass('public.v_idempotency_stats') is not null)::int,
      (select count(*) from pg_proc where pronamespace = 'public'::regnamespace and proname in (
        'idempotency_begin', 'idempotency_complete', 'idempotency_fail', 'idempotency_extend_lease',
        'get_idempotency_status', 'cleanup_expired_idempotency_keys')),
      (select count(*) from pg_policies where schemaname = 'public' and tablename = 'idempotency_keys'),
      (select count(*) from pg_indexes where schemaname = 'public' and tablename = 'idempotency_keys'),
      (select count(*) from cron.job where jobname = 'cleanup-expired-idempotency-keys'),
      (select count(*) from supabase_migrations.schema_migrations where version = '$VERSION'))
    || format(' counter_tables=%s triggers=%s',
      (to_regclass('public.idempotency_stats_counters') is not null)::int
        + (to_regclass('public.idempotency_open_keys') is not null)::int,
      (select count(*) from pg_trigger where not tgisinternal
        and tgrelid = to_regclass('public.idempotency_keys')))"
}
# after 20261130000300_idempotency_scale.sql: primary key, (idempotency_key, user_id) unique, user_id,
# purge_after; the two side tables of the stats view and the six triggers that keep them and purge_after
PRESENT="table=1 view=1 functions=6 policies=1 indexes=4 cron_jobs=1 history=1 counter_tables=2 triggers=6"
ABSENT="table=0 view=0 functions=0 policies=0 indexes=0 cron_jobs=0 history=0 counter_tables=0 triggers=0"

expect_objects() { # expected, when
  local got
  got=$(objects)
  [ "$got" = "$1" ] || die "$2: expected $1, found $got"
}

# --- 1. rollback and re-apply -------------------------------------------------------------------------------
say "db-check 1/3: rollback and re-apply"
expect_objects "$PRESENT" "before the rollback (is the stack started?)"
# Newest first: a later migration may build on an earlier one, and each rollback drops without cascade.
mapfile -t ROLLBACKS < <(find supabase/rollback -name '*_down.sql' | sort -r)
[ "${#ROLLBACKS[@]}" -gt 0 ] || die "no rollback scripts in supabase/rollback"
for f in "${ROLLBACKS[@]}"; do
  psql_run -f "$f" >/dev/null || die "rollback $f failed"
done
expect_objects "$ABSENT" "after the rollback"
# every rolled-back migration is gone from the history, so `migration up` needs no --include-all
remaining=$(psql_value "select count(*) from supabase_migrations.schema_migrations")
[ "$remaining" = 0 ] ||
  die "after the rollbacks $remaining migration(s) are still recorded: does one lack a rollback script?"

supabase migration up --remote="$DB_URL" --yes >"$LOG" 2>&1 || {
  cat "$LOG" >&2
  die "supabase migration up failed"
}
expect_objects "$PRESENT" "after supabase migration up"
applied=$(psql_value "select count(*) from supabase_migrations.schema_migrations")
files=$(find supabase/migrations -name '*.sql' | wc -l)
[ "$applied" = "$files" ] || die "supabase migration up recorded $applied migrations for $files files"

# Each migration says re-running it is harmless; the cron job is the one object that could double. A later
# migration redefines what an earlier one made, so they are re-run in order, all of them.
mapfile -t MIGRATIONS < <(find supabase/migrations -name '*.sql' | sort)
for f in "${MIGRATIONS[@]}"; do
  # in one transaction each, as `supabase migration up` applies them (their `set local` timeouts need one)
  psql_run --single-transaction -f "$f" >/dev/null || die "re-running $f with psql failed"
done
expect_objects "$PRESENT" "after re-running the migrations with psql"
echo "db-check: rollback ok: ${#ROLLBACKS[@]} rollback(s) removed every object," \
  "migration up restored $applied migration(s), re-running them kept 1 cron job"

# --- 2. pgTAP -----------------------------------------------------------------------------------------------
say "db-check 2/3: pgTAP tests (supabase test db)"
# `supabase test db` (CLI 3.1) runs pg_prove in Docker (the supabase/pg_prove:3.36 image), or, with
# SUPABASE_EXPERIMENTAL_STACK=1, from a Postgres bundle it downloads. With neither a Docker daemon nor that
# download at hand, run the very command it would run, `pg_prove --ext .pg --ext .sql -r supabase/tests`,
# with the same PG* settings, after making sure pgTAP is installed as it does.
if supabase test db --remote="$DB_URL" --yes 2>&1 | tee "$LOG"; then
  echo "db-check: pgTAP ok (supabase test db): $(grep -E '^Files=' "$LOG" | tail -1 | cut -d, -f1-2)"
elif grep -qiE 'docker daemon|docker desktop|docker.sock' "$LOG"; then
  say "supabase test db needs Docker, which is not running here: running its pg_prove command directly"
  command -v pg_prove >/dev/null ||
    die "pg_prove not found: install Debian's libtap-parser-sourcehandler-pgtap-perl (it ships pg_prove)"
  [[ "$DB_URL" =~ ^postgres(ql)?://([^:]+):([^@]+)@([^:/]+):([0-9]+)/(.+)$ ]] ||
    die "cannot parse DB_URL $DB_URL"
  psql_run -c "create extension if not exists pgtap with schema extensions"
  PGUSER="${BASH_REMATCH[2]}" PGPASSWORD="${BASH_REMATCH[3]}" PGHOST="${BASH_REMATCH[4]}" \
    PGPORT="${BASH_REMATCH[5]}" PGDATABASE="${BASH_REMATCH[6]}" \
    pg_prove --ext .pg --ext .sql -r supabase/tests 2>&1 | tee "$LOG" || die "pgTAP tests failed"
  echo "db-check: pgTAP ok (pg_prove, as supabase test db runs it):" \
    "$(grep -E '^Files=' "$LOG" | tail -1 | cut -d, -f1-2)"
else
  die "supabase test db failed"
fi

# --- 3. advisors --------------------------------------------------------------------------------------------
say "db-check 3/3: supabase db advisors (level warn)"
supabase db advisors --remote="$DB_URL" --level warn --output-format json >"$LOG.json" 2>"$LOG" || {
  cat "$LOG" >&2
  die "supabase db advisors failed"
}
# Findings on the schemas a Supabase project already has (auth, extensions, cron, ...) are about the local
# emulation of the platform in scripts/stack/bootstrap.sql, not about this project: they are listed but do not
# fail the check. Everything else (schema public, our objects anywhere, or no schema at all) fails it.
node - "$LOG.json" <<'JS'
const fs = require("node:fs");
const { results = [] } = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const PLATFORM = new Set(["auth", "extensions", "cron", "storage", "realtime", "vault", "graphql",
  "graphql_public", "pgsodium", "supabase_migrations", "net", "supabase_functions"]);
const OURS = new RegExp([
  "idempotency_keys", "v_idempotency_stats", "idempotency_begin", "idempotency_complete", "idempotency_fail",
  "idempotency_extend_lease", "get_idempotency_status", "cleanup_expired_idempotency_keys",
  "idempotency_metric_counters", "idempotency_metrics_add", "idempotency_admin_",
].join("|"));
const serious = results.filter((r) => r.level === "WARN" || r.level === "ERROR");
const line = (r) => `  ${r.level} ${r.name}: ${r.detail}`;
const platform = serious.filter((r) => PLATFORM.has(r.metadata?.schema) && !OURS.test(JSON.stringify(r)));
const failing = serious.filter((r) => !platform.includes(r));
if (platform.length) console.log(`ignored (emulated platform objects):\n${platform.map(line).join("\n")}`);
if (failing.length) {
  console.error(`advisors report ${failing.length} WARN/ERROR finding(s):\n${failing.map(line).join("\n")}`);
  process.exit(1);
}
console.log(`db-check: advisors ok: ${results.length} finding(s) at warn or above, none about this project` +
  (platform.length ? ` (${platform.length} on emulated platform schemas ignored)` : ""));
JS
