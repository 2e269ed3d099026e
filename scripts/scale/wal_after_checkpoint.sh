#!/usr/bin/env bash
# WAL written per claim + completion in consecutive windows after a checkpoint, and how much of it is
# full-page images (pg_waldump --stats over each window's WAL): the first write to a page after a checkpoint
# logs the whole page, so WAL per request is highest right after one and falls as the pages are touched
# again. On the durable scale cluster (scripts/scale/cluster.sh) after scripts/scale/fill.sh; the cleanup job
# is paused meanwhile. WINDOWS (default 6) of WINDOW_SECONDS (default 20), one pgbench client.
set -euo pipefail
source "$(dirname "$0")/../lib/env.sh"
source "$ROOT/scripts/scale/_workload.sh"
URL="$("$ROOT/scripts/scale/cluster.sh" url)"
SCALE_DIR="${SCALE_DIR:-/work/scale-db/data}"
WINDOWS="${WINDOWS:-6}" SECONDS_PER="${WINDOW_SECONDS:-20}"
WORK="${WORK:-$(dirname "$SCALE_DIR")/wal-after-checkpoint}"
mkdir -p "$WORK"
q() { psql -X -A -t -q -v ON_ERROR_STOP=1 "$URL" "$@"; }

write_workload "$WORK" walchk "$(q -c "select count(*) from public.idempotency_keys")"
pause_cleanup_job
trap resume_cleanup_job EXIT
sleep 65 # a cleanup run already under way ends within its 50-second budget
q -c "checkpoint"
echo "| window after the checkpoint | claim+complete | WAL bytes per claim+complete | of which full-page images |"
echo "| --- | --- | --- | --- |"
for ((w = 0; w < WINDOWS; w++)); do
  l0=$(q -c "select pg_current_wal_lsn()")
  n=$("$PG_BIN/pgbench" -n -M prepared -c 1 -T "$SECONDS_PER" -f "$WORK/claim.sql" -D body="$BODY" "$URL" \
    2>/dev/null | sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p')
  l1=$(q -c "select pg_current_wal_lsn()")
  bytes=$(q -c "select pg_wal_lsn_diff('$l1', '$l0')::bigint")
  fpi=$("$PG_BIN/pg_waldump" -p "$SCALE_DIR/pg_wal" -s "$l0" -e "$l1" --stats 2>/dev/null |
    awk '$1 == "Total" { print $5 }')
  echo "| $((w * SECONDS_PER))-$(((w + 1) * SECONDS_PER)) s | $n | $((bytes / n)) | $((${fpi:-0} / n)) |"
done
