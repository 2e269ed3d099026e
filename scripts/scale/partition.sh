#!/usr/bin/env bash
# What time-partitioned storage would give, measured on the durable scale cluster next to the real table:
# 1 million keys copied from idempotency_keys into one daily partition of a table partitioned by created_at
# (what pg_partman creates and retires), then that partition dropped: time and WAL, to set against the
# batched cleanup's figures in scripts/scale/measure.sh. And the unique index the claim rests on, tried on it.
# Prints Markdown for docs/scaling.md; leaves nothing behind.
set -euo pipefail
source "$(dirname "$0")/../lib/env.sh"
URL="$("$ROOT/scripts/scale/cluster.sh" url)"
q() { psql -X -A -t -q -v ON_ERROR_STOP=1 "$URL" "$@"; }
ms() { date +%s%3N; }

q -c "drop table if exists public.scale_part" -c "
  create table public.scale_part (like public.idempotency_keys including defaults) partition by range (created_at)" \
  -c "alter table public.scale_part enable row level security" -c "
  create table public.scale_part_day partition of public.scale_part
    for values from ('-infinity') to ('infinity')" -c "
  create index on public.scale_part (purge_after)" -c "
  insert into public.scale_part select * from public.idempotency_keys limit 1000000" -c "checkpoint"
unique=$(q -c "create unique index scale_part_key_digest_unique
  on public.scale_part (public.idempotency_key_digest(user_id, idempotency_key))" 2>&1 | sed -n 's/^ERROR: *//p' || true)
wal0=$(q -c "select pg_current_wal_lsn()")
t0=$(ms)
q -c "drop table public.scale_part_day"
t1=$(ms)
wal=$(q -c "select pg_wal_lsn_diff(pg_current_wal_lsn(), '$wal0')")
q -c "drop table public.scale_part"
echo "| figure | value |"
echo "| --- | --- |"
echo "| drop a partition of 1,000,000 keys | $((t1 - t0)) ms, $(awk -v w="$wal" 'BEGIN { printf "%.1f kB", w / 1024 }') of WAL |"
echo "| the claim's unique index on idempotency_key_digest(user_id, idempotency_key), on the partitioned table | ${unique:-accepted} |"
