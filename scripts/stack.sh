#!/usr/bin/env bash
# The local Supabase stack without Docker: PostgreSQL 15 with pg_cron on 54322, Redis on 54380 (for the
# Redis store), and the functions gateway on 54321 serving /functions/v1/<name>.
#   scripts/stack.sh start    install what is missing, start everything, apply migrations; idempotent
#   scripts/stack.sh stop     stop every process the stack started
#   scripts/stack.sh status   print the stack's settings as `supabase status -o env` does
#   scripts/stack.sh reset    stop, delete the database cluster, start afresh
#   scripts/stack.sh db-stop | db-start   stop or start PostgreSQL alone (the store-outage tests use them)
#   scripts/stack.sh durability on|off|status   production durability (fsync, synchronous_commit,
#                             full_page_writes on) or the fast development settings; a reload, no restart
set -euo pipefail
source "$(dirname "$0")/lib/env.sh"
GATEWAY_PID="$LOCAL_DIR/run/gateway.pid"
REDIS_PID="$LOCAL_DIR/run/redis.pid"
POOLER_DIR="$LOCAL_DIR/pgbouncer"
POOLER_PID="$POOLER_DIR/pgbouncer.pid"

# initdb and postgres refuse to run as root; run them as the Debian `postgres` user then.
as_db_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

pg_running() { as_db_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; }


sign_jwt() { # role -> HS256 JWT with the claims of Supabase's well-known local keys
  node -e '
    const c = require("crypto"), b = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
    const h = b({ alg: "HS256", typ: "JWT" }), p = b({ iss: "supabase-demo", role: process.argv[2], exp: 1983812996 });
    const s = c.createHmac("sha256", process.argv[1]).update(h + "." + p).digest("base64url");
    console.log(h + "." + p + "." + s);' "$JWT_SECRET" "$1"
}

