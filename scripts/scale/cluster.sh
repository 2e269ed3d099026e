#!/usr/bin/env bash
# A PostgreSQL 15 cluster of its own for the scale measurements and the soak, apart from the CI stack, with
# production durability (fsync, synchronous_commit, full_page_writes on, as Supabase runs) and pg_cron.
#   scripts/scale/cluster.sh start   create it if missing (Debian's postgresql-15), start it, apply the
#                                    project's bootstrap (roles, auth schema) and every migration (Supabase CLI)
#   scripts/scale/cluster.sh stop    stop it
#   scripts/scale/cluster.sh url     print its connection URL
# SCALE_DIR (default /work/scale-db/data) and SCALE_DB_PORT (default 55323) choose where and on which port.
set -euo pipefail
source "$(dirname "$0")/../lib/env.sh"

SCALE_DIR="${SCALE_DIR:-/work/scale-db/data}"
SCALE_DB_PORT="${SCALE_DB_PORT:-55323}"
SCALE_URL="postgresql://postgres:postgres@127.0.0.1:${SCALE_DB_PORT}/postgres"
SCALE_LOG="$(dirname "$SCALE_DIR")/$(basename "$SCALE_DIR").log"

as_db_owner() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

init() {
  [ -f "$SCALE_DIR/PG_VERSION" ] && return 0
  say "creating a durable cluster in $SCALE_DIR"
  mkdir -p "$SCALE_DIR"
  [ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$(dirname "$SCALE_DIR")"
  local pwfile; pwfile=$(mktemp) && echo postgres >"$pwfile" && chmod 644 "$pwfile"
  as_db_owner "$PG_BIN/initdb" -D "$SCALE_DIR" -U postgres --pwfile="$pwfile" -A scram-sha-256 \
    --auth-local=trust -E UTF8 --locale=C.UTF-8 >/dev/null || die "initdb failed"
  rm -f "$pwfile"
  cat >>"$SCALE_DIR/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $SCALE_DB_PORT
unix_socket_directories = '/tmp'
max_connections = 100
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
# pg_cron runs jobs in background workers, as the CI stack does (no password needed for its connection)
cron.use_background_workers = on
max_worker_processes = 20
# production durability, as on Supabase (these are PostgreSQL's defaults; stated so nobody wonders)
fsync = on
synchronous_commit = on
full_page_writes = on
# a small Supabase instance's memory and WAL settings
shared_buffers = 1GB
effective_cache_size = 4GB
work_mem = 16MB
maintenance_work_mem = 256MB
max_wal_size = 4GB
checkpoint_timeout = 5min
CONF
}

case "${1:-}" in
  start)
    init
    if ! as_db_owner "$PG_BIN/pg_ctl" -D "$SCALE_DIR" status >/dev/null 2>&1; then
      as_db_owner "$PG_BIN/pg_ctl" -D "$SCALE_DIR" -l "$SCALE_LOG" -w -t 120 start >/dev/null ||
        die "PostgreSQL did not start: see $SCALE_LOG"
    fi
    DB_URL="$SCALE_URL" psql_run -f "$ROOT/scripts/stack/bootstrap.sql" >/dev/null
    (cd "$ROOT" && supabase migration up --remote="$SCALE_URL" --yes >/dev/null 2>&1) ||
      die "supabase migration up failed on $SCALE_URL"
    say "durable cluster up on $SCALE_URL"
    ;;
  stop) as_db_owner "$PG_BIN/pg_ctl" -D "$SCALE_DIR" -m fast -w stop >/dev/null && say "stopped $SCALE_DIR" ;;
  url) echo "$SCALE_URL" ;;
  *) die "usage: $0 start|stop|url" ;;
esac
