#!/usr/bin/env bash
# What the statistics cost on the claim path, measured in one run on the durable cluster
# (scripts/scale/cluster.sh, filled by scripts/scale/fill.sh), printed as Markdown for docs/scaling.md:
#   1. pgbench calling the store's SQL (-M prepared): begin + complete of new keys, each committed on its own,
#      at 1 and 8 clients, with the statistics on and off (the two counter triggers disabled), alternating for
#      ROUNDS rounds of DURATION s; per setting the median over rounds of p50, p99 and transactions/s, the
#      ratios on/off, and WAL bytes per begin+complete
#   2. where the time goes with the statistics on: the trigger's calls and time per call (track_functions),
#      and EXPLAIN ANALYZE of the claim's insert and the completion's update (the trigger's share of each)
#   3. v_idempotency_stats while the counters hold writers' rows not yet folded: after a minute of claims at 8
#      clients, after a minute of replays of keys spread over the last 24 hours (the worst case: rows per
#      writer and minute of first expiry touched), and after the fold; median of 5 runs each
# The cleanup job is paused while this runs and resumed after; the counters are rebuilt at the end (the runs
# with the triggers disabled were not counted). ROUNDS (default 3), DURATION (s, default 20), VIEW_SECONDS (s of
# traffic before the view is timed, default 60).
set -euo pipefail
source "$(dirname "$0")/../lib/env.sh"
URL="$("$ROOT/scripts/scale/cluster.sh" url)"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-20}"
VIEW_SECONDS="${VIEW_SECONDS:-60}"
WORK="${WORK:-/work/scale-db/stats-cost}"
PGBENCH="$PG_BIN/pgbench"
mkdir -p "$WORK"
rm -f "$WORK"/*
q() { PGOPTIONS='-c client_min_messages=warning' psql -X -A -t -q -v ON_ERROR_STOP=1 "$URL" "$@"; }
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else print a[int((NR + 1) / 2)] }'; }

JOB="select jobid from cron.job where jobname = 'cleanup-expired-idempotency-keys'"
statistics() { # on|off
  local how; how=$([ "$1" = on ] && echo enable || echo disable)
  q -c "alter table public.idempotency_keys $how trigger idempotency_keys_track_insert,
    $how trigger idempotency_keys_track_update"
}
finish() {
  statistics on
  q -c "select public.idempotency_stats_rebuild()" >/dev/null
  q -c "select cron.alter_job(($JOB), active => true)" >/dev/null
}
q -c "select cron.alter_job(($JOB), active => false)" >/dev/null
trap finish EXIT

ROWS=$(q -c "select count(*) from public.idempotency_keys")
echo "## Statistics on the claim path: $(date -u '+%Y-%m-%d %H:%M UTC'), $ROWS keys (durable: fsync, synchronous_commit, full_page_writes on)"
echo
echo "Machine: $(nproc) cores shared with other developers' work (load average $(cut -d' ' -f1-3 /proc/loadavg) at the start): compare figures within this run."
echo

# --- 1. on / off ----------------------------------------------------------------------------------------------
BODY=$(node "$ROOT/scripts/scale/bodies.mjs" 1 2>/dev/null | sed 's/^\\\\/\\/')
cat >"$WORK/claim.sql" <<'SQL'
\set r random(1, 9000000000000000)
\set u random(0, 1099)
select record_id, lease_token from public.idempotency_begin('stc-' || :r::text, case when :u >= 1000 then null else md5('scale-user-' || :u::text)::uuid end, 'process-document', md5(:r::text) || md5((:r::bigint + 1)::text), 86400, 30) \gset
select public.idempotency_complete(:record_id::uuid, :lease_token::uuid, 201, :body::bytea, 'gzip', '{"content-type": "application/json"}'::jsonb);
SQL
# completed keys that fill.sh created in the last 24 hours (i % 100 < 96, i >= ROWS / 2), as measure.sh
cat >"$WORK/replay.sql" <<'SQL'
\set j random(:lo, :hi)
\set m random(0, 95)
\set i :j * 100 + :m
select outcome from public.idempotency_begin(md5(:i::text || '-key')::uuid::text, case when :i::bigint % 10 = 0 then null else md5('scale-user-' || (:i::bigint % 1000)::text)::uuid end, (array['process-document', 'start-training', 'generate-training-data'])[1 + :i::bigint % 3], md5(:i::text) || md5((:i::bigint + 1)::text), 86400, 30);
SQL
LO=$((ROWS / 200 + 1)) HI=$((ROWS / 100 - 2))

pgb() { # name clients seconds script -> "tps p50 p99 n wal_per_txn" (ms)
  local name=$1 clients=$2 seconds=$3 script=$4 wal0 tps wal
  wal0=$(q -c "select pg_current_wal_insert_lsn()")
  tps=$("$PGBENCH" -n -M prepared -c "$clients" -j "$((clients < 2 ? clients : 2))" -T "$seconds" \
    -f "$WORK/$script" -D body="$BODY" -D lo="$LO" -D hi="$HI" -l --log-prefix="$WORK/$name" "$URL" 2>&1 |
    sed -nE 's/^tps = ([0-9.]+).*/\1/p')
  wal=$(q -c "select pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '$wal0')")
  cat "$WORK/$name".* | awk '{ print $3 }' | sort -n | awk -v tps="$tps" -v wal="$wal" '{ a[NR] = $1 }
    END { printf "%.1f %.3f %.3f %d %.0f\n", tps, a[int(NR * 0.5) + 1] / 1000, a[int(NR * 0.99)] / 1000, NR, wal / NR }'
}

