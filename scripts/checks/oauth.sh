#!/usr/bin/env bash
# The server as an OAuth 2.1 resource server, against a real OpenID provider
# (the npm package oidc-provider, scripts/lib/oidc/provider.mjs) on a loopback
# port: no mock anywhere. Starts the provider, the fake Gemini and the release
# server (--stateless, --oauth-issuer, --resource-url), then runs
# scripts/oauth_check.py, which checks:
#   - the provider: JWT access tokens (RS256, kid, iss, aud, scope, exp) that
#     its JWKS verifies (PyJWT); a read-only client; a second audience;
#     authorization code + PKCE + dynamic registration through its login and
#     consent forms;
#   - Protected Resource Metadata at /.well-known/oauth-protected-resource and
#     …/mcp; no token → 401 with resource_metadata and scope;
#   - a full-scope token → initialize, tools/list, generate_image (the sha256
#     in the result is the stored file's);
#   - 401 + error="invalid_token" for: another audience, an altered signature,
#     an unknown key (kid not in the JWKS), a foreign key under the provider's
#     kid, alg=none, HS256 keyed with the public key, a non-JWT, and a token
#     past its expiry (polled until the server's leeway is over);
#   - a read-only token: initialize and get_configuration_status work,
#     generate_image → 403 insufficient_scope scope="images:generate",
#     edit_image → 403 scope="images:edit";
#   - the Python MCP SDK's OAuth client (mcp 2.3.0, mcp.client.auth) with no
#     token: discovers the metadata from the 401 and completes generate_image,
#     once with authorization code + PKCE + dynamic registration, once with
#     its client-credentials provider;
#   - key rotation: the provider replaces its signing key (SIGHUP, new kid,
#     old key gone from the JWKS); a token signed with the new key is accepted.
# One `oauth: PASS|FAIL …` line per check, then `oauth: N passed, M failed`;
# exits non-zero on any failure, keeping the logs. Every process it started is
# ended on exit.
#
#   scripts/checks/oauth.sh                  everything (needs the release binaries)
#   scripts/checks/oauth.sh --provider-only  the provider checks alone (no server)
#
# Installs on first run (cached in .cache/): the npm tools (Node 22,
# oidc-provider) and a venv with scripts/lib/oidc/requirements.txt.
# Env: NANO_BANANA_BIN, NANO_BANANA_FAKE_BIN, OAUTH_KEEP=1 (keep logs),
# OAUTH_MAX_LEEWAY, OAUTH_ROTATION_WAIT (see scripts/oauth_check.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

PROVIDER_ONLY=0
case "${1:-}" in
  --provider-only) PROVIDER_ONLY=1 ;;
  "") ;;
  *) echo "usage: $0 [--provider-only]" >&2; exit 2 ;;
esac

# shellcheck source=scripts/lib/npm-tools.sh
. scripts/lib/npm-tools.sh
ensure_npm_tools "$ROOT"

