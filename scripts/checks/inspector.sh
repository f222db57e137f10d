#!/usr/bin/env bash
# The MCP Inspector's CLI (@modelcontextprotocol/inspector, pinned in
# scripts/lib/npm-tools/), run as `npx mcp-inspector --cli …`, as a real
# client of the server, against the built-in fake Gemini:
#   stdio: tools/list has all six tools; generate_image returns a stored image
#          (path/url, no isError, the file has the reported size and sha256);
#   HTTP, with the bearer token (--header "Authorization: Bearer …"): tools/list,
#          get_configuration_status, generate_image; and without the token, or
#          with a wrong one, the CLI is refused.
# Exits non-zero on the first failed assertion; every process it started is
# ended on exit.
#
# Env: NANO_BANANA_BIN (default target/release/nano-banana-mcp).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
# shellcheck source=scripts/lib/npm-tools.sh
. scripts/lib/npm-tools.sh
ensure_npm_tools "$ROOT"

SRC_BIN=${NANO_BANANA_BIN:-$ROOT/target/release/nano-banana-mcp}
FAKE_BIN=${NANO_BANANA_FAKE_BIN:-$ROOT/target/release/nano-banana-fake-gemini}
[ -x "$SRC_BIN" ] || { echo "inspector: no server binary at $SRC_BIN (cargo build --release first)" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/nb-inspector.XXXXXX")
# A private copy: a rebuild during the run cannot swap it, and kill_exe can
# find exactly the processes started from it (the stdio servers are children
# of the Inspector, not of this script).
BIN="$WORK/nano-banana-mcp"
cp "$SRC_BIN" "$BIN"
clean_server_env "$WORK"
PIDS=()
STEP=start
cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  kill_exe "$BIN"
  if [ "$rc" -ne 0 ]; then
    local err="$WORK/${STEP%% *}.err"
    if [ -s "$err" ]; then
      echo "--- stderr of step ${STEP%% *} ---" >&2
      grep -v 'unknown format' "$err" >&2 || true
    fi
    echo "inspector: FAILED at step '$STEP'; logs kept in $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# inspect NAME ARGS...: one Inspector CLI call; stdout to $WORK/NAME.json,
# stderr to $WORK/NAME.err. `--` keeps npx from reading --cli/--method itself;
# --no: never download (the tools are installed in $NPM_TOOLS). Node 22 comes
# first on PATH, so the Inspector's own `node` child runs on it too.
inspect() {
  local name=$1; shift
  STEP=$name
  (cd "$NPM_TOOLS" && timeout -k 5 60 npx --no -- mcp-inspector --cli "$@") \
    >"$WORK/$name.json" 2>"$WORK/$name.err"
}
# check NAME PYTHON: run PYTHON with `r` = the parsed JSON result of step NAME;
# any exception (a failed assert, a missing key) fails the check and prints r.
check() {
  local name=$1 code=$2
  STEP="$name (assert)"
  if ! python3 - "$WORK/$name.json" "$code" <<'PY'; then
import json, sys
path, code = sys.argv[1], sys.argv[2]
r = json.load(open(path))
try:
    exec(code, {"r": r, "json": json})
except Exception as e:  # an assert, or a result missing what the check reads
    print(f"check failed: {type(e).__name__}: {e}\n--- result ---\n{json.dumps(r, indent=2)[:1500]}", file=sys.stderr)
    sys.exit(1)
PY
    return 1
  fi
}

SIX='{"generate_image","edit_image","continue_editing","get_last_image_info","configure_gemini_token","get_configuration_status"}'
CHECK_TOOLS="
names = {t['name'] for t in r['tools']}
assert $SIX <= names, f'missing tools: {sorted($SIX - names)}'
"
# check_image NAME OUT: a generate_image result stored a 200000-byte PNG in OUT.
check_image() {
  local name=$1 out=$2
  check "$name" "
import hashlib, os
assert r.get('isError') is not True, 'isError is set'
s = r.get('structuredContent') or json.loads(r['content'][0]['text'])
assert s.get('path') or s.get('url'), 'no path or url in the result'
p = s['path']
assert os.path.dirname(p) == '$out', f'image not in the output folder: {p}'
data = open(p, 'rb').read()
assert len(data) == s['bytes'] == 200000, f'size {len(data)} vs reported {s.get(\"bytes\")}'
assert hashlib.sha256(data).hexdigest() == s['sha256'], 'sha256 does not match the file'
assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
assert any(c.get('type') == 'resource_link' for c in r['content']), 'no resource_link content'
"
}

KEY="fake-key-$RANDOM$RANDOM"
GPORT=$(free_port)
"$FAKE_BIN" --addr "127.0.0.1:$GPORT" --api-key "$KEY" >"$WORK/fake-gemini.log" 2>&1 &
PIDS+=($!)
wait_tcp "$GPORT" "${PIDS[-1]}"
export GEMINI_API_KEY="$KEY" GEMINI_BASE_URL="http://127.0.0.1:$GPORT"

# --- stdio: the Inspector starts the server itself (the default mode, no args).
mkdir -p "$WORK/out-stdio"
export NANO_BANANA_OUTPUT_DIR="$WORK/out-stdio"
inspect stdio-tools-list "$BIN" --method tools/list
check stdio-tools-list "$CHECK_TOOLS"
inspect stdio-generate "$BIN" --method tools/call --tool-name generate_image \
  --tool-arg 'prompt=a banana in space fake:size=200000'
check_image stdio-generate "$WORK/out-stdio"
unset NANO_BANANA_OUTPUT_DIR

# --- HTTP with a bearer token.
TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
PORT=$(free_port)
mkdir -p "$WORK/out-http"
NANO_BANANA_AUTH_TOKEN="$TOKEN" NANO_BANANA_OUTPUT_DIR="$WORK/out-http" \
  "$BIN" serve --http "127.0.0.1:$PORT" >"$WORK/server-http.log" 2>&1 &
PIDS+=($!)
STEP="http server /readyz"
wait_http "http://127.0.0.1:$PORT/readyz" "${PIDS[-1]}"
URL="http://127.0.0.1:$PORT/mcp"
AUTH=(--transport http --header "Authorization: Bearer $TOKEN")

inspect http-tools-list "$URL" "${AUTH[@]}" --method tools/list
check http-tools-list "$CHECK_TOOLS"
inspect http-config "$URL" "${AUTH[@]}" --method tools/call --tool-name get_configuration_status
check http-config "
assert r.get('isError') is not True, 'isError is set'
s = r.get('structuredContent') or json.loads(r['content'][0]['text'])
assert s['configured'] is True, 'Gemini key not configured'
assert s['transport'] == 'http', f\"transport {s['transport']!r}\"
assert s['memory']['budgetBytes'] > 0, 'no memory budget'
"
inspect http-generate "$URL" "${AUTH[@]}" --method tools/call --tool-name generate_image \
  --tool-arg 'prompt=a banana on a beach fake:size=200000'
check_image http-generate "$WORK/out-http"

# Refused without the token, and with a wrong one.
for bad in none wrong; do
  if [ "$bad" = none ]; then args=(--transport http); else args=(--transport http --header "Authorization: Bearer x$TOKEN"); fi
  if inspect "http-token-$bad" "$URL" "${args[@]}" --method tools/list; then
    echo "inspector: tools/list succeeded with token '$bad'; expected a refusal" >&2
    exit 1
  fi
  STEP="http-token-$bad (assert)"
  grep -qiE '401|unauthori|bearer' "$WORK/http-token-$bad.err" || {
    echo "inspector: the refusal (token '$bad') does not look like an auth error:" >&2
    cat "$WORK/http-token-$bad.err" >&2
    exit 1
  }
done

STEP="done"
echo "inspector: OK -- stdio: 6 tools listed, generate_image stored a 200000-byte PNG; http+bearer: 6 tools listed, get_configuration_status ok, generate_image ok; missing/wrong token refused"