init_cluster() {
  [ -f "$PG_DATA/PG_VERSION" ] && return 0
  say "creating the database cluster in ${PG_DATA#"$ROOT"/}"
  mkdir -p "$PG_DATA" "$PG_SOCKET_DIR" "$LOG_DIR"
  [ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$LOCAL_DIR"
  local pwfile="$LOCAL_DIR/run/pwfile"
  echo postgres >"$pwfile" && chmod 644 "$pwfile"
  as_db_owner "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --pwfile="$pwfile" -A scram-sha-256 \
    --auth-local=trust -E UTF8 --locale=C.UTF-8 >"$LOG_DIR/initdb.log" 2>&1 ||
    die "initdb failed: see $LOG_DIR/initdb.log"
  rm -f "$pwfile"
  cat >>"$PG_DATA/postgresql.conf" <<CONF
# Local Supabase emulation
listen_addresses = '127.0.0.1'
port = $DB_PORT
unix_socket_directories = '$PG_SOCKET_DIR'
max_connections = 300
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 20
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
}

start_db() {
  if pg_running; then return 0; fi
  port_open "$DB_PORT" && die "port $DB_PORT is taken by another process; stop it or set DB_PORT"
  mkdir -p "$PG_SOCKET_DIR" "$LOG_DIR"
  [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$PG_SOCKET_DIR" "$LOG_DIR"
  say "starting PostgreSQL 15 on 127.0.0.1:$DB_PORT"
  as_db_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$LOG_DIR/postgres.log" -w -t 60 start >/dev/null ||
    die "PostgreSQL did not start: see $LOG_DIR/postgres.log"
}

migrate() {
  psql_run -f "$ROOT/scripts/stack/bootstrap.sql" >/dev/null
  say "applying migrations with the Supabase CLI"
  (cd "$ROOT" && supabase migration up --remote="$DB_URL" --yes >"$LOG_DIR/migrate.log" 2>&1) || {
    cat "$LOG_DIR/migrate.log" >&2
    die "supabase migration up failed"
  }
}

start_redis() {
  pid_alive "$REDIS_PID" && return 0
  port_open "$REDIS_PORT" && die "port $REDIS_PORT is taken by another process; stop it or set REDIS_PORT"
  say "starting Redis on 127.0.0.1:$REDIS_PORT"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no --daemonize yes \
    --pidfile "$REDIS_PID" --logfile "$LOG_DIR/redis.log" >/dev/null
  for _ in $(seq 50); do port_open "$REDIS_PORT" && return 0; sleep 0.1; done
  die "Redis did not start: see $LOG_DIR/redis.log"
}

start_pooler() {
  pid_alive "$POOLER_PID" && return 0
  port_open "$POOLER_PORT" && die "port $POOLER_PORT is taken by another process; stop it or set POOLER_PORT"
  say "starting pgbouncer (transaction mode) on 127.0.0.1:$POOLER_PORT"
  mkdir -p "$POOLER_DIR"
  # the server password is the local stack's well-known one; clients authenticate with SCRAM against it
  echo '"postgres" "postgres"' >"$POOLER_DIR/userlist.txt"
  cat >"$POOLER_DIR/pgbouncer.ini" <<INI
[databases]
postgres = host=127.0.0.1 port=$DB_PORT dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $POOLER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $POOLER_DIR/userlist.txt
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 20
ignore_startup_parameters = extra_float_digits,options
pidfile = $POOLER_PID
logfile = $LOG_DIR/pgbouncer.log
INI
  [ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$POOLER_DIR" && chmod 600 "$POOLER_DIR/userlist.txt"
  # pgbouncer refuses to run as root, like postgres
  as_db_owner pgbouncer -d -q "$POOLER_DIR/pgbouncer.ini" || die "pgbouncer did not start: see $LOG_DIR/pgbouncer.log"
  for _ in $(seq 50); do port_open "$POOLER_PORT" && return 0; sleep 0.1; done
  die "pgbouncer did not start: see $LOG_DIR/pgbouncer.log"
}

start_gateway() {
  pid_alive "$GATEWAY_PID" && return 0
  port_open "$API_PORT" && die "port $API_PORT is taken by another process; stop it or set API_PORT"
  say "starting the functions gateway on $API_URL"
  # The subshell backgrounds deno itself, so $! is deno's pid; stdout goes to the log, not to our caller.
  (
    cd "$ROOT" || exit 1
    mkdir -p "$(dirname "$JWT_SIGNING_KEY_FILE")"
    # metrics summed in the database for the idempotency-metrics endpoint, flushed every second locally
    export IDEMPOTENCY_METRICS="${IDEMPOTENCY_METRICS:-database}"
    export IDEMPOTENCY_METRICS_FLUSH_MS="${IDEMPOTENCY_METRICS_FLUSH_MS:-1000}"
    SUPABASE_URL="$API_URL" SUPABASE_DB_URL="$DB_URL" SUPABASE_JWT_SECRET="$JWT_SECRET" \
      SUPABASE_ANON_KEY="$(sign_jwt anon)" SUPABASE_SERVICE_ROLE_KEY="$(sign_jwt service_role)" PORT="$API_PORT" \
      TRAINER_URL="${TRAINER_URL:-$API_URL/trainer}" \
      nohup deno run --allow-all --quiet scripts/gateway.ts >"$LOG_DIR/gateway.log" 2>&1 </dev/null &
    echo $! >"$GATEWAY_PID"
  )
  for _ in $(seq 300); do
    port_open "$API_PORT" && return 0
    pid_alive "$GATEWAY_PID" || break
    sleep 0.1
  done
  cat "$LOG_DIR/gateway.log" >&2
  die "the functions gateway did not start"
}

stop_pid() { # pidfile name
  if pid_alive "$1"; then
    local pid; pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    say "stopped $2"
  fi
  rm -f "$1"
}

cmd_start() {
  "$ROOT/scripts/setup.sh"
  init_cluster
  start_db
  migrate
  start_redis
  start_pooler
  start_gateway
  say "stack is up; scripts/stack.sh status prints its settings"
}

stop_db() {
  if [ -f "$PG_DATA/PG_VERSION" ] && pg_running; then
    as_db_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null
    say "stopped PostgreSQL"
  fi
}

cmd_stop() {
  stop_pid "$GATEWAY_PID" "the functions gateway"
  stop_pid "$REDIS_PID" "Redis"
  stop_pid "$POOLER_PID" "pgbouncer"
  stop_db
}

cmd_status() {
  local db=stopped api=stopped redis=stopped
  [ -f "$PG_DATA/PG_VERSION" ] && pg_running && db=running
  pid_alive "$GATEWAY_PID" && api=running
  pid_alive "$REDIS_PID" && redis=running
  cat <<ENV
API_URL="$API_URL"
FUNCTIONS_URL="$API_URL/functions/v1"
DB_URL="$DB_URL"
POOLER_URL="$POOLER_URL"
REDIS_URL="$REDIS_URL"
JWT_SECRET="$JWT_SECRET"
JWKS_URL="$API_URL/auth/v1/.well-known/jwks.json"
JWT_SIGNING_KEY_FILE="$JWT_SIGNING_KEY_FILE"
ANON_KEY="$(sign_jwt anon)"
SERVICE_ROLE_KEY="$(sign_jwt service_role)"
DB_STATUS="$db"
API_STATUS="$api"
REDIS_STATUS="$redis"
ENV
  [ "$db" = running ] && [ "$api" = running ] && [ "$redis" = running ]
}

cmd_reset() {
  cmd_stop
  say "deleting the database cluster"
  rm -rf "$PG_DATA"
  cmd_start
}

# ALTER SYSTEM overrides postgresql.conf's fast settings (postgresql.auto.conf); all three take a reload.
cmd_durability() {
  case "${1:-status}" in
    on | off)
      psql_run -c "alter system set fsync = $1" -c "alter system set synchronous_commit = $1" \
        -c "alter system set full_page_writes = $1" -c "select pg_reload_conf()" >/dev/null
      sleep 0.2 ;;
    status) ;;
    *) echo "usage: $0 durability on|off|status" >&2; exit 2 ;;
  esac
  psql_run -At -c "select string_agg(name || '=' || setting, ' ' order by name) from pg_settings
    where name in ('fsync', 'synchronous_commit', 'full_page_writes')"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  reset) cmd_reset ;;
  db-stop) stop_db ;;
  db-start) init_cluster && start_db ;;
  durability) cmd_durability "${2:-status}" ;;
  *) echo "usage: $0 start|stop|status|reset|db-stop|db-start|durability" >&2; exit 2 ;;
esac
