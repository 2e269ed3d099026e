#!/usr/bin/env bash
# Runs every test against the real local stack: it installs what is missing, starts the stack, then runs
#   1. deno fmt --check, deno lint, deno check
#   2. unit and store-contract tests (supabase/functions)
#   3. database proofs: rollback and re-apply, pgTAP via `supabase test db`, `supabase db advisors`
#   4. SQL concurrency and end-to-end HTTP tests (tests/db, tests/e2e); property, model-based and hostile-input
#      tests (tests/property)
#   5. store outage: PostgreSQL is stopped, fail-closed and fail-open are checked, then it is started again
#   6. faults (tests/faults, docs/faults.md), with production durability on: PostgreSQL restarted and
#      crashed during bursts, backends killed, a held table lock, a deleted user
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

# The hostile-input and fault tests start gateways of their own on these two ports.
export FAULT_API_PORT="${FAULT_API_PORT:-$((API_PORT + 2))}"
rm -f "$LOG_DIR/fault-figures.txt" # the tests below append their figures there
deno_test "property and model-based tests (fast-check), hostile input over HTTP (port FAULT_API_PORT + 1)" tests/property

say "store outage: stopping PostgreSQL"
scripts/stack.sh db-stop
STORE_OUTAGE=1 deno_test "fail-closed and fail-open with the database stopped" tests/outage
scripts/stack.sh db-start

say "faults: production durability on (fsync, synchronous_commit, full_page_writes)"
scripts/stack.sh durability on
deno_test "faults: restarts and crashes during bursts, killed backends, locks, deleted users" tests/faults
scripts/stack.sh durability off
cat "$LOG_DIR/fault-figures.txt" 2>/dev/null || true

echo "test: $passed passed, $failed failed"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ]
