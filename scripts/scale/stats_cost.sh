#!/usr/bin/env bash
# What the statistics cost on the claim path, measured in one run on the durable cluster
# (scripts/scale/cluster.sh, filled by scripts/scale/fill.sh), printed as Markdown for docs/scaling.md:
#   1. pgbench calling the store's SQL (-M prepared): begin + complete of new keys, each committed on its own,
#      at 1 and 8 clients, under three settings in turn, after a warm-up, for ROUNDS rounds of DURATION s:
#        current   the counter triggers as the migrations leave them
#        released  the trigger function of 20261130000300 (its helper idempotency_stats_add, shard pid % 16)
#        off       the two counter triggers disabled: no statistics at all
#      per setting p50 and p99 over all its transactions, the median over rounds of transactions/s and of WAL
#      bytes per begin + complete, and the ratios to "off"; then the database backend's CPU time per begin + complete
#      (/proc/self/schedstat, read by the session itself), which other developers' jobs disturb far less
#   2. where the time goes, for "released" and "current": calls and time per call of the functions involved
#      (track_functions), and EXPLAIN ANALYZE of the claim's insert and the completion's update with their
#      triggers' share
#   3. v_idempotency_stats while the counters hold writers' rows not yet folded: after VIEW_SECONDS of claims
#      at 8 clients, then of replays of keys spread over the last 24 hours (the worst case: a row per writer
#      and minute of first expiry touched), and after the fold; median of 5 runs each
# The other settings' functions are taken from the released migration files, which never change. The cleanup
# job is paused while this runs and resumed after; the current functions are put back and the counters
# rebuilt at the end (the runs with the triggers disabled counted nothing).
# ROUNDS (default 8), DURATION (s, default 8), VIEW_SECONDS (default 60).
set -euo pipefail
source "$(dirname "$0")/../lib/env.sh"
source "$(dirname "$0")/_workload.sh"
URL="$("$ROOT/scripts/scale/cluster.sh" url)"
ROUNDS="${ROUNDS:-8}"
DURATION="${DURATION:-8}"
VIEW_SECONDS="${VIEW_SECONDS:-60}"
WORK="${WORK:-/work/scale-db/stats-cost}"
PGBENCH="$PG_BIN/pgbench"
RELEASED="$ROOT/supabase/migrations/20261130000300_idempotency_scale.sql"
CURRENT="$ROOT/supabase/migrations/20261130000700_idempotency_stats_writer_rows.sql"
mkdir -p "$WORK"
rm -f "$WORK"/*
q() { PGOPTIONS='-c client_min_messages=warning' psql -X -A -t -q -v ON_ERROR_STOP=1 "$URL" "$@"; }
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else print a[int((NR + 1) / 2)] }'; }
definition() { sed -n "/^create or replace function public\.$2(/,/^\\\$\\\$;/p" "$1"; } # file name

triggers() { # enable|disable
  q -c "alter table public.idempotency_keys $1 trigger idempotency_keys_track_insert,
    $1 trigger idempotency_keys_track_update"
}
setting() { # current|released|off
  case $1 in
    current)
      definition "$CURRENT" idempotency_keys_track | q
      q -c "drop function if exists public.idempotency_stats_add(text, timestamptz, bigint, bigint, bigint, bigint,
        bigint, timestamptz)"
      triggers enable ;;
    released)
      { definition "$RELEASED" idempotency_stats_add; definition "$RELEASED" idempotency_keys_track; } | q
      triggers enable ;;
    off) triggers disable ;;
  esac
}
finish() {
  setting current
  q -c "select public.idempotency_stats_rebuild()" >/dev/null
  resume_cleanup_job
}
pause_cleanup_job
trap finish EXIT

ROWS=$(q -c "select count(*) from public.idempotency_keys")
echo "## Statistics on the claim path: $(date -u '+%Y-%m-%d %H:%M UTC'), $ROWS keys (durable: fsync, synchronous_commit, full_page_writes on)"
echo
echo "Machine: $(nproc) cores shared with other developers' work (load average $(cut -d' ' -f1-3 /proc/loadavg) at the start): compare figures within this run."
echo

# --- 1. the three settings ------------------------------------------------------------------------------------
write_workload "$WORK" stc "$ROWS"

pgb() { # name clients seconds script -> "tps p50 p99 transactions wal_bytes" (ms)
  local name=$1 clients=$2 seconds=$3 script=$4 wal0 tps wal
  wal0=$(q -c "select pg_current_wal_insert_lsn()")
  tps=$("$PGBENCH" -n -M prepared -c "$clients" -j "$((clients < 2 ? clients : 2))" -T "$seconds" \
    -f "$WORK/$script" -D body="$BODY" -D lo="$LO" -D hi="$HI" -l --log-prefix="$WORK/$name" "$URL" 2>&1 |
    sed -nE 's/^tps = ([0-9.]+).*/\1/p')
  wal=$(q -c "select pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '$wal0')")
  cat "$WORK/$name".* | awk '{ print $3 }' | sort -n | awk -v tps="$tps" -v wal="$wal" '{ a[NR] = $1 } END {
    printf "%.1f %.3f %.3f %d %.0f\n", tps, a[int(NR * 0.5) + 1] / 1000, a[int(NR * 0.99)] / 1000, NR, wal }'
}
pooled() { # setting clients -> "p50 p99" over every transaction of the setting's rounds (ms)
  cat "$WORK/$1-$2-"*.* | awk '{ print $3 }' | sort -n |
    awk '{ a[NR] = $1 } END { printf "%.3f %.3f\n", a[int(NR * 0.5) + 1] / 1000, a[int(NR * 0.99)] / 1000 }'
}
figure() { # setting clients -> "tps p50 p99 wal_per_transaction" (medians over rounds but for the pooled p50, p99)
  local f="$WORK/runs-$1-$2"
  echo "$(cut -d' ' -f1 "$f" | median) $(pooled "$1" "$2") $(awk '{ printf "%.0f\n", $5 / $4 }' "$f" | median)"
}

