#!/usr/bin/env bash
# Measures the store at the size scripts/scale/fill.sh left in the durable cluster (scripts/scale/cluster.sh)
# and prints Markdown for docs/scaling.md:
#   1. sizes: rows, heap, TOAST, each index, bytes per key
#   2. v_idempotency_stats and every query of docs/operations.md's "Dashboards" section: median of 5 runs
#   3. pgbench calling the same SQL as PostgresStore (-M prepared): claim + completion of new keys at 1 and 8
#      clients, replays at 8 clients; the HOT share of the updates of each run from pg_stat_user_tables
#   4. cleanup under load: 8 clients at a fixed rate, in rounds of a window without cleanup then one while the
#      cron job's own command deletes a share of 1 million expired keys: per round the clients' p50/p99, what
#      they wait on, the job's figures (batches, slowest, paused), the WAL and full-page images it wrote; then
#      the median p99 of each kind of window and their ratio
# The cron job is paused while this runs (it would clean up during the other measurements), then put back as it was.
# DURATION (s, default 30) per pgbench run; RATE (transactions/s, default 400) for the cleanup comparison;
# ONLY_STATS=1 stops after section 2; ONLY_CLEANUP=1 runs section 4 alone (ROUNDS, CLEANUP_KEYS, WINDOW: there).
set -euo pipefail
source "$(dirname "$0")/../lib/env.sh"
source "$(dirname "$0")/_workload.sh"
URL="$("$ROOT/scripts/scale/cluster.sh" url)"
DURATION="${DURATION:-30}"
RATE="${RATE:-400}"
WORK="${WORK:-/work/scale-db/measure}"
PGBENCH="$PG_BIN/pgbench"
mkdir -p "$WORK"
rm -f "$WORK"/*
q() { psql -X -A -t -q -v ON_ERROR_STOP=1 "$URL" "$@"; }

pause_cleanup_job
trap resume_cleanup_job EXIT

ROWS=$(q -c "select count(*) from public.idempotency_keys")
echo "## Measured $(date -u '+%Y-%m-%d %H:%M UTC') at $ROWS keys (durable: fsync, synchronous_commit, full_page_writes on)"
echo
echo "Machine: $(nproc) cores shared with other developers' work (load average $(cut -d' ' -f1-3 /proc/loadavg)): compare figures within this run."
echo
write_workload "$WORK" pgb "$ROWS"
sizes() {
  q -F '|' -c "
    select 'heap', pg_relation_size('public.idempotency_keys')
    union all select 'TOAST', coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0)
      from pg_class c where c.oid = 'public.idempotency_keys'::regclass
    union all select i.indexrelid::regclass::text, pg_relation_size(i.indexrelid)
      from pg_index i where i.indrelid = 'public.idempotency_keys'::regclass
    union all select 'total', pg_total_relation_size('public.idempotency_keys')" |
    awk -F'|' -v rows="$ROWS" '{ printf "| %s | %.0f MB | %.0f |\n", $1, $2 / 1048576, $2 / rows }'
}
latencies() { # log prefix [from_epoch_us to_epoch_us] -> "p50 p99" in ms
  cat "$1".* | awk -v from="${2:-0}" -v to="${3:-99999999999999999}" '
    { end_us = $5 * 1000000 + $6; if (end_us >= from && end_us <= to) print $3 }' | sort -n |
    awk '{ a[NR] = $1 } END { if (NR == 0) { print "- -"; exit } printf "%.2f %.2f %d\n", a[int(NR * 0.5) + 1] / 1000, a[int(NR * 0.99)] / 1000, NR }'
}

if [ "${ONLY_CLEANUP:-0}" != 1 ]; then

# --- 1. sizes ---------------------------------------------------------------------------------------------
echo "### Sizes"
echo
echo "| part | size | bytes per key |"
echo "| --- | --- | --- |"
sizes
echo
q -F '|' -c "select format('stored body (%s), average bytes', response_encoding), round(avg(length(response)))
  from (select response, response_encoding from public.idempotency_keys where status = 'completed' limit 100000) s
  group by response_encoding order by count(*) desc limit 1" |
  awk -F'|' '{ printf "%s: %s\n\n", $1, $2 }'

# --- 2. stats view and dashboards -------------------------------------------------------------------------
median_ms() { # sql -> median of 5 timed runs, in ms
  local sql=$1
  { echo '\timing on'; for _ in 1 2 3 4 5; do echo "$sql"; echo ';'; done; } |
    psql -X -q "$URL" -o /dev/null 2>&1 | sed -nE 's/^Time: ([0-9.]+) ms.*/\1/p' | sort -n | sed -n 3p
}
echo "### Stats view and dashboards (median of 5 runs)"
echo
echo "| query | ms |"
echo "| --- | --- |"
echo "| \`select * from public.v_idempotency_stats\` | $(median_ms 'select * from public.v_idempotency_stats') |"
# every sql block of the Dashboards section of docs/operations.md, as written there
mapfile -d '' DASHBOARDS < <(awk '
  /^## Dashboards/ { on = 1; next } /^## / { on = 0 }
  on && /^```sql/ { inblock = 1; buf = ""; next }
  on && inblock && /^```/ { inblock = 0; printf "%s%c", buf, 0; next }
  on && inblock { buf = buf $0 "\n" }' "$ROOT/docs/operations.md")
for sql in "${DASHBOARDS[@]}"; do
  title=$(head -1 <<<"$sql" | cut -c1-70)
  echo "| \`${title//|/\\|}...\` | $(median_ms "${sql%;*}") |"
done
echo
[ "${ONLY_STATS:-0}" = 1 ] && exit 0

# --- 3. pgbench ---------------------------------------------------------------------------------------------

updates() { q -c "select n_tup_upd || ' ' || n_tup_hot_upd from pg_stat_user_tables where relid = 'public.idempotency_keys'::regclass"; }
bench() { # name clients script [pgbench args...] -> one table row
  local name=$1 clients=$2 script=$3; shift 3
  local before after tps lat
  sleep 1.5 # the previous run's statistics reach pg_stat_user_tables
  before=$(updates)
  wal0=$(q -c "select pg_current_wal_lsn()")
  tps=$("$PGBENCH" -n -M prepared -c "$clients" -j "$((clients < 2 ? clients : 2))" -T "$DURATION" \
    -f "$WORK/$script" -D body="$BODY" -D lo="$LO" -D hi="$HI" -l --log-prefix="$WORK/$name-$clients" "$@" "$URL" 2>&1 |
    sed -nE 's/^tps = ([0-9.]+).*/\1/p')
  wal=$(q -c "select pg_wal_lsn_diff(pg_current_wal_lsn(), '$wal0')")
  sleep 1.5
  after=$(updates)
  lat=$(latencies "$WORK/$name-$clients")
  read -r b_upd b_hot <<<"$before"; read -r a_upd a_hot <<<"$after"
  local upd=$((a_upd - b_upd)) hot=$((a_hot - b_hot))
  read -r p50 p99 n <<<"$lat"
  printf '| %s | %s | %.0f | %s | %s | %s of %s (%s %%) | %s |\n' "$name" "$clients" "$tps" "$p50" "$p99" "$hot" \
    "$upd" "$(awk -v h="$hot" -v u="$upd" 'BEGIN { printf "%.1f", u ? 100 * h / u : 0 }')" \
    "$(awk -v w="$wal" -v n="$n" 'BEGIN { printf "%.0f", n ? w / n : 0 }')"
}
echo "### pgbench: the store's SQL, ${DURATION} s per run"
echo
echo "| run | clients | transactions/s | p50 ms | p99 ms | HOT updates | WAL bytes per transaction |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
BENCH_FROM=$(q -c "select now()")
bench "claim+complete" 1 claim.sql
bench "claim+complete" 8 claim.sql
bench "replay" 8 replay.sql
echo
echo "A claim+complete transaction is the two calls a first request makes (idempotency_begin, then"
echo "idempotency_complete with a ${#BODY}-character hex body), each committed on its own."
echo
# The heap as traffic lays it out (a claim inserted small, its completion grown in place), against the fill's
# rows inserted complete: the pages that hold only keys claimed above (a page shared with the fill's keys
# would mix the two). Before vacuum: each claim's old row version still takes room on its page until VACUUM
# reclaims it for later claims (docs/scaling.md, "Bytes per key", has the figure with vacuum).
q -F ' ' -c "select count(*), coalesce(sum(n), 0) from (
    select (ctid::text::point)[0] as page, count(*) as n,
      count(*) filter (where created_at >= '$BENCH_FROM') as fresh
    from public.idempotency_keys group by 1
  ) p where fresh = n" | {
  read -r pages keys
  echo "Heap as traffic lays it out, before vacuum: $pages pages hold only keys claimed and completed above,"
  echo "$keys of them: $(awk -v p="$pages" -v k="$keys" 'BEGIN { printf "%.0f", k ? p * 8192 / k : 0 }') bytes of heap per key."
}
echo

