#!/usr/bin/env bash
# Runs every test against the real local stack: it installs what is missing, starts the stack, then runs
#   1. deno fmt --check, deno lint, deno check
#   2. unit and store-contract tests (supabase/functions)
#   3. database proofs: rollback and re-apply, pgTAP via `supabase test db`, `supabase db advisors`
#   4. SQL concurrency and end-to-end HTTP tests (tests/db, tests/e2e)
#   5. the e2e suite and the Postgres store contract through pgbouncer (transaction mode)
#   6. the crash harness (tests/crash): SIGKILLs and PostgreSQL restarts, side effects counted per key
#   7. store outage: PostgreSQL is stopped, fail-closed and fail-open are checked, then it is started again
# and ends with one line: `test: N passed, N failed`.
set -euo pipefail
source "$(dirname "$0")/lib/env.sh"
# deno colours its summary line even into a pipe; the counting below reads it plain
export NO_COLOR=1
cd "$ROOT"

passed=0 failed=0
OUT="$LOCAL_DIR/logs/test-step.log"

count_deno() { # adds the figures of deno test's summary line in $OUT
  local line
  line=$(grep -E '^(ok|FAILED) \| [0-9]+ passed' "$OUT" | tail -1 || true)
  [ -n "$line" ] || { failed=$((failed + 1)); return; }
  passed=$((passed + $(sed -E 's/.*\| ([0-9]+) passed.*/\1/' <<<"$line")))
  failed=$((failed + $(sed -E 's/.*\| ([0-9]+) failed.*/\1/' <<<"$line")))
}

deno_test() { # title, paths...
  local title=$1; shift
  say "$title"
  if deno test --allow-all --quiet "$@" 2>&1 | tee "$OUT"; then :; else status=1; fi
  count_deno
}

status=0
scripts/stack.sh start
mkdir -p "$LOCAL_DIR/logs"

say "format, lint, type check"
deno fmt --check >/dev/null 2>&1 || { deno fmt --check || true; echo "deno fmt --check failed"; status=1; }
deno lint || status=1
deno check supabase/functions scripts tests || status=1

deno_test "unit and store-contract tests" supabase/functions

say "database proofs: rollback, pgTAP, advisors"
if scripts/db-check.sh 2>&1 | tee "$OUT"; then :; else status=1; fi
# `supabase test db` reports like prove: "Files=N, Tests=M"; count its assertions, and its failures.
pg_tests=$(grep -Eo 'Tests=[0-9]+' "$OUT" | tail -1 | cut -d= -f2 || true)
if [ -n "$pg_tests" ] && grep -q 'Result: PASS' "$OUT"; then passed=$((passed + pg_tests)); else failed=$((failed + 1)); fi

deno_test "SQL concurrency and end-to-end HTTP tests" tests/db tests/e2e

say "end-to-end tests through pgbouncer (transaction mode, no prepared statements)"
# A second gateway whose functions and default store connect through the pooler, as on Supabase through
# Supavisor's port 6543; the tests count rows on the direct connection. Port 0: the gateway picks a free one.
pooled_log="$LOCAL_DIR/logs/gateway-pooled.log"
SUPABASE_DB_URL="$POOLER_URL" SUPABASE_JWT_SECRET="$JWT_SECRET" TRAINER_URL="$API_URL/trainer" PORT=0 \
  deno run --allow-all --quiet scripts/gateway.ts >"$pooled_log" 2>&1 &
pooled_pid=$!
for _ in $(seq 300); do grep -q "functions gateway on" "$pooled_log" && break; sleep 0.1; done
pooled_url=$(grep -Eo 'http://127\.0\.0\.1:[0-9]+' "$pooled_log" | head -1 || true)
if [ -n "$pooled_url" ]; then
  trainer_url="$API_URL/trainer"
  API_URL="$pooled_url" TX_DB_URL="$POOLER_URL" TRAINER_URL="$trainer_url" \
    deno_test "the e2e suite through pgbouncer" \
    tests/e2e/idempotency_test.ts tests/e2e/functions_test.ts tests/e2e/transactional_test.ts
  SUPABASE_DB_URL="$POOLER_URL" deno_test "the Postgres store contract through pgbouncer" \
    supabase/functions/_shared/idempotency/stores/postgres_test.ts
else
  cat "$pooled_log"; echo "the pooled gateway did not start"; failed=$((failed + 1)); status=1
fi
kill "$pooled_pid" 2>/dev/null || true
wait "$pooled_pid" 2>/dev/null || true

say "crash harness: SIGKILL at named points, PostgreSQL restarted and crashed (production durability)"
deno_test "exactly once under crashes" tests/crash
cat "$LOCAL_DIR/logs/crash-report.txt" 2>/dev/null || true

say "store outage: stopping PostgreSQL"
scripts/stack.sh db-stop
STORE_OUTAGE=1 deno_test "fail-closed and fail-open with the database stopped" tests/outage
scripts/stack.sh db-start

echo "test: $passed passed, $failed failed"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ]
