#!/usr/bin/env bash
# The newest real MCP SDK clients, over HTTP with the bearer token, against the
# release server and the built-in fake Gemini: generate an image, then go on
# editing it by imageId, with no session to carry it:
#   single:   one --stateless server;
#   replicas: two --stateless servers A and B sharing one output folder;
#             generate on A, stop A (its port is closed), continue on B.
# Each run: generate_image (imageId, sha256) → continue_editing {imageId}
# (no isError, parentImageId == imageId) → get_last_image_info {imageId}
# (image.sha256 == the generated sha256) → continue_editing without imageId
# (isError, the text names imageId).
#
# Clients (scripts/lib/sdk-clients/):
#   python: mcp 2.3.0 (PyPI, pinned in scripts/lib/sdk-clients/requirements.txt,
#           installed once into .cache/sdk-clients/py), the high-level
#           mcp.Client in its default mode ("auto": server/discover), which
#           must negotiate 2026-07-28;
#   ts-auto: @modelcontextprotocol/client 2.4.0 (npm, pinned in
#           scripts/lib/npm-tools/), versionNegotiation {mode: 'auto'}: must
#           negotiate 2026-07-28;
#   ts-default: the same SDK with no versionNegotiation option, its default,
#           which is the 2025 initialize handshake: must negotiate 2025-11-25.
# The clients report the negotiated version themselves (Client.protocol_version,
# Client.getNegotiatedProtocolVersion()) and assert it.
# Exits non-zero on the first failed assertion, keeping logs; every process it
# started is ended on exit.
#
# Env: NANO_BANANA_BIN, NANO_BANANA_FAKE_BIN, SDK_CLIENTS_KEEP=1 (keep logs),
# SDK_CLIENTS (which clients, default "python ts-auto ts-default"),
# SDK_EXPECT_SHA256 (compare get_last_image_info against this sha instead of
# the generated one: to prove the check fails when it should).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
# shellcheck source=scripts/lib/npm-tools.sh
. scripts/lib/npm-tools.sh
ensure_npm_tools "$ROOT"
LIB=$ROOT/scripts/lib/sdk-clients

# The Python SDK's venv: installed when missing or when the pin (or the
# Python it was made with) changed; later runs install nothing.
PY_VENV=$ROOT/.cache/sdk-clients/py
ensure_py_sdk() {
  local req=$LIB/requirements.txt want
  want=$( (cat "$req"; python3 -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)
  mkdir -p "$ROOT/.cache/sdk-clients"
  exec 8>"$ROOT/.cache/sdk-clients/py.lock"
  if command -v flock >/dev/null; then flock 8; fi
  if [ ! -x "$PY_VENV/bin/python" ] || [ "$(cat "$PY_VENV/.stamp" 2>/dev/null)" != "$want" ]; then
    echo "sdk_clients: installing $(grep -v '^#' "$req" | xargs) into $PY_VENV (first run; cached afterwards)" >&2
    local t0=$SECONDS
    rm -rf "$PY_VENV"
    python3 -m venv "$PY_VENV"
    timeout -k 5 600 "$PY_VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$req" >&2
    echo "$want" >"$PY_VENV/.stamp"
    echo "sdk_clients: installed in $((SECONDS - t0)) s" >&2
  fi
  exec 8>&-
}
ensure_py_sdk
PY_SDK="mcp $("$PY_VENV/bin/python" -c 'from importlib.metadata import version; print(version("mcp"))')"
TS_SDK="@modelcontextprotocol/client $(node -p "require('$NPM_TOOLS/node_modules/@modelcontextprotocol/client/package.json').version")"

SRC_BIN=${NANO_BANANA_BIN:-$ROOT/target/release/nano-banana-mcp}
FAKE_BIN=${NANO_BANANA_FAKE_BIN:-$ROOT/target/release/nano-banana-fake-gemini}
[ -x "$SRC_BIN" ] || { echo "sdk_clients: no server binary at $SRC_BIN (cargo build --release first)" >&2; exit 1; }
[ -x "$FAKE_BIN" ] || { echo "sdk_clients: no fake Gemini at $FAKE_BIN (cargo build --release first)" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/nb-sdk-clients.XXXXXX")
# A private copy: a rebuild during the run cannot swap it, and kill_exe finds
# exactly the servers started from it.
BIN="$WORK/nano-banana-mcp"
cp "$SRC_BIN" "$BIN"
clean_server_env "$WORK"
PIDS=()
STEP=start
LAST_ERR=
cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  kill_exe "$BIN"
  if [ "$rc" -ne 0 ]; then
    if [ -n "$LAST_ERR" ] && [ -s "$LAST_ERR" ]; then
      echo "--- stderr of $(basename "$LAST_ERR" .err) ---" >&2
      head -c 6000 "$LAST_ERR" >&2
    fi
    echo "sdk_clients: FAILED at step '$STEP'; logs kept in $WORK" >&2
  elif [ "${SDK_CLIENTS_KEEP:-0}" = 1 ]; then
    echo "sdk_clients: logs kept in $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

KEY="fake-key-$RANDOM$RANDOM"
TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
GPORT=$(free_port)
STEP="fake gemini"
"$FAKE_BIN" --addr "127.0.0.1:$GPORT" --api-key "$KEY" >"$WORK/fake-gemini.log" 2>&1 &
PIDS+=($!)
wait_tcp "$GPORT" "${PIDS[-1]}"
export GEMINI_API_KEY="$KEY" GEMINI_BASE_URL="http://127.0.0.1:$GPORT" NANO_BANANA_AUTH_TOKEN="$TOKEN"
export SDK_TOKEN="$TOKEN" NPM_TOOLS

# start_server NAME OUTDIR: a --stateless HTTP server; sets SERVER_PID and
# SERVER_PORT once /readyz answers.
start_server() {
  local name=$1 out=$2
  STEP="start server $name"
  SERVER_PORT=$(free_port)
  mkdir -p "$out"
  NANO_BANANA_OUTPUT_DIR="$out" "$BIN" serve --http "127.0.0.1:$SERVER_PORT" --stateless \
    >"$WORK/server-$name.log" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  if ! wait_http "http://127.0.0.1:$SERVER_PORT/readyz" "$SERVER_PID"; then
    cat "$WORK/server-$name.log" >&2
    return 1
  fi
}

# stop_server PID PORT: SIGTERM, wait (10 s, then SIGKILL), and make sure the
# port no longer accepts, so nothing after this can reach that server.
stop_server() {
  local pid=$1 port=$2 _
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "sdk_clients: server pid $pid still running 10 s after SIGTERM; killing it" >&2
    kill -9 "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "sdk_clients: port $port still accepts after its server (pid $pid) was stopped" >&2
    return 1
  fi
}

# run_client KIND PHASE URL STATE: one phase of the flow with one SDK client.
run_client() {
  local kind=$1 phase=$2 url=$3 state=$4
  case $kind in
    python)
      SDK_EXPECT_PROTOCOL=2026-07-28 timeout -k 5 120 \
        "$PY_VENV/bin/python" "$LIB/py_client.py" "$phase" "$url" "$state" ;;
    ts-auto)
      SDK_NEGOTIATION=auto SDK_EXPECT_PROTOCOL=2026-07-28 timeout -k 5 120 \
        node "$LIB/ts_client.mjs" "$phase" "$url" "$state" ;;
    ts-default)
      SDK_NEGOTIATION=default SDK_EXPECT_PROTOCOL=2025-11-25 timeout -k 5 120 \
        node "$LIB/ts_client.mjs" "$phase" "$url" "$state" ;;
    *) echo "unknown client $kind" >&2; return 2 ;;
  esac
}

