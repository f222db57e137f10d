#!/usr/bin/env bash
# The test command. On a bare machine it installs what it needs (Azurite
# from npm), starts Azurite on a free loopback port, and runs everything:
# format and lint checks, unit, property and integration tests, and the
# memory-limit script where a writable cgroup exists.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TERM_COLOR=never

log() { printf '\n==> %s\n' "$*" >&2; }

if [ ! -x node_modules/.bin/azurite-blob ]; then
  log "installing Azurite (npm)"
  npm install --no-audit --no-fund --loglevel=error
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

AZ_PORT=$(free_port)
AZ_DIR=$(mktemp -d)
# Run from a scratch folder: Azurite may drop files in its working directory.
(cd "$AZ_DIR" && exec "$ROOT/node_modules/.bin/azurite-blob" --inMemoryPersistence --blobHost 127.0.0.1 \
  --blobPort "$AZ_PORT" --skipApiVersionCheck --disableTelemetry --silent) >"$AZ_DIR/azurite.log" 2>&1 &
AZ_PID=$!
cleanup() { kill "$AZ_PID" 2>/dev/null || true; wait "$AZ_PID" 2>/dev/null || true; rm -rf "$AZ_DIR"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  if (exec 3<>/dev/tcp/127.0.0.1/"$AZ_PORT") 2>/dev/null; then break; fi
  sleep 0.1
done
export AZURITE_BLOB_ENDPOINT="http://127.0.0.1:$AZ_PORT/devstoreaccount1"
export REQUIRE_AZURITE=1
log "Azurite on $AZURITE_BLOB_ENDPOINT"

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --release --all-targets -- -D warnings

log "cargo build --release (binary, tests, benches)"
cargo build --release --all-targets

log "cargo test --release"
cargo test --release -- --test-threads=2

for s in scripts/checks/*.sh; do
  [ -e "$s" ] || continue
  log "$s"
  bash "$s"
done
log "all tests passed"