fi

# --- 4. cleanup under load ------------------------------------------------------------------------------------
# One pgbench run (8 clients at RATE) for the whole section; its transactions are sorted into windows by the
# time they ended. ROUNDS rounds, each a window of WINDOW seconds without cleanup, then one while the cleanup
# deletes its share of CLEANUP_KEYS: interleaved, so that a change in the machine's load (2 shared cores) falls
# on both kinds of window. The cleanup is the cron job's own command, read from cron.job, run by psql with
# idempotency.cleanup_max_keys set to the round's share: what is measured is what is scheduled. CLEANUP_SETTINGS
# adds settings of the job's own (e.g. "-c idempotency.cleanup_pause_ratio=0.5"); several, separated by ';',
# take turns round by round (A, B, ...), to compare them in one run. A sampler reads pg_stat_activity every
# 0.1 s: what the clients wait on in each window, and whether an autovacuum worker runs.
ROUNDS="${ROUNDS:-3}"
CLEANUP_KEYS="${CLEANUP_KEYS:-1000000}"
WINDOW="${WINDOW:-20}"
CLEANUP_SQL=$(q -c "select command from cron.job where jobname = 'cleanup-expired-idempotency-keys'")
IFS=';' read -r -a SETTINGS <<<"${CLEANUP_SETTINGS:-}"
[ "${#SETTINGS[@]}" -gt 0 ] || SETTINGS=("")
LABELS=(A B C D E F)
SHARE=$(((CLEANUP_KEYS + ROUNDS - 1) / ROUNDS))
now_us() { date +%s%6N; }
walstats() { q -F ' ' -c "select w.wal_bytes, w.wal_fpi, w.wal_buffers_full,
  b.checkpoints_timed + b.checkpoints_req from pg_stat_wal w, pg_stat_bgwriter b"; }
waits() { # from_us to_us -> the clients' top wait events (share of their samples)|share of ticks with autovacuum
  local f="$WORK/waits"
  awk -F'|' -v from="$1" -v to="$2" '$1 * 1000000 >= from && $1 * 1000000 <= to && $2 == "client" { print $3 }' "$f" |
    sort | uniq -c | sort -rn | awk '{ n[NR] = $1; e[NR] = $2; s += $1 }
      END { for (i = 1; i <= NR && i <= 4; i++) printf "%s%s %.0f %%", (i > 1 ? ", " : ""), e[i], 100 * n[i] / s }'
  printf '|'
  awk -F'|' -v from="$1" -v to="$2" '$1 * 1000000 >= from && $1 * 1000000 <= to {
      t[$1] = 1; if ($2 == "autovacuum") a[$1] = 1 }
    END { for (k in t) nt++; for (k in a) na++; printf "%.0f %%\n", nt ? 100 * na / nt : 0 }' "$f"
}
echo "### Cleanup of $CLEANUP_KEYS expired keys under load (8 clients at $RATE claim+complete/s, $ROUNDS rounds)"
echo
for i in "${!SETTINGS[@]}"; do
  echo "Settings ${LABELS[$i]}: $(PGOPTIONS="${SETTINGS[$i]}" q -F ', ' -c "select 'batches of ' || batch_size,
    'pause ratio ' || pause_ratio from public.idempotency_cleanup_settings()")${SETTINGS[$i]:+ (\`${SETTINGS[$i]}\`)}."
  echo
