#!/usr/bin/env bash
# The table as traffic builds it, where fill.sh inserts every row complete: pgbench claims new keys and
# completes them through the store's SQL functions (as measure.sh's claim+complete, -M prepared), on an emptied
# idempotency_keys, in ROUNDS runs of SECONDS with a VACUUM after each (what autovacuum does between them in
# production). Prints one Markdown row: bytes per key (heap, each index, total) and the HOT share of the
# completions from pg_stat_user_tables.
#   scripts/scale/traffic.sh FILLFACTOR CLIENTS [HANDLER_MS] [SECONDS] [ROUNDS]
# HANDLER_MS (default 0): each client sleeps that long between its claim and its completion, a handler's run
# time. Each client completes its claim before it claims again, so every connection has one claim open at a
# time: the pages a connection inserts into see one claim grow at once. (A pooled connection that claims for
# many requests while their handlers run leaves many claims open on one page: docs/scaling.md.)
# It empties the table: run it on a cluster of its own (SCALE_DIR=... SCALE_DB_PORT=... cluster.sh start); it
# refuses a table of over 100,000 keys. It leaves the table's fillfactor at 90.
set -euo pipefail
source "$(dirname "$0")/../lib/env.sh"
URL="$("$ROOT/scripts/scale/cluster.sh" url)"
FF=${1:?usage: $0 FILLFACTOR CLIENTS [HANDLER_MS] [SECONDS] [ROUNDS]}
CLIENTS=${2:?usage: $0 FILLFACTOR CLIENTS [HANDLER_MS] [SECONDS] [ROUNDS]}
HANDLER_MS=${3:-0} SECONDS_PER_ROUND=${4:-60} ROUNDS=${5:-4}
WORK="${WORK:-/work/scale-db/traffic}"
mkdir -p "$WORK"
q() { psql -X -A -t -q -v ON_ERROR_STOP=1 "$URL" "$@"; }

[ "$(q -c "select count(*) > 100000 from public.idempotency_keys")" = f ] ||
  die "idempotency_keys holds over 100,000 keys (a fill?): this script empties it; use a cluster of its own"

source "$ROOT/scripts/scale/_workload.sh"
one_body
cat >"$WORK/claim.sql" <<SQL
\set r random(1, 9000000000000000)
\set u random(0, 1099)
select record_id, lease_token from public.idempotency_begin('pgb-' || :r::text, case when :u >= 1000 then null else md5('scale-user-' || :u::text)::uuid end, 'process-document', md5(:r::text) || md5((:r::bigint + 1)::text), 86400, 30) \gset
\sleep $HANDLER_MS ms
select public.idempotency_complete(:record_id::uuid, :lease_token::uuid, 201, :body::bytea, '$ENCODING', '{"content-type": "application/json"}'::jsonb);
SQL

pause_cleanup_job
trap 'q -c "alter table public.idempotency_keys set (fillfactor = 90)" >/dev/null; resume_cleanup_job' EXIT
q -c "insert into auth.users (id, email)
  select md5('scale-user-' || j)::uuid, 'scale-' || j || '@example.com' from generate_series(0, 999) j
  on conflict do nothing" \
  -c "truncate public.idempotency_steps, public.idempotency_keys" \
  -c "alter table public.idempotency_keys set (fillfactor = $FF)" \
  -c "select pg_stat_reset_single_table_counters('public.idempotency_keys'::regclass)" >/dev/null
for ((round = 1; round <= ROUNDS; round++)); do
  "$PG_BIN/pgbench" -n -M prepared -c "$CLIENTS" -j "$((CLIENTS < 2 ? CLIENTS : 2))" -T "$SECONDS_PER_ROUND" \
    -f "$WORK/claim.sql" -D body="$BODY" "$URL" >"$WORK/pgbench.log" 2>&1 || { cat "$WORK/pgbench.log"; exit 1; }
  q -c "vacuum public.idempotency_keys"
done
sleep 1.5 # the last run's statistics reach pg_stat_user_tables
q -F ' | ' -c "
  with n as (select count(*) as keys from public.idempotency_keys)
  select $FF, $CLIENTS, $HANDLER_MS, n.keys,
    s.n_tup_hot_upd || ' of ' || s.n_tup_upd || ' (' || round(100.0 * s.n_tup_hot_upd / greatest(s.n_tup_upd, 1), 1) || ' %)',
    pg_relation_size('public.idempotency_keys') / n.keys,
    (select string_agg(pg_relation_size(i.indexrelid) / n.keys || ' ' || i.indexrelid::regclass, ', '
      order by i.indexrelid) from pg_index i where i.indrelid = 'public.idempotency_keys'::regclass),
    pg_total_relation_size('public.idempotency_keys') / n.keys
  from n, pg_stat_user_tables s where s.relid = 'public.idempotency_keys'::regclass" | sed 's/^/| /; s/$/ |/'
