#!/usr/bin/env bash
# Migrations are history: a released migration is never edited. supabase/migrations.sha256 records the
# SHA-256 of every released migration, in order.
#   scripts/migrations.sh check    every recorded migration is unchanged and still there, and every file in
#                                  supabase/migrations/ is recorded (a new one: run `release`)
#   scripts/migrations.sh release  append the hashes of migrations not yet recorded (existing lines are never
#                                  rewritten); run it when you add a migration, and commit the file with it
set -euo pipefail
source "$(dirname "$0")/lib/env.sh"
cd "$ROOT"
LIST=supabase/migrations.sha256

cmd_check() {
  local ok=0 line hash file
  [ -f "$LIST" ] || die "$LIST is missing: run scripts/migrations.sh release"
  while read -r hash file; do
    [ -n "$hash" ] || continue
    if [ ! -f "$file" ]; then
      echo "released migration deleted or renamed: $file" >&2; ok=1
    elif [ "$(sha256sum "$file" | cut -d' ' -f1)" != "$hash" ]; then
      echo "released migration edited: $file (change the schema in a new migration instead)" >&2; ok=1
    fi
  done <"$LIST"
  for file in supabase/migrations/*.sql; do
    grep -q "  $file\$" "$LIST" ||
      { echo "migration not recorded: $file (run scripts/migrations.sh release)" >&2; ok=1; }
    [ -f "supabase/rollback/$(basename "$file" .sql)_down.sql" ] ||
      { echo "migration without rollback: $file (add supabase/rollback/<name>_down.sql)" >&2; ok=1; }
  done
  # the recorded order is the order the CLI applies them in (by file name)
  if [ "$(cut -d' ' -f3 "$LIST")" != "$(cut -d' ' -f3 "$LIST" | sort)" ]; then
    echo "$LIST is not in file-name order" >&2; ok=1
  fi
  [ "$ok" -eq 0 ] && echo "migrations: $(wc -l <"$LIST") released, none edited"
  return "$ok"
}

cmd_release() {
  touch "$LIST"
  local file
  for file in supabase/migrations/*.sql; do
    grep -q "  $file\$" "$LIST" && continue
    sha256sum "$file" >>"$LIST"
    echo "recorded $file"
  done
}

case "${1:-}" in
  check) cmd_check ;;
  release) cmd_release ;;
  *) echo "usage: $0 check|release" >&2; exit 2 ;;
esac
