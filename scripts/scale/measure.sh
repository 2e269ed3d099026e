#!/usr/bin/env bash
# Measures the store at the size scripts/scale/fill.sh left in the durable cluster (scripts/scale/cluster.sh)
# and prints Markdown for docs/scaling.md:
#   1. sizes: rows, heap, TOAST, each index, bytes per key
#   2. v_idempotency_stats and every query of docs/operations.md's "Dashboards" section: median of 5 runs
#   3. pgbench calling the same SQL as PostgresStore (-M prepared): claim + completion of new keys at 1 and 8
#      clients, replays at 8 clients; the HOT share of the updates of each run from pg_stat_user_tables
#   4. cleanup under load: 8 clients at a fixed rate without cleanup, then the same while the cron job's block
#      (batches of 5,000, each committed) deletes 1 million expired keys: total time, slowest batch, WAL
#      written, and the clients' p99 during the cleanup against without it
# The cron job is paused while this runs (it would clean up during the other measurements) and resumed after.
# DURATION (s, default 30) per pgbench run; RATE (transactions/s, default 400) for the cleanup comparison;
# ONLY_STATS=1 stops after section 2.
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

q -c "select cron.alter_job(jobid, active => false) from cron.job
  where jobname = 'cleanup-expired-idempotency-keys'" >/dev/null
trap 'q -c "select cron.alter_job(jobid, active => true) from cron.job
  where jobname = '"'"'cleanup-expired-idempotency-keys'"'"'" >/dev/null' EXIT

ROWS=$(q -c "select count(*) from public.idempotency_keys")
echo "## Measured $(date -u '+%Y-%m-%d %H:%M UTC') at $ROWS keys (durable: fsync, synchronous_commit, full_page_writes on)"
echo
echo "Machine: $(nproc) cores shared with other developers' work (load average $(cut -d' ' -f1-3 /proc/loadavg)): compare figures within this run."
echo

# --- 1. sizes ---------------------------------------------------------------------------------------------
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
write_workload "$WORK" pgb "$ROWS"

updates() { q -c "select n_tup_upd || ' ' || n_tup_hot_upd from pg_stat_user_tables where relid = 'public.idempotency_keys'::regclass"; }
latencies() { # log prefix [from_epoch_us to_epoch_us] -> "p50 p99" in ms
  cat "$1".* | awk -v from="${2:-0}" -v to="${3:-99999999999999999}" '
    { end_us = $5 * 1000000 + $6; if (end_us >= from && end_us <= to) print $3 }' | sort -n |
    awk '{ a[NR] = $1 } END { if (NR == 0) { print "- -"; exit } printf "%.2f %.2f %d\n", a[int(NR * 0.5) + 1] / 1000, a[int(NR * 0.99)] / 1000, NR }'
}
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

# --- 4. cleanup under load ------------------------------------------------------------------------------------
CLEANUP_BLOCK="do \$\$
declare
  v_batch record;
  v_after timestamptz := '-infinity';
  v_deleted bigint := 0;
  v_batches integer := 0;
  v_slowest double precision := 0;
  v_t0 timestamptz;
begin
  loop
    v_t0 := clock_timestamp();
    select * into v_batch from public.idempotency_cleanup_batch(5000, v_after);
    commit;
    v_slowest := greatest(v_slowest, extract(epoch from clock_timestamp() - v_t0));
    v_deleted := v_deleted + v_batch.deleted;
    v_batches := v_batches + 1;
    exit when v_batch.examined < 5000 or v_deleted >= 1000000;
    v_after := v_batch.last_purge_after;
  end loop;
  raise notice 'cleanup: % deleted in % batches, slowest batch % ms', v_deleted, v_batches,
    round((v_slowest * 1000)::numeric, 1);
end
\$\$"
echo "### Cleanup of 1 million expired keys under load (8 clients at $RATE claim+complete/s)"
echo
"$PGBENCH" -n -M prepared -c 8 -j 2 -R "$RATE" -T "$DURATION" -f "$WORK/claim.sql" -D body="$BODY" -l \
  --log-prefix="$WORK/base" "$URL" >/dev/null 2>&1
read -r base50 base99 base_n <<<"$(latencies "$WORK/base")"

"$PGBENCH" -n -M prepared -c 8 -j 2 -R "$RATE" -T $((DURATION + 150)) -f "$WORK/claim.sql" -D body="$BODY" -l \
  --log-prefix="$WORK/during" "$URL" >/dev/null 2>&1 &
BENCH_PID=$!
sleep 5
expired_before=$(q -c "select expired_pending_cleanup from public.v_idempotency_stats where function_name = '*'")
wal0=$(q -c "select pg_current_wal_lsn()")
t0=$(date +%s%6N)
notice=$(psql -X -q -v ON_ERROR_STOP=1 "$URL" -c "$CLEANUP_BLOCK" 2>&1 | sed -nE 's/.*NOTICE: +//p')
t1=$(date +%s%6N)
wal=$(q -c "select pg_wal_lsn_diff(pg_current_wal_lsn(), '$wal0')")
kill "$BENCH_PID" 2>/dev/null || true
wait "$BENCH_PID" 2>/dev/null || true
read -r dur50 dur99 dur_n <<<"$(latencies "$WORK/during" "$t0" "$t1")"
expired_after=$(q -c "select expired_pending_cleanup from public.v_idempotency_stats where function_name = '*'")
echo "| figure | value |"
echo "| --- | --- |"
echo "| cleanup | $notice |"
echo "| total time | $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f s", (b - a) / 1e6 }') |"
deleted=$(sed -nE 's/^cleanup: ([0-9]+) deleted.*/\1/p' <<<"$notice")
echo "| WAL written during it | $(awk -v w="$wal" -v d="${deleted:-0}" 'BEGIN { printf "%.0f MB (%.0f bytes per deleted key, the clients WAL included)", w / 1048576, d ? w / d : 0 }') |"
echo "| expired keys pending, before -> after (the view) | $expired_before -> $expired_after |"
echo "| clients without cleanup: p50 / p99 ms ($base_n transactions) | $base50 / $base99 |"
echo "| clients during cleanup: p50 / p99 ms ($dur_n transactions) | $dur50 / $dur99 |"
echo "| p99 during / without | $(awk -v a="$dur99" -v b="$base99" 'BEGIN { printf "%.2f", a / b }') |"
echo
echo "### Sizes after the cleanup (before vacuum reuses the space)"
echo
ROWS=$(q -c "select count(*) from public.idempotency_keys")
echo "| part | size | bytes per key ($ROWS keys) |"
echo "| --- | --- | --- |"
sizes
