#!/usr/bin/env bash
# Runs every test against the real local stack: it installs what is missing, starts the stack, then runs
#   1. deno fmt --check, deno lint, deno check
#   2. unit and store-contract tests (supabase/functions)
#   3. database proofs: rollback and re-apply, pgTAP via `supabase test db`, `supabase db advisors`
#   4. SQL concurrency and end-to-end HTTP tests (tests/db, tests/e2e); the client helper (client/,
#      tests/client) against the stack and from headless Chromium; the layered store under Redis chaos,
#      Prometheus scraping the metrics endpoint, promtool alert tests, the admin CLI; property, model-based
#      and hostile-input tests (tests/property)
#   5. the e2e suite and the Postgres store contract through pgbouncer (transaction mode)
#   6. the crash harness (tests/crash): SIGKILLs and PostgreSQL restarts, side effects counted per key
#   7. store outage: PostgreSQL is stopped, fail-closed and fail-open are checked, then it is started again
#   8. faults (tests/faults, docs/faults.md), with production durability on: PostgreSQL restarted and
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
# each static check counts as one test, so that the summary line says when one failed
static_check() { # title, command...
  local title=$1; shift
  if "$@"; then passed=$((passed + 1)); else echo "$title failed"; failed=$((failed + 1)); status=1; fi
}
static_check "deno fmt --check" deno fmt --check
static_check "deno lint" deno lint
static_check "deno check" deno check supabase/functions scripts tests client bench/wait bench/peers/deno_server.ts

say "deploy shape: each function type-checks with only its own deno.json"
for fn_config in supabase/functions/*/deno.json; do
  static_check "deno check --config $fn_config" deno check --quiet --config "$fn_config" "$(dirname "$fn_config")/index.ts"
done
deno_test "deploy shape: each function loads and serves with only its own deno.json" tests/deploy

deno_test "unit and store-contract tests" supabase/functions

say "API reference: deno doc --lint, every export's tags (scripts/doc-check.ts), and its examples run"
PUBLIC_ENTRIES=(supabase/functions/_shared/idempotency.ts supabase/functions/_shared/idempotency/redis.ts
  supabase/functions/_shared/idempotency/jwt.ts)
# the subpaths for store authors and advanced users (docs/api.md: which export lives where, and why)
PUBLIC_ENTRIES+=(supabase/functions/_shared/idempotency/{store,pool,metrics,fingerprint,steps,headers}.ts)
# deno doc warns that node-redis's types name @types/node; the lint result is the exit status
if deno doc --lint "${PUBLIC_ENTRIES[@]}" >/dev/null 2>"$OUT"; then passed=$((passed + 1)); else
  grep -v '^Warning\|^    at ' "$OUT" || true; failed=$((failed + 1)); status=1; fi
if deno run --allow-run --allow-read scripts/doc-check.ts "${PUBLIC_ENTRIES[@]}"; then passed=$((passed + 1)); else
  failed=$((failed + 1)); status=1; fi
mapfile -t documented < <(ls supabase/functions/_shared/idempotency.ts supabase/functions/_shared/idempotency/*.ts \
  supabase/functions/_shared/idempotency/stores/*.ts | grep -v -e '_test\.ts$' -e '_testing\.ts$' -e 'contract_suite\.ts$')
deno_test "API reference: the examples in the doc comments (deno test --doc)" --doc "${documented[@]}"
if deno check --quiet --doc-only docs/api.md; then passed=$((passed + 1)); else failed=$((failed + 1)); status=1; fi

say "migrations as history: released migrations unchanged (supabase/migrations.sha256)"
if scripts/migrations.sh check; then passed=$((passed + 1)); else failed=$((failed + 1)); status=1; fi
say "SQL lint: squawk over the migrations, plpgsql_check over the functions"
if scripts/lint-sql.sh; then passed=$((passed + 1)); else failed=$((failed + 1)); status=1; fi

say "database proofs: rollback, pgTAP, advisors"
if scripts/db-check.sh 2>&1 | tee "$OUT"; then db_ok=1; else db_ok=0; status=1; fi
# the rollback-and-reapply and advisors steps count as one test; the pgTAP assertions are counted below
if [ "$db_ok" = 1 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
# `supabase test db` reports like prove: "Files=N, Tests=M"; count its assertions, and its failures.
pg_tests=$(grep -Eo 'Tests=[0-9]+' "$OUT" | tail -1 | cut -d= -f2 || true)
if [ -n "$pg_tests" ] && grep -q 'Result: PASS' "$OUT"; then passed=$((passed + pg_tests)); else failed=$((failed + 1)); fi

deno_test "SQL concurrency and end-to-end HTTP tests" tests/db tests/e2e

# The client helper: unit tests, then against the stack (a lost answer through a lossy proxy, a database
# outage it stops and starts itself, a 422), then from headless Chromium on another origin.
deno_test "client helper: unit tests" client
deno_test "client helper against the stack (stops and restarts PostgreSQL)" tests/client
deno_test "client helper in headless Chromium, page on another origin" tests/browser

# Operating it (issue 12): the layered store under Redis chaos, the metrics endpoint scraped by a real
# Prometheus, the alerting rules, the admin CLI against the real database.
deno_test "layered store: Redis flushed, killed and restarted mid-burst" tests/layered
deno_test "metrics endpoint scraped by Prometheus, PromQL checks" tests/metrics
deno_test "admin CLI and admin SQL functions" tests/admin
say "alerting rules: promtool test rules"
if promtool test rules monitoring/alerts_test.yml 2>&1 | tee "$OUT" && grep -q SUCCESS "$OUT"; then
  # one assertion per alert_rule_test case
  passed=$((passed + $(grep -c 'alertname:' monitoring/alerts_test.yml)))
else
  failed=$((failed + 1)); status=1
fi

# The hostile-input and fault tests start gateways of their own, each on a free port the system picks.
rm -f "$LOG_DIR/fault-figures.txt" # the tests below append their figures there
deno_test "property and model-based tests (fast-check), hostile input over HTTP" tests/property

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

# tests/crash also holds the actions' test: a worker SIGKILLed mid-action, the action taken over exactly once.
say "crash harness: SIGKILL at named points, PostgreSQL restarted and crashed (production durability)"
deno_test "exactly once under crashes" tests/crash
cat "$LOCAL_DIR/logs/crash-report.txt" 2>/dev/null || true

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
