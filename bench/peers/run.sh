#!/usr/bin/env bash
# The peers benchmark: this toolkit (memory, Redis, Postgres stores) against AWS Powertools idempotency
# (Redis, outside Lambda), @node-idempotency/core (memory, Redis) and express-idempotency, in one run.
#   scripts/stack.sh start && bench/peers/run.sh [--requests 400] [--runs 5] [--concurrency 100] [--json F]
# Installs the benchmark's own devDependencies (package-lock.json) on first use, and runs PostgreSQL with
# production durability (fsync, synchronous_commit, full_page_writes on) for the run, as it was before after.
set -euo pipefail
source "$(dirname "$0")/../../scripts/lib/env.sh"
export BENCH_CWD="$PWD"
cd "$ROOT/bench/peers"
"$ROOT/scripts/stack.sh" status >/dev/null || die "the stack is not running: scripts/stack.sh start (with your ports)"

stamp=node_modules/.installed-lock
if ! cmp -s "$stamp" package-lock.json 2>/dev/null; then
  say "installing the benchmark's devDependencies (bench/peers/package-lock.json)"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  cp package-lock.json "$stamp"
fi

durability() { # on | reset
  local setting
  for setting in fsync synchronous_commit full_page_writes; do
    if [ "$1" = on ]; then psql_run -c "alter system set $setting = on"; else psql_run -c "alter system reset $setting"; fi
  done
  psql_run -c "select pg_reload_conf()" >/dev/null
}
durability on
trap 'durability reset' EXIT
sleep 0.2
echo "PostgreSQL: $(psql_run -At -c "select string_agg(name || '=' || setting, ', ' order by name) from pg_settings
  where name in ('fsync', 'synchronous_commit', 'full_page_writes')")"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (shared with other developers' work)"
node run.mjs "$@"
