# Sourced by measure.sh, stats_cost.sh, traffic.sh and fill.sh: the pgbench workload that calls the store's
# SQL as PostgresStore does and the stored body, written once so every script measures the same thing.
#   write_workload DIR PREFIX ROWS   writes DIR/claim.sql (idempotency_begin + idempotency_complete of a new key
#                                    PREFIX-<n>, each committed on its own) and DIR/replay.sql (a completed key
#                                    that fill.sh created in the last 24 hours: i % 100 < 96, i >= ROWS / 2), and
#                                    sets BODY and ENCODING (one_body), LO and HI (the replay range), which the
#                                    scripts pass to pgbench with -D.
#   body_encoding                    prints the encoding bodies.ts writes: zdict (process-document's response
#                                    dictionary), br with DICTIONARY=none
#   one_body                         sets BODY (one stored body as bodies.ts makes it, hex) and ENCODING
#   pause_cleanup_job                pauses the every-minute cleanup job, which would delete keys while a script
#                                    writes or measures them; resume_cleanup_job (the caller's EXIT trap) puts
#                                    it back as it was, so a job paused by hand stays paused
body_encoding() { if [ "${DICTIONARY:-}" = none ]; then echo br; else echo zdict; fi; }

CLEANUP_JOB="select jobid from cron.job where jobname = 'cleanup-expired-idempotency-keys'"
cleanup_job_sql() { psql -X -A -t -q -v ON_ERROR_STOP=1 "$URL" -c "$1"; }
pause_cleanup_job() {
  CLEANUP_JOB_ACTIVE=$(cleanup_job_sql "select active::text from cron.job where jobid = ($CLEANUP_JOB)")
  cleanup_job_sql "select cron.alter_job(($CLEANUP_JOB), active => false)" >/dev/null
}
resume_cleanup_job() {
  cleanup_job_sql "select cron.alter_job(($CLEANUP_JOB), active => ${CLEANUP_JOB_ACTIVE:-true})" >/dev/null
}

one_body() {
  BODY=$(deno run -A -q "$ROOT/scripts/scale/bodies.ts" 1 2>/dev/null | sed 's/^\\\\/\\/')
  ENCODING=$(body_encoding)
}

write_workload() {
  local dir=$1 prefix=$2 rows=$3
  one_body
  cat >"$dir/claim.sql" <<SQL
\\set r random(1, 9000000000000000)
\\set u random(0, 1099)
select record_id, lease_token from public.idempotency_begin('$prefix-' || :r::text, case when :u >= 1000 then null else md5('scale-user-' || :u::text)::uuid end, 'process-document', md5(:r::text) || md5((:r::bigint + 1)::text), 86400, 30) \\gset
select public.idempotency_complete(:record_id::uuid, :lease_token::uuid, 201, :body::bytea, '$ENCODING', '{"content-type": "application/json"}'::jsonb);
SQL
  cat >"$dir/replay.sql" <<'SQL'
\set j random(:lo, :hi)
\set m random(0, 95)
\set i :j * 100 + :m
select outcome from public.idempotency_begin(md5(:i::text || '-key')::uuid::text, case when :i::bigint % 10 = 0 then null else md5('scale-user-' || (:i::bigint % 1000)::text)::uuid end, (array['process-document', 'start-training', 'generate-training-data'])[1 + :i::bigint % 3], md5(:i::text) || md5((:i::bigint + 1)::text), 86400, 30);
SQL
  LO=$((rows / 200 + 1)) HI=$((rows / 100 - 2))
}
