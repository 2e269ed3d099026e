#!/usr/bin/env bash
# Fills idempotency_keys in the durable scale cluster (scripts/scale/cluster.sh) with ROWS keys (default 10
# million) created evenly over the last 48 hours with a 24-hour TTL, so that half are expired: 96 % completed
# with a body (a process-document answer of ~536 bytes of JSON, ~224 stored as zdict; ~335 as br with
# DICTIONARY=none), 3 % failed, 1 %
# processing; 1 key in 10 without a user, the others spread over 1,000 users; 1 completed key in 7 replayed.
# Each row is what the toolkit writes since 20261130000600: the fingerprint's first 32 hex digits, the body as
# scripts/scale/bodies.ts makes and encodes it with the codec (zdict: process-document's dictionary), the
# replayable headers.
# Rows go in time order, in transactions of a million, with the indexes in place (as traffic builds them);
# triggers are off for the load and the counters are rebuilt from the table afterwards, then VACUUM ANALYZE.
set -euo pipefail
source "$(dirname "$0")/../lib/env.sh"
URL="$("$ROOT/scripts/scale/cluster.sh" url)"
ROWS="${ROWS:-10000000}"
CHUNK=1000000
# FILL_FROM / FILL_TO write only rows [FROM, TO) of the ROWS, keeping those already there when FROM > 0 (to add
# back a range, e.g. the expired half)
FILL_FROM="${FILL_FROM:-0}"
FILL_TO="${FILL_TO:-$ROWS}"
source "$ROOT/scripts/scale/_workload.sh"
ENCODING=$(body_encoding)
q() { PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 "$URL" "$@"; }

say "fill: $ROWS keys into $URL"
# the every-minute cleanup would delete the expired half while it is being written: paused until the end
pause_cleanup_job
trap resume_cleanup_job EXIT
[ "$FILL_FROM" -eq 0 ] && q -c "truncate public.idempotency_keys cascade"
q -c "
  insert into auth.users (id, email)
  select md5('scale-user-' || j)::uuid, 'scale-' || j || '@example.com' from generate_series(0, 999) j
  on conflict do nothing"
q -c "create unlogged table if not exists public.scale_bodies (i int primary key, body bytea not null)" \
  -c "alter table public.scale_bodies enable row level security" -c "truncate public.scale_bodies"
deno run -A -q "$ROOT/scripts/scale/bodies.ts" 1000 | awk '{ print NR - 1 "\t" $0 }' |
  q -c "copy public.scale_bodies (i, body) from stdin"

start=$(date +%s)
for ((lo = FILL_FROM; lo < FILL_TO; lo += CHUNK)); do
  hi=$((lo + CHUNK < FILL_TO ? lo + CHUNK : FILL_TO))
  q -c "set session_replication_role = replica" -c "
  insert into public.idempotency_keys (
    id, idempotency_key, user_id, function_name, request_fingerprint, status, response, response_encoding,
    status_code, response_headers, error_message, locked_until, lease_token, attempt_count, replay_count,
    last_replayed_at, created_at, started_at, completed_at, expires_at, purge_after
  )
  select
    -- the migration's UUID v7, with the key's own creation time
    encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
      placing substring(int8send((extract(epoch from r.t) * 1000)::bigint) from 3) from 1 for 6), 52, 1), 53, 1),
      'hex')::uuid,
    md5(r.i || '-key')::uuid::text,
    case when r.i % 10 = 0 then null else md5('scale-user-' || (r.i % 1000))::uuid end,
    (array['process-document', 'start-training', 'generate-training-data'])[1 + r.i % 3],
    -- what idempotency_begin keeps of the 64 hex digits PostgresStore sends (md5(i) || md5(i + 1))
    md5(r.i::text),
    r.status,
    case when r.status = 'completed' then (select b.body from public.scale_bodies b where b.i = r.i % 1000) end,
    case when r.status = 'completed' then '$ENCODING' else 'identity' end,
    case r.status when 'completed' then 201 when 'failed' then 500 end,
    case when r.status = 'completed' then '{\"content-type\": \"application/json\"}'::jsonb end,
    case when r.status = 'failed' then 'handler threw' end,
    case when r.status = 'processing' then r.t + interval '30 seconds' end,
    case when r.status = 'processing' then gen_random_uuid() end,
    1 + (r.status = 'failed')::int,
    case when r.status = 'completed' and r.i % 7 = 0 then 1 else 0 end,
    case when r.status = 'completed' and r.i % 7 = 0 then r.t + interval '5 seconds' end,
    r.t, r.t,
    case when r.status <> 'processing' then r.t + r.ms end,
    r.t + interval '24 hours' + case when r.status = 'completed' then r.ms else interval '0' end,
    r.t + interval '24 hours'
  from (
    select i, now() - interval '48 hours' + (interval '48 hours' / $ROWS) * i as t,
      make_interval(secs => (i % 200) / 1000.0 + 0.05) as ms,
      case when i % 100 < 96 then 'completed' when i % 100 < 99 then 'failed' else 'processing' end as status
    from generate_series($lo, $hi - 1) i
  ) r"
  echo "fill: $hi rows ($(($(date +%s) - start)) s)"
done
q -c "select public.idempotency_stats_rebuild()" >/dev/null
q -c "drop table public.scale_bodies"
q -c "vacuum analyze public.idempotency_keys" -c "checkpoint"
echo "fill: done, $ROWS rows in $(($(date +%s) - start)) s (rebuild of the counters and vacuum included)"
