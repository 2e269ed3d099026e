#!/usr/bin/env bash
# Installs the pinned toolchain: Debian's PostgreSQL 15 (+ pg_cron, pgTAP, plpgsql_check) and Redis, then
# Deno, the Supabase CLI and squawk from npm (.tools/package.json + package-lock.json). Safe to run again: it
# only installs what is missing, so a second run takes about a second.
set -euo pipefail
source "$(dirname "$0")/lib/env.sh"

# pg_prove (libtap-parser-sourcehandler-pgtap-perl) runs the pgTAP files where `supabase test db` would need Docker.
# chromium: the browser test (tests/browser) drives it headless over the DevTools protocol.
# postgresql-15-plpgsql-check: scripts/lint-sql.sh checks the plpgsql functions with it, as `supabase db lint` does.
# pgbouncer: the stack runs it in transaction mode, as Supavisor on port 6543 (tests through a pooler).
# prometheus (with promtool) scrapes the metrics endpoint in tests/metrics and tests the alerting rules.
APT_PACKAGES=(postgresql-15 postgresql-15-cron postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl redis-server
  chromium postgresql-15-plpgsql-check prometheus pgbouncer)

missing_apt() {
  local p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

install_apt() {
  local missing
  missing=$(missing_apt)
  [ -z "$missing" ] && return 0
  command -v apt-get >/dev/null || die "missing Debian packages ($missing) and no apt-get on this machine"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null && sudo -n true 2>/dev/null ||
      die "missing Debian packages: $(echo $missing). Run this script as root, or: sudo apt-get install $(echo $missing)"
    sudo=(sudo -n)
  fi
  say "installing Debian packages: $(echo $missing)"
  "${sudo[@]}" apt-get update -qq
  # Debian's postgresql-common would create and start a cluster on 5432; the stack runs its own instead.
  mkdir -p /etc/postgresql-common 2>/dev/null || true
  if [ -w /etc/postgresql-common ] && ! grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf; then
    echo 'create_main_cluster = false' >>/etc/postgresql-common/createcluster.conf
  fi
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

install_npm() {
  command -v npm >/dev/null || die "npm not found: install Node.js 20+ first"
  local stamp="$ROOT/.tools/node_modules/.installed-lock"
  if [ -x "$TOOLS_BIN/deno" ] && [ -x "$TOOLS_BIN/supabase" ] && [ -x "$TOOLS_BIN/squawk" ] && [ -f "$stamp" ] &&
    cmp -s "$stamp" "$ROOT/.tools/package-lock.json"; then
    return 0
  fi
  say "installing Deno and the Supabase CLI from npm (pinned in .tools/package-lock.json)"
  (cd "$ROOT/.tools" && npm install --no-audit --no-fund --loglevel=error >/dev/null 2>&1) ||
    die "npm could not install .tools/package.json"
  [ -x "$TOOLS_BIN/deno" ] || die "npm installed no deno binary under $TOOLS_BIN"
  "$TOOLS_BIN/deno" --version >/dev/null || die "the deno binary from npm does not run"
  "$TOOLS_BIN/supabase" --version >/dev/null || die "the supabase binary from npm does not run"
  "$TOOLS_BIN/squawk" --version >/dev/null || die "the squawk binary from npm does not run"
  cp "$ROOT/.tools/package-lock.json" "$stamp"
}

install_apt
[ -x "$PG_BIN/postgres" ] || die "PostgreSQL 15 server not found at $PG_BIN"
[ -f "/usr/share/postgresql/15/extension/pg_cron.control" ] || die "pg_cron for PostgreSQL 15 is not installed"
[ -f "/usr/share/postgresql/15/extension/pgtap.control" ] || die "pgTAP for PostgreSQL 15 is not installed"
command -v redis-server >/dev/null || die "redis-server not found"
[ -f "/usr/share/postgresql/15/extension/plpgsql_check.control" ] || die "plpgsql_check for PostgreSQL 15 is not installed"
command -v prometheus >/dev/null && command -v promtool >/dev/null || die "prometheus or promtool not found"
install_npm
# Fetch and cache the npm: imports deno.json pins, so tests do not race to download them.
(cd "$ROOT" && "$TOOLS_BIN/deno" install --quiet >/dev/null) || die "deno could not install the npm imports pinned in deno.json"