done
echo "Each round's share: $SHARE keys."
echo
"$PGBENCH" -n -M prepared -c 8 -j 2 -R "$RATE" -T $((ROUNDS * (WINDOW + 75) + 30)) -f "$WORK/claim.sql" \
  -D body="$BODY" -l --log-prefix="$WORK/load" "$URL" >/dev/null 2>&1 &
BENCH_PID=$!
# what pgbench's clients, the cleanup and autovacuum are doing, every 0.1 s (each query its own transaction)
echo "select extract(epoch from clock_timestamp())::numeric(16, 1),
    case when backend_type = 'autovacuum worker' then 'autovacuum'
      when application_name = 'pgbench' then 'client' else 'cleanup' end,
    coalesce(wait_event_type || ':' || wait_event, 'CPU')
  from pg_stat_activity
  where pid <> pg_backend_pid() and state = 'active'
    and (application_name in ('pgbench', 'idempotency-cleanup') or backend_type = 'autovacuum worker')
\watch 0.1" | psql -X -A -t -q "$URL" >"$WORK/waits" 2>/dev/null &
SAMPLER_PID=$!
expired_before=$(q -c "select expired_pending_cleanup from public.v_idempotency_stats where function_name = '*'")
sleep 5
ROWS_OUT=()
for ((r = 1; r <= ROUNDS; r++)); do
  # autovacuum is left to run as it would (it removes the dead rows of the cleanup before): its share of each
  # window is reported; the gap lets the previous cleanup's last commits reach the log
  sleep 5
  read -r b0 f0 full0 c0 <<<"$(walstats)"
  w0=$(now_us); sleep "$WINDOW"; w1=$(now_us)
  read -r b1 f1 full1 c1 <<<"$(walstats)"
  ROWS_OUT+=("without $r $w0 $w1 $((b1 - b0)) $((f1 - f0)) $((full1 - full0)) $((c1 - c0))")
  read -r b0 f0 full0 c0 <<<"$(walstats)"
  t0=$(now_us)
  set_i=$(((r - 1) % ${#SETTINGS[@]}))
  notice=$(PGAPPNAME=idempotency-cleanup PGOPTIONS="-c idempotency.cleanup_max_keys=$SHARE ${SETTINGS[$set_i]}" \
    psql -X -q -v ON_ERROR_STOP=1 "$URL" -c "$CLEANUP_SQL" 2>&1 | sed -nE 's/.*NOTICE: +//p')
  t1=$(now_us)
  read -r b1 f1 full1 c1 <<<"$(walstats)"
  ROWS_OUT+=("${LABELS[$set_i]} $r $t0 $t1 $((b1 - b0)) $((f1 - f0)) $((full1 - full0)) $((c1 - c0)) $notice")
done
printf '%s\n' "${ROWS_OUT[@]}" >"$WORK/windows" # kind round from_us to_us WAL FPI buffers-full checkpoints notice
sleep 2
kill "$SAMPLER_PID" "$BENCH_PID" 2>/dev/null || true
wait "$BENCH_PID" "$SAMPLER_PID" 2>/dev/null || true
expired_after=$(q -c "select expired_pending_cleanup from public.v_idempotency_stats where function_name = '*'")

echo "| round | window | s | transactions | p50 ms | p99 ms | clients' waits (share of samples) | autovacuum running (share of samples) | WAL written | checkpoints started | cleanup (the job's notice) |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
: >"$WORK/p99"
for row in "${ROWS_OUT[@]}"; do
  read -r kind r from to wal fpi full ckpt notice <<<"$row"
  read -r p50 p99 n <<<"$(latencies "$WORK/load" "$from" "$to")"
  echo "$kind $p99" >>"$WORK/p99"
  IFS='|' read -r wait_share av_share <<<"$(waits "$from" "$to")"
  secs=$(awk -v a="$from" -v b="$to" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')
  deleted=$(sed -nE 's/^[^0-9]*([0-9]+) deleted.*/\1/p' <<<"$notice")
  walcell=$(awk -v w="$wal" -v f="$fpi" -v d="${deleted:-0}" -v full="$full" 'BEGIN {
    printf "%.0f MB, %d full-page images", w / 1048576, f
    if (d) printf ", %.0f bytes per deleted key", w / d
    if (full) printf ", WAL buffers full %d times", full }')
  echo "| $r | $([ "$kind" = without ] && echo without || echo "during cleanup ($kind)") | $secs | $n | $p50 | $p99 | $wait_share | $av_share | $walcell | $ckpt | $notice |"
done
echo
med() { grep "^$1 " "$WORK/p99" | cut -d' ' -f2 | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
med_without=$(med without)
echo "| figure | value |"
echo "| --- | --- |"
echo "| expired keys pending, before -> after (the view) | $expired_before -> $expired_after |"
echo "| clients' p99 without cleanup, median of the rounds | $med_without ms |"
for i in "${!SETTINGS[@]}"; do
  l=${LABELS[$i]}
  med_with=$(med "$l")
  total_s=$(printf '%s\n' "${ROWS_OUT[@]}" | awk -v l="$l" '$1 == l { s += ($4 - $3) / 1e6 } END { printf "%.1f", s }')
  total_deleted=$(printf '%s\n' "${ROWS_OUT[@]}" | sed -nE "s/^$l .*[^0-9]([0-9]+) deleted.*/\\1/p" | paste -sd+ | bc)
  echo "| settings $l: keys deleted, total time of its cleanup windows | $total_deleted in $total_s s |"
  echo "| settings $l: clients' p99 during cleanup, median of the rounds | $med_with ms |"
  echo "| settings $l: ratio of the medians (during / without) | **$(awk -v a="$med_with" -v b="$med_without" 'BEGIN { printf "%.2f", a / b }')** |"
done
echo "| load average after | $(cut -d' ' -f1-3 /proc/loadavg) |"
echo
echo "### Sizes after the cleanup (before vacuum reuses the space)"
echo
ROWS=$(q -c "select count(*) from public.idempotency_keys")
echo "| part | size | bytes per key ($ROWS keys) |"
echo "| --- | --- | --- |"
sizes
