# Shared settings for the local stack scripts. Sourced, never run.
# Values follow `supabase start`'s local defaults so that tools and docs written for Supabase work unchanged.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS_BIN="$ROOT/.tools/node_modules/.bin"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
LOCAL_DIR="$ROOT/.local"
PG_DATA="$LOCAL_DIR/db"
PG_SOCKET_DIR="$LOCAL_DIR/run"
LOG_DIR="$LOCAL_DIR/logs"
DB_PORT="${DB_PORT:-54322}"
API_PORT="${API_PORT:-54321}"
REDIS_PORT="${REDIS_PORT:-54380}"
# pgbouncer in transaction mode, as Supavisor's port 6543 (Supabase's local pooler port by default)
POOLER_PORT="${POOLER_PORT:-54329}"
DB_URL="postgresql://postgres:postgres@127.0.0.1:${DB_PORT}/postgres"
API_URL="http://127.0.0.1:${API_PORT}"
REDIS_URL="redis://127.0.0.1:${REDIS_PORT}"
# `?prepare=false`: postgres.js's own URL option (never sent to the server); the toolkit reads it too
POOLER_URL="postgresql://postgres:postgres@127.0.0.1:${POOLER_PORT}/postgres?prepare=false"
# Tests, the demo and the benchmark read these (with the default ports as fallback): exporting them lets a
# second stack on other ports (DB_PORT=..., API_PORT=..., REDIS_PORT=...) run its own tests side by side.
export SUPABASE_DB_URL="$DB_URL" API_URL REDIS_URL POOLER_URL
JWT_SECRET="super-secret-jwt-token-with-at-least-32-characters-long"
# The stack's asymmetric (ES256) signing key, made by the gateway on first start; the gateway serves its public
# half at $API_URL/auth/v1/.well-known/jwks.json. Tests sign user tokens with it.
export JWT_SIGNING_KEY_FILE="$LOCAL_DIR/auth/jwt-signing-key.json"
export PATH="$TOOLS_BIN:$PATH"
export DENO_NO_UPDATE_CHECK=1 DENO_NO_PROMPT=1 SUPABASE_TELEMETRY_DISABLED=1 DO_NOT_TRACK=1

die() { echo "error: $*" >&2; exit 1; }
# psql as the superuser, stopping at the first error. Re-runs are expected: their "already exists, skipping"
# and "does not exist, skipping" notices say nothing worth reading.
psql_run() { PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 "$DB_URL" "$@"; }
say() { echo "==> $*"; }
