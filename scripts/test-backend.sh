#!/usr/bin/env bash
# Smoke-tests a running AIMCS backend, local or deployed: /health, /api/status, /api/chat,
# and a WebSocket session on /ws/audio that streams audio and checks every acknowledgement.
# Unlike the original's script, it fails (exit 1) when any check fails, and says which.
#
# Usage: scripts/test-backend.sh [URL]
#   URL defaults to $BACKEND_URL, then $VITE_BACKEND_API_URL, then http://127.0.0.1:3000.
#   The checker is `aimcs-backend check`: $AIMCS_BACKEND if set, else the release or debug
#   build in target/, else `aimcs-backend` on the PATH (as in the container image).
set -euo pipefail
cd "$(dirname "$0")/.."

url=${1:-${BACKEND_URL:-${VITE_BACKEND_API_URL:-http://127.0.0.1:3000}}}

checker=${AIMCS_BACKEND:-}
if [ -z "$checker" ]; then
  for candidate in target/release/aimcs-backend target/debug/aimcs-backend; do
    if [ -x "$candidate" ]; then checker=$candidate; break; fi
  done
fi
if [ -z "$checker" ]; then
  checker=$(command -v aimcs-backend || true)
fi
if [ -z "$checker" ]; then
  echo "error: no aimcs-backend binary: run 'cargo build --release' first, or set AIMCS_BACKEND" >&2
  exit 1
fi

exec "$checker" check "$url"