echo "### begin + complete with the statistics on and off"
echo
echo "$ROUNDS rounds of $DURATION s per setting and client count, alternating; each figure is the median over the rounds."
echo
echo "| clients | statistics | transactions/s | p50 ms | p99 ms | WAL bytes per transaction |"
echo "| --- | --- | --- | --- | --- | --- |"
for clients in 1 8; do
  for ((round = 1; round <= ROUNDS; round++)); do
    # which setting goes first alternates, so that a drift in the machine's load favours neither
    order=(on off); [ $((round % 2)) = 0 ] && order=(off on)
    for setting in "${order[@]}"; do
      statistics "$setting"
      pgb "$setting-$clients-$round" "$clients" "$DURATION" claim.sql >>"$WORK/runs-$setting-$clients"
    done
  done
  for setting in on off; do
    f="$WORK/runs-$setting-$clients"
    printf '| %s | %s | %s | %s | %s | %s |\n' "$clients" "$setting" "$(cut -d' ' -f1 "$f" | median)" \
      "$(cut -d' ' -f2 "$f" | median)" "$(cut -d' ' -f3 "$f" | median)" "$(cut -d' ' -f5 "$f" | median)"
  done
done
statistics on
q -c "select public.idempotency_stats_rebuild()" >/dev/null # the keys claimed while the triggers were off
echo
echo "| clients | p50 on / off | p99 on / off | transactions/s on / off |"
echo "| --- | --- | --- | --- |"
for clients in 1 8; do
  ratio() { awk -v a="$(cut -d' ' -f"$1" "$WORK/runs-on-$clients" | median)" \
    -v b="$(cut -d' ' -f"$1" "$WORK/runs-off-$clients" | median)" 'BEGIN { printf "%.2f", a / b }'; }
  echo "| $clients | $(ratio 2) | $(ratio 3) | $(ratio 1) |"
done
echo
echo "Per round (tps p50 p99 transactions WAL/transaction):"
echo
for f in "$WORK"/runs-*; do echo "- $(basename "$f" | sed 's/^runs-//'): $(paste -sd';' "$f" | sed 's/;/; /g')"; done
echo

# --- 2. where the time goes ----------------------------------------------------------------------------------
echo "### Where the time goes (statistics on)"
echo
FUNCTIONS="select funcname, calls, total_time, self_time from pg_stat_user_functions where schemaname = 'public'"
q -c "create temp table before as $FUNCTIONS" -c "\copy before to '$WORK/functions-before.csv' csv"
PGOPTIONS='-c track_functions=all' "$PGBENCH" -n -M prepared -c 1 -T 10 -f "$WORK/claim.sql" -D body="$BODY" "$URL" \
  >/dev/null 2>&1
sleep 1.5 # the backend's statistics reach the shared counters
echo "Per call, from \`track_functions = all\` over 10 s of begin + complete at 1 client (self: without the functions it calls):"
echo
echo "| function | calls | total µs per call | self µs per call |"
echo "| --- | --- | --- | --- |"
q -F '|' -c "create temp table before (funcname name, calls bigint, total_time float8, self_time float8)" \
  -c "\copy before from '$WORK/functions-before.csv' csv" -c "
  select a.funcname, a.calls - coalesce(b.calls, 0),
    round(((a.total_time - coalesce(b.total_time, 0)) * 1000 / (a.calls - coalesce(b.calls, 0)))::numeric, 1),
    round(((a.self_time - coalesce(b.self_time, 0)) * 1000 / (a.calls - coalesce(b.calls, 0)))::numeric, 1)
  from ($FUNCTIONS) a left join before b using (funcname)
  where a.calls > coalesce(b.calls, 0)
  order by a.total_time - coalesce(b.total_time, 0) desc" |
  awk -F'|' '{ printf "| `%s` | %s | %s | %s |\n", $1, $2, $3, $4 }'
