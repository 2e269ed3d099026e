#!/usr/bin/env bash
# Starts the local stack (installing what is missing) and shows the product working over real HTTP.
set -euo pipefail
source "$(dirname "$0")/lib/env.sh"
"$ROOT/scripts/stack.sh" start
cd "$ROOT" && deno run --allow-all --quiet scripts/demo.ts
echo
echo "The stack keeps running: scripts/stack.sh status | stop"