# The venv: the MCP SDK (its OAuth client), PyJWT, cryptography. Installed
# when missing or when the pins (or the Python) changed.
REQ=$ROOT/scripts/lib/oidc/requirements.txt
PY_VENV=$ROOT/.cache/oauth/py
ensure_venv() {
  local want
  want=$( (cat "$REQ"; python3 -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)
  mkdir -p "$ROOT/.cache/oauth"
  exec 8>"$ROOT/.cache/oauth/py.lock"
  if command -v flock >/dev/null; then flock 8; fi
  if [ ! -x "$PY_VENV/bin/python" ] || [ "$(cat "$PY_VENV/.stamp" 2>/dev/null)" != "$want" ]; then
    echo "oauth: installing $(grep -v '^#' "$REQ" | xargs) into $PY_VENV (first run; cached afterwards)" >&2
    rm -rf "$PY_VENV"
    python3 -m venv "$PY_VENV"
    timeout -k 5 600 "$PY_VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$REQ" >&2
    echo "$want" >"$PY_VENV/.stamp"
  fi
  exec 8>&-
}
ensure_venv

if [ "$PROVIDER_ONLY" = 0 ]; then
  SRC_BIN=${NANO_BANANA_BIN:-$ROOT/target/release/nano-banana-mcp}
  FAKE_BIN=${NANO_BANANA_FAKE_BIN:-$ROOT/target/release/nano-banana-fake-gemini}
  [ -x "$SRC_BIN" ] || { echo "oauth: no server binary at $SRC_BIN (cargo build --release first)" >&2; exit 1; }
  [ -x "$FAKE_BIN" ] || { echo "oauth: no fake Gemini at $FAKE_BIN (cargo build --release first)" >&2; exit 1; }
  if ! "$SRC_BIN" serve --help 2>/dev/null | grep -q -- '--oauth-issuer'; then
    echo "oauth: $SRC_BIN has no --oauth-issuer (an older build?)" >&2
    exit 1
  fi
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/nb-oauth.XXXXXX")
chmod 700 "$WORK"
PIDS=()
STEP=start
cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${BIN:-}" ] && kill_exe "$BIN"
  if [ "$rc" -ne 0 ]; then
    for f in provider server fake-gemini; do
      if [ -s "$WORK/$f.log" ]; then
        echo "--- last lines of $f.log ---" >&2
        tail -n 30 "$WORK/$f.log" >&2
      fi
    done
    echo "oauth: FAILED at step '$STEP'; logs kept in $WORK" >&2
  elif [ "${OAUTH_KEEP:-0}" = 1 ]; then
    echo "oauth: logs kept in $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_file PATH PID [SECONDS]: until PATH exists, or PID dies, or time is up.
wait_file() {
  local path=$1 pid=$2 secs=${3:-20} _
  for _ in $(seq 1 $((secs * 10))); do
    [ -s "$path" ] && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "oauth: process $pid exited before writing $path" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "oauth: no $path after ${secs}s" >&2
  return 1
}

# Three distinct ports: the server's, the provider's, and another MCP
# server's resource (nothing listens there; tokens for it carry its audience).
SPORT=$(free_port)
PPORT=$(free_port)
while [ "$PPORT" = "$SPORT" ]; do PPORT=$(free_port); done
OPORT=$(free_port)
RESOURCE="http://127.0.0.1:$SPORT/mcp"
OTHER="http://127.0.0.1:$OPORT/mcp"

STEP="oidc provider"
node "$ROOT/scripts/lib/oidc/provider.mjs" --port "$PPORT" --resource "$RESOURCE" --other-resource "$OTHER" \
  --info-file "$WORK/provider.json" --short-ttl 3 --max-lifetime 1200 >"$WORK/provider.log" 2>&1 &
PIDS+=($!)
wait_file "$WORK/provider.json" "${PIDS[-1]}"
ISSUER=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["issuer"])' "$WORK/provider.json")
wait_http "$ISSUER/.well-known/openid-configuration" "${PIDS[-1]}"
echo "oauth: provider $ISSUER (oidc-provider $(node -p "require('$NPM_TOOLS/node_modules/oidc-provider/package.json').version"), node $(node -v))"

if [ "$PROVIDER_ONLY" = 1 ]; then
  STEP="checks (provider only)"
  timeout -k 5 300 "$PY_VENV/bin/python" "$ROOT/scripts/oauth_check.py" --info "$WORK/provider.json"
  exit 0
fi

BIN="$WORK/nano-banana-mcp"
cp "$SRC_BIN" "$BIN"
clean_server_env "$WORK"

STEP="fake gemini"
KEY="fake-key-$RANDOM$RANDOM"
GPORT=$(free_port)
"$FAKE_BIN" --addr "127.0.0.1:$GPORT" --api-key "$KEY" >"$WORK/fake-gemini.log" 2>&1 &
PIDS+=($!)
wait_tcp "$GPORT" "${PIDS[-1]}"

STEP="server"
mkdir -p "$WORK/out"
GEMINI_API_KEY="$KEY" GEMINI_BASE_URL="http://127.0.0.1:$GPORT" NANO_BANANA_OUTPUT_DIR="$WORK/out" \
  "$BIN" serve --http "127.0.0.1:$SPORT" --stateless \
  --oauth-issuer "$ISSUER" --resource-url "$RESOURCE" >"$WORK/server.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$SPORT/readyz" "${PIDS[-1]}" 30

STEP="checks"
timeout -k 5 600 "$PY_VENV/bin/python" "$ROOT/scripts/oauth_check.py" --info "$WORK/provider.json" \
  --server-url "$RESOURCE" --out-dir "$WORK/out" --python "$PY_VENV/bin/python"
