#!/usr/bin/env bash
# Runs every test against the real local stack: it installs what is missing, starts the stack, then runs
#   1. deno fmt --check, deno lint, deno check
#   2. unit and store-contract tests (supabase/functions)
#   3. database proofs: rollback and re-apply, pgTAP via `supabase test db`, `supabase db advisors`
#   4. SQL concurrency and end-to-end HTTP tests (tests/db, tests/e2e), actions across a SIGKILL (tests/crash)
#   5. store outage: PostgreSQL is stopped, fail-closed and fail-open are checked, then it is started again
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

# Idempotent actions (issue 11): their store contracts run with the unit tests and run-actions with the
# e2e tests above; here a worker is SIGKILLed mid-action and the action is taken over exactly once.
deno_test "actions across a SIGKILL of the worker" tests/crash

say "store outage: stopping PostgreSQL"
scripts/stack.sh db-stop
STORE_OUTAGE=1 deno_test "fail-closed and fail-open with the database stopped" tests/outage
scripts/stack.sh db-start

echo "test: $passed passed, $failed failed"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ]
