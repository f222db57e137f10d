#!/usr/bin/env bash
# HTTP throughput: tools/list on /mcp with hey, the server pinned to one
# core (taskset), and generate_image under load with a fake Gemini latency.
# Prints hey's summary lines. Needs: hey (Debian), a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/nano-banana-mcp
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
FP=$(port); SP=$(port); TOKEN=bench-token-123456
OUT=$(mktemp -d)
$BIN fake-gemini --addr 127.0.0.1:$FP --latency-ms "${FAKE_LATENCY_MS:-0}" >/dev/null 2>&1 &
FPID=$!
GEMINI_API_KEY=k GEMINI_BASE_URL=http://127.0.0.1:$FP NANO_BANANA_OUTPUT_DIR=$OUT \
  NANO_BANANA_AUTH_TOKEN=$TOKEN LOG_LEVEL=warn taskset -c 0 $BIN serve --http 127.0.0.1:$SP &
SPID=$!
trap 'kill $SPID $FPID 2>/dev/null; rm -rf $OUT' EXIT
for _ in $(seq 100); do curl -sf localhost:$SP/readyz >/dev/null && break; sleep 0.05; done
H=(-H "Authorization: Bearer $TOKEN" -H "Accept: application/json, text/event-stream" -H "MCP-Protocol-Version: 2025-06-18")
SID=$(curl -s -D - -o /dev/null -X POST "http://127.0.0.1:$SP/mcp" "${H[@]}" -H 'Content-Type: application/json' \
  -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"hey","version":"1"}}}' \
  | awk -F': ' 'tolower($1)=="mcp-session-id"{print $2}' | tr -d '\r')
curl -s -o /dev/null -X POST "http://127.0.0.1:$SP/mcp" "${H[@]}" -H 'Content-Type: application/json' -H "Mcp-Session-Id: $SID" \
  -d '{"jsonrpc":"2.0","method":"notifications/initialized"}'
for c in ${CONCURRENCY:-1 8 32}; do
  echo "== tools/list, concurrency $c, server on one core"
  hey -z "${DURATION:-10s}" -c "$c" -m POST -T application/json "${H[@]}" -H "Mcp-Session-Id: $SID" \
    -d '{"jsonrpc":"2.0","id":2,"method":"tools/list"}' "http://127.0.0.1:$SP/mcp" \
    | grep -E "Requests/sec|99% in|50% in|Status code|\[2"
done
echo "== server RSS after: $(awk '/VmRSS|VmHWM/{printf "%s %s kB  ", $1, $2}' /proc/$SPID/status)"