echo
# The claim's insert and the completion's update as idempotency_begin and idempotency_complete write them, each
# explained 30 times in a transaction that is rolled back: the statement's time and its triggers' share.
explain_json() { # sql -> one line of JSON per run
  for _ in $(seq 30); do
    echo "begin;"
    echo "explain (analyze, format json) $1;"
    echo "rollback;"
  done | q | grep -v '^\(BEGIN\|ROLLBACK\)$' | tr -d '\n' | sed 's/\]\[/]\n[/g'
  echo
}
KEY="'stc-explain-' || gen_random_uuid()"
INSERT="insert into public.idempotency_keys (idempotency_key, user_id, function_name, request_fingerprint, status,
  locked_until, lease_token, created_at, started_at, expires_at, purge_after)
  values ($KEY, null, 'process-document', repeat('a', 64), 'processing', now() + interval '30 seconds',
  gen_random_uuid(), now(), now(), now() + interval '1 day', now() + interval '1 day')"
KEY_ID=$(q -c "$INSERT returning id") # a key in processing for the completions below
COMPLETE="update public.idempotency_keys set status = 'completed', status_code = 201, response = '$BODY'::bytea,
  response_encoding = 'gzip', response_headers = '{\"content-type\": \"application/json\"}', locked_until = null,
  lease_token = null, completed_at = now(), expires_at = now() + interval '1 day'
  where id = '$KEY_ID'"
summarise() { # label < JSON lines
  node -e '
    const lines = require("fs").readFileSync(0, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l)[0]);
    const med = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor((s.length - 1) / 2)]; };
    const total = med(lines.map((p) => p["Execution Time"]));
    const names = [...new Set(lines.flatMap((p) => (p.Triggers ?? []).map((t) => t["Trigger Name"])))];
    const parts = names.map((n) => `${n} ${med(lines.map((p) => (p.Triggers ?? []).find((t) => t["Trigger Name"] === n)?.Time ?? 0)).toFixed(3)} ms`);
    console.log(`| ${process.argv[1]} | ${total.toFixed(3)} | ${parts.join(", ") || "none"} |`);
  ' "$1"
}
echo "EXPLAIN ANALYZE, median of 30 (each rolled back):"
echo
echo "| statement | execution ms | triggers |"
echo "| --- | --- | --- |"
explain_json "$INSERT" | summarise "the claim's insert"
explain_json "$COMPLETE" | summarise "the completion's update"
q -c "delete from public.idempotency_keys where id = '$KEY_ID'"
echo

# --- 3. the view with writers' rows not folded yet ------------------------------------------------------------
view_ms() {
  { echo '\timing on'; for _ in 1 2 3 4 5; do echo 'select * from public.v_idempotency_stats;'; done; } |
    psql -X -q "$URL" -o /dev/null 2>&1 | sed -nE 's/^Time: ([0-9.]+) ms.*/\1/p' | median
}
writer_rows() { q -c "select count(*) from public.idempotency_stats_counters where shard <> 0"; }
echo "### v_idempotency_stats with writers' rows not yet folded (median of 5)"
echo
q -c "select public.idempotency_stats_compact()" >/dev/null
echo "| counters | rows (of which writers') | view ms |"
echo "| --- | --- | --- |"
echo "| folded | $(q -c "select count(*) from public.idempotency_stats_counters") ($(writer_rows)) | $(view_ms) |"
read -r tps _ <<<"$(pgb view-claims 8 "$VIEW_SECONDS" claim.sql)"
echo "| after $VIEW_SECONDS s of begin + complete at 8 clients ($tps/s) | $(q -c "select count(*) from public.idempotency_stats_counters") ($(writer_rows)) | $(view_ms) |"
read -r tps _ <<<"$(pgb view-replays 8 "$VIEW_SECONDS" replay.sql)"
echo "| then $VIEW_SECONDS s of replays of keys from the last 24 h at 8 clients ($tps/s) | $(q -c "select count(*) from public.idempotency_stats_counters") ($(writer_rows)) | $(view_ms) |"
q -c "select public.idempotency_stats_compact()" >/dev/null
echo "| folded again | $(q -c "select count(*) from public.idempotency_stats_counters") ($(writer_rows)) | $(view_ms) |"
echo