# client KIND PHASE URL STATE: run_client with its stdout (the JSON line) in
# $WORK/KIND-SCENARIO-PHASE.json and its stderr in ….err. The status is taken
# after the redirections are closed, so a failure's exit (and the EXIT trap)
# writes to the terminal, not into those files.
client() {
  local kind=$1 phase=$2 name rc=0
  name="$kind-$SCENARIO-$phase"
  STEP="$name"
  LAST_ERR="$WORK/$name.err"
  run_client "$@" >"$WORK/$name.json" 2>"$LAST_ERR" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "sdk_clients: the $kind client failed in phase $phase (exit $rc; 124 = timed out)" >&2
    return 1
  fi
  LAST_ERR=
}

# field FILE KEY: one top-level string of a client's JSON line.
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

read -r -a CLIENTS <<<"${SDK_CLIENTS:-python ts-auto ts-default}"
declare -A PROTOCOL

# --- single: one stateless server, every client.
SCENARIO=single
start_server single "$WORK/out-single"
SINGLE_PID=$SERVER_PID SINGLE_PORT=$SERVER_PORT
SINGLE_URL="http://127.0.0.1:$SINGLE_PORT/mcp"
for kind in "${CLIENTS[@]}"; do
  export SDK_PROMPT_TAG="$kind-$SCENARIO-$RANDOM$RANDOM"
  client "$kind" generate "$SINGLE_URL" "$WORK/$kind-$SCENARIO.state"
  client "$kind" continue "$SINGLE_URL" "$WORK/$kind-$SCENARIO.state"
  PROTOCOL[$kind]=$(field "$WORK/$kind-$SCENARIO-generate.json" protocol)
done
STEP="stop server single"
stop_server "$SINGLE_PID" "$SINGLE_PORT"

# --- replicas: A and B share one output folder; A is gone before the edit.
SCENARIO=replicas
for kind in "${CLIENTS[@]}"; do
  shared="$WORK/out-shared-$kind"
  start_server "$kind-A" "$shared"
  A_PID=$SERVER_PID A_PORT=$SERVER_PORT
  start_server "$kind-B" "$shared"
  B_PID=$SERVER_PID B_PORT=$SERVER_PORT
  export SDK_PROMPT_TAG="$kind-$SCENARIO-$RANDOM$RANDOM"
  client "$kind" generate "http://127.0.0.1:$A_PORT/mcp" "$WORK/$kind-$SCENARIO.state"
  STEP="$kind-$SCENARIO: stop server A"
  stop_server "$A_PID" "$A_PORT"
  client "$kind" continue "http://127.0.0.1:$B_PORT/mcp" "$WORK/$kind-$SCENARIO.state"
  STEP="$kind-$SCENARIO: stop server B"
  stop_server "$B_PID" "$B_PORT"
  p=$(field "$WORK/$kind-$SCENARIO-continue.json" protocol)
  if [ "$p" != "${PROTOCOL[$kind]}" ]; then
    echo "sdk_clients: $kind negotiated ${PROTOCOL[$kind]} on the single server but $p on replica B" >&2
    exit 1
  fi
done

STEP="done"
for kind in "${CLIENTS[@]}"; do
  case $kind in
    python) label="python $PY_SDK (default mode)" ;;
    ts-auto) label="ts $TS_SDK (auto negotiation)" ;;
    ts-default) label="ts $TS_SDK (default negotiation)" ;;
  esac
  echo "sdk_clients: $label (protocol ${PROTOCOL[$kind]}): generate → continue by imageId on one stateless server: ok; on another replica (A stopped): ok"
done
echo "sdk_clients: OK"