SETTINGS=(current released off)
echo "### begin + complete: the statistics now, as released, and none"
echo
echo "After 20 s of warm-up, $ROUNDS rounds of $DURATION s per setting and client count, the settings in turn (each round starts with the next one). p50 and p99 over all of a setting's transactions; transactions/s and WAL: the median over its rounds (a round just after a checkpoint writes full-page images: several KB per transaction)."
echo
echo "| clients | statistics | transactions/s | p50 ms | p99 ms | WAL bytes per begin + complete |"
echo "| --- | --- | --- | --- | --- | --- |"
setting current
pgb warm-up 8 20 claim.sql >/dev/null
for clients in 1 8; do
  for ((round = 0; round < ROUNDS; round++)); do
    for ((k = 0; k < ${#SETTINGS[@]}; k++)); do
      s=${SETTINGS[(round + k) % ${#SETTINGS[@]}]} # a drift in the machine's load favours no setting
      setting "$s"
      pgb "$s-$clients-$round" "$clients" "$DURATION" claim.sql >>"$WORK/runs-$s-$clients"
    done
  done
  for s in "${SETTINGS[@]}"; do
    read -r tps p50 p99 wal <<<"$(figure "$s" "$clients")"
    echo "| $clients | $s | $tps | $p50 | $p99 | $wal |"
  done
done
# the session's own CPU time per begin + complete, as PostgresStore sends them (one client, each committed)
{
  echo "select split_part(pg_read_file('/proc/self/schedstat'), ' ', 1)::bigint as t0 \\gset"
  for ((i = 0; i < 500; i++)); do
    echo "select record_id, lease_token from public.idempotency_begin('stc-cpu-' || gen_random_uuid(), null, 'process-document', repeat('b', 64), 86400, 30) \\gset"
    echo "select public.idempotency_complete(:'record_id'::uuid, :'lease_token'::uuid, 201, '$BODY'::bytea, '$ENCODING', '{}'::jsonb) \\g /dev/null"
  done
  echo "select round((split_part(pg_read_file('/proc/self/schedstat'), ' ', 1)::bigint - :t0) / 500000.0, 1);"
} >"$WORK/cpu.sql"
for ((round = 0; round < ROUNDS; round++)); do
  for ((k = 0; k < ${#SETTINGS[@]}; k++)); do
    s=${SETTINGS[(round + k) % ${#SETTINGS[@]}]}
    setting "$s"
    q -f "$WORK/cpu.sql" >>"$WORK/cpu-$s"
  done
done
setting current
q -c "select public.idempotency_stats_rebuild()" >/dev/null # the keys claimed while the triggers were off
echo
echo "| clients | statistics | p50 / off | p99 / off | transactions/s / off |"
echo "| --- | --- | --- | --- | --- |"
for clients in 1 8; do
  read -r off_tps off_p50 off_p99 _ <<<"$(figure off "$clients")"
  for s in current released; do
    read -r tps p50 p99 _ <<<"$(figure "$s" "$clients")"
    echo "| $clients | $s | $(awk -v a="$p50" -v b="$off_p50" 'BEGIN { printf "%.2f", a / b }') |" \
      "$(awk -v a="$p99" -v b="$off_p99" 'BEGIN { printf "%.2f", a / b }') |" \
      "$(awk -v a="$tps" -v b="$off_tps" 'BEGIN { printf "%.2f", a / b }') |"
  done
done
echo
cpu_off=$(median <"$WORK/cpu-off")
echo "The database backend's CPU time per begin + complete ($ROUNDS rounds of 500 at 1 client, the settings in turn; median, and every round):"
echo
echo "| statistics | CPU µs per begin + complete | above off | rounds |"
echo "| --- | --- | --- | --- |"
for s in "${SETTINGS[@]}"; do
  cpu=$(median <"$WORK/cpu-$s")
  echo "| $s | $cpu | $(awk -v a="$cpu" -v b="$cpu_off" 'BEGIN { printf "%+.0f (%+.0f %%)", a - b, 100 * (a - b) / b }') | $(sort -n "$WORK/cpu-$s" | paste -sd' ') |"
done
echo
echo "Every run (transactions/s, p50 ms, p99 ms, transactions, WAL bytes):"
echo
for f in "$WORK"/runs-*; do echo "- $(basename "$f" | sed 's/^runs-//'): $(paste -sd';' "$f" | sed 's/;/; /g')"; done
echo

# --- 2. where the time goes ----------------------------------------------------------------------------------
FUNCTIONS="select funcname, calls, total_time, self_time from pg_stat_user_functions where schemaname = 'public'"
functions_per_call() { # seconds of begin + complete at 1 client with track_functions on -> table rows
  q -c "\\copy ($FUNCTIONS) to '$WORK/functions-before.csv' csv"
  PGOPTIONS='-c track_functions=all' "$PGBENCH" -n -M prepared -c 1 -T "$1" -f "$WORK/claim.sql" -D body="$BODY" \
    "$URL" >/dev/null 2>&1
  sleep 1.5 # the backend's statistics reach the shared counters
  q -F '|' -c "create temp table before (funcname name, calls bigint, total_time float8, self_time float8)" \
    -c "\\copy before from '$WORK/functions-before.csv' csv" -c "
    select a.funcname, a.calls - coalesce(b.calls, 0),
      round(((a.total_time - coalesce(b.total_time, 0)) * 1000 / (a.calls - coalesce(b.calls, 0)))::numeric, 1),
      round(((a.self_time - coalesce(b.self_time, 0)) * 1000 / (a.calls - coalesce(b.calls, 0)))::numeric, 1)
    from ($FUNCTIONS) a left join before b using (funcname)
    where a.calls > coalesce(b.calls, 0)
    order by a.total_time - coalesce(b.total_time, 0) desc" |
    awk -F'|' '{ printf "| `%s` | %s | %s | %s |\n", $1, $2, $3, $4 }'
}
# The claim's insert and the completion's update as idempotency_begin and idempotency_complete write them, each
# explained 30 times in a transaction that is rolled back: the statement's time and its triggers' share.
explain_json() { # sql [option, ...] [setup sql, committed first in the same session] -> one line of JSON per run
  {
    [ -z "${3:-}" ] || echo "$3;"
    for _ in $(seq 30); do
      echo "begin;"
      echo "explain (analyze, ${2:-}format json) $1;"
      echo "rollback;"
    done
  } | q | tr -d '\n' | sed 's/\]\[/]\n[/g'
  echo
}
explained() { # label < JSON lines -> one table row with medians
  node -e '
    const plans = require("fs").readFileSync(0, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l)[0]);
    const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
    const total = median(plans.map((p) => p["Execution Time"]));
    const names = [...new Set(plans.flatMap((p) => (p.Triggers ?? []).map((t) => t["Trigger Name"])))]
      .filter((n) => !n.startsWith("RI_"));
    const parts = names.map((n) =>
      `${n} ${median(plans.map((p) => (p.Triggers ?? []).find((t) => t["Trigger Name"] === n)?.Time ?? 0)).toFixed(3)}`);
    console.log(`| ${process.argv[1]} | ${total.toFixed(3)} | ${parts.join(", ") || "none"} |`);
  ' "$1"
}
explained_wal() { # label < JSON lines of EXPLAIN (ANALYZE, WAL) -> one table row with medians
  node -e '
    const plans = require("fs").readFileSync(0, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l)[0]);
    const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
    const wal = (p, k) => p.Plan[k] ?? 0;
    console.log(`| ${process.argv[1]} | ${median(plans.map((p) => p["Execution Time"])).toFixed(3)} | ` +
      `${median(plans.map((p) => wal(p, "WAL Records")))} | ${median(plans.map((p) => wal(p, "WAL Bytes")))} |`);
  ' "$1"
}
insert_sql() { # key expression -> the claim's insert, as idempotency_begin writes it
  echo "insert into public.idempotency_keys (idempotency_key, user_id, function_name, request_fingerprint, status,
  locked_until, lease_token, created_at, started_at, expires_at, purge_after)
  values ($1, null, 'process-document', repeat('a', 64), 'processing', now() + interval '30 seconds',
  gen_random_uuid(), now(), now(), now() + interval '1 day', now() + interval '1 day')"
}
INSERT=$(insert_sql "'stc-explain-' || gen_random_uuid()")
# a claim committed and deleted first, so that the session's counter rows exist, as they do for a backend that
# has served requests before
SETUP="$(insert_sql "'stc-explain-setup'"); delete from public.idempotency_keys
  where idempotency_key = 'stc-explain-setup' and user_id is null"
echo "### Where the time goes"
echo
for s in released current; do
  setting "$s"
  KEY_ID=$(q -c "$INSERT returning id") # a key in processing for the completions below
  COMPLETE="update public.idempotency_keys set status = 'completed', status_code = 201, response = '$BODY'::bytea,
    response_encoding = '$ENCODING', response_headers = '{\"content-type\": \"application/json\"}', locked_until = null,
    lease_token = null, completed_at = now(), expires_at = now() + interval '1 day' where id = '$KEY_ID'"
  echo "Statistics **$s**. Per call, from \`track_functions = all\` over 10 s of begin + complete at 1 client (self: without the tracked functions it calls):"
  echo
  echo "| function | calls | total µs per call | self µs per call |"
  echo "| --- | --- | --- | --- |"
  functions_per_call 10
  echo
  echo "EXPLAIN ANALYZE, median of 30 runs, each rolled back (ms):"
  echo
  echo "| statement | execution | of which the statistics trigger |"
  echo "| --- | --- | --- |"
    explain_json "$INSERT" "" "$SETUP" | explained "the claim's insert"
  explain_json "$COMPLETE" "" "$SETUP" | explained "the completion's update"
  q -c "delete from public.idempotency_keys where id = '$KEY_ID'"
  echo
done
setting current
# what the trigger body runs per change, each statement alone (a claim adds to its counter row and inserts an
# open key, its completion adds to the row and deletes the open key); the released helper as it was called
MINUTE="date_bin('1 minute', now() + interval '1 day', timestamptz '2000-01-01 00:00+00')"
UPSERT="insert into public.idempotency_stats_counters as c (function_name, expiry_minute, shard, keys, processing,
  failed, replays, retried, oldest_created_at, newest_created_at)
  values ('process-document', $MINUTE, pg_backend_pid(), 0, 0, 0, 0, 0, null, null)
  on conflict (function_name, expiry_minute, shard) do update set keys = c.keys + excluded.keys,
  processing = c.processing + excluded.processing, failed = c.failed + excluded.failed,
  replays = c.replays + excluded.replays, retried = c.retried + excluded.retried,
  oldest_created_at = least(c.oldest_created_at, excluded.oldest_created_at),
  newest_created_at = greatest(c.newest_created_at, excluded.newest_created_at)"
UPDATE="update public.idempotency_stats_counters c set keys = c.keys + 0, processing = c.processing - 1,
  failed = c.failed + 0, retried = c.retried + 0, oldest_created_at = least(c.oldest_created_at, null),
  newest_created_at = greatest(c.newest_created_at, null)
  where c.function_name = 'process-document' and c.expiry_minute = $MINUTE and c.shard = pg_backend_pid()"
OPEN_ID=$(q -c "insert into public.idempotency_open_keys (record_id, function_name, status, locked_until)
  values (gen_random_uuid(), 'process-document', 'processing', now() + interval '30 seconds') returning record_id")
echo "The statistics trigger's statements, each alone: EXPLAIN (ANALYZE, WAL), median of 30 runs, each rolled back:"
echo
echo "| statement | execution ms | WAL records | WAL bytes |"
echo "| --- | --- | --- | --- |"
# (the row this session's explains update is created first, with zeros, so the counts stay right)
explain_json "$UPDATE" "wal, " "$UPSERT" | explained_wal "counter update (the writer's own row, as the trigger runs it)"
explain_json "$UPSERT" "wal, " "$UPSERT" | explained_wal "the same as an upsert (as released, and as a new row's first write)"
explain_json "insert into public.idempotency_open_keys (record_id, function_name, status, locked_until)
  values (gen_random_uuid(), 'process-document', 'processing', now() + interval '30 seconds')" "wal, " |
  explained_wal "open key insert (claim)"
explain_json "delete from public.idempotency_open_keys where record_id = '$OPEN_ID'" "wal, " |
  explained_wal "open key delete (completion)"
setting released
STATS_ADD="select public.idempotency_stats_add('process-document', now() + interval '1 day', 0, 0, 0, 0, 0, null)"
explain_json "$STATS_ADD" "wal, " "$STATS_ADD" |
  explained_wal "released: the same upsert through idempotency_stats_add (pid % 16)"
setting current
q -c "delete from public.idempotency_open_keys where record_id = '$OPEN_ID'" \
  -c "select public.idempotency_stats_compact()" >/dev/null
echo

# --- 3. the view with writers' rows not folded yet ------------------------------------------------------------
view_ms() {
  { echo '\timing on'; for _ in 1 2 3 4 5; do echo 'select * from public.v_idempotency_stats;'; done; } |
    psql -X -q "$URL" -o /dev/null 2>&1 | sed -nE 's/^Time: ([0-9.]+) ms.*/\1/p' | median
}
counter_rows() { q -c "select count(*) || ' (' || count(*) filter (where shard <> 0) || ')' from public.idempotency_stats_counters"; }
echo "### v_idempotency_stats with writers' rows not yet folded (median of 5 runs in one session)"
echo
q -c "select public.idempotency_stats_compact()" >/dev/null
echo "| counters | rows (of which writers') | view ms |"
echo "| --- | --- | --- |"
echo "| folded | $(counter_rows) | $(view_ms) |"
read -r tps _ <<<"$(pgb view-claims 8 "$VIEW_SECONDS" claim.sql)"
echo "| after $VIEW_SECONDS s of begin + complete at 8 clients ($tps/s) | $(counter_rows) | $(view_ms) |"
read -r tps _ <<<"$(pgb view-replays 8 "$VIEW_SECONDS" replay.sql)"
echo "| then $VIEW_SECONDS s of replays of keys from the last 24 h at 8 clients ($tps/s) | $(counter_rows) | $(view_ms) |"
q -c "select public.idempotency_stats_compact()" >/dev/null
echo "| folded again | $(counter_rows) | $(view_ms) |"
echo
