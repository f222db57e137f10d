#!/usr/bin/env bash
# Container smoke test: the release binary in a FROM-scratch image
# (Dockerfile.local, nothing pulled), run the way Kubernetes runs it:
# non-root (uid 65532, from the image), read-only root filesystem, all
# capabilities dropped, no-new-privileges, a 64 MiB memory limit, tmpfs for
# /tmp and /data. A fake Gemini runs on the host's loopback; the container
# shares the host network so everything stays on 127.0.0.1.
#
# 1. stdio: one generate_image through `podman run -i`; the server must
#    see the 64 MiB cgroup limit and write the image into /data. Then an
#    output dir outside the mounts must fail with EROFS.
# 2. streamable HTTP: /readyz 200, uid 65532 and a 64 MiB memory cgroup
#    seen from the host, /healthz, 401 without the bearer token, one
#    generate_image with curl (initialize, Mcp-Session-Id,
#    notifications/initialized, tools/call), /metrics; then SIGTERM with a
#    call in flight: /readyz 503, the call completes, exit 0 within the
#    shutdown grace period.
#
# Needs podman (daemonless). Without it: "skipped: podman not installed",
# exit 0 -- unless CONTAINER_SMOKE_INSTALL=1, or CI=true and
# CONTAINER_SMOKE_INSTALL is not 0: then podman and runc are installed from
# Debian's packages first (apt-get update + install measured at ~13 s; an
# install that fails also skips). Other knobs: CONTAINER_SMOKE_RUNTIME
# (OCI runtime; default runc when installed, since crun 1.8 refuses hosts
# with cgroup v1 and v2 mounted together), CONTAINER_SMOKE_KEEP=1 (keep the
# work dir).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

say() { printf 'container_smoke: %s\n' "$*" >&2; }
die() { say "FAIL: $*"; exit 1; }

install_podman() {
  command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] || return 1
  say "installing podman and runc (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get update -qq >/dev/null &&
    timeout 300 apt-get install -y -qq --no-install-recommends podman runc >/dev/null
}

if ! command -v podman >/dev/null 2>&1; then
  want=${CONTAINER_SMOKE_INSTALL:-auto}
  if [ "$want" = 1 ] || { [ "$want" = auto ] && [ "${CI:-}" = true ]; }; then
    install_podman || say "podman install failed"
  fi
  if ! command -v podman >/dev/null 2>&1; then
    echo "skipped: podman not installed"
    exit 0
  fi
fi

SRC_BIN=$ROOT/target/release/nano-banana-mcp
FAKE_BIN=$ROOT/target/release/nano-banana-fake-gemini
[ -x "$SRC_BIN" ] || die "no $SRC_BIN: build it first (cargo build --release)"
command -v curl >/dev/null || die "curl not found"
command -v python3 >/dev/null || die "python3 not found"

W=$(mktemp -d "${TMPDIR:-/tmp}/nb-container-smoke.XXXXXX")
TAG=localhost/nano-banana-mcp:smoke-$$
RUNTIME=${CONTAINER_SMOKE_RUNTIME:-}
if [ -z "$RUNTIME" ] && command -v runc >/dev/null 2>&1; then RUNTIME=runc; fi
# A private store under $W: nothing is left in the machine's store, cleanup
# is one rm, and vfs needs no overlay or fuse support from the kernel.
PODMAN=(podman --root "$W/storage" --runroot "$W/run" --storage-driver vfs
  --cgroup-manager cgroupfs --events-backend file)
[ -n "$RUNTIME" ] && PODMAN+=(--runtime "$RUNTIME")
FAKE_PID=

cleanup() {
  local rc=$?
  "${PODMAN[@]}" rm -af -t 0 >/dev/null 2>&1 || true
  "${PODMAN[@]}" rmi -af >/dev/null 2>&1 || true
  if [ -n "$FAKE_PID" ]; then kill "$FAKE_PID" 2>/dev/null || true; wait "$FAKE_PID" 2>/dev/null || true; fi
  # Anything podman left mounted under $W (shm, tmpfs) must go before rm.
  awk -v w="$W" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  if [ "${CONTAINER_SMOKE_KEEP:-}" = 1 ]; then say "kept $W"; else rm -rf "$W"; fi
  exit "$rc"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_tcp() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

# Copy first: the binary may be rebuilt while this runs.
cp "$SRC_BIN" "$W/nano-banana-mcp"
BIN=$W/nano-banana-mcp

say "podman $(podman --version | awk '{print $3}'), runtime ${RUNTIME:-default}, storage vfs under $W"
t0=$SECONDS
bash scripts/container/stage_local.sh "$W/ctx" "$BIN"
"${PODMAN[@]}" build -q --pull=never --isolation chroot -f "$W/ctx/Dockerfile.local" -t "$TAG" "$W/ctx" >/dev/null ||
  die "image build failed"
say "built $TAG ($("${PODMAN[@]}" image inspect -f '{{.Size}}' "$TAG") bytes) in $((SECONDS - t0)) s"

cfg=$("${PODMAN[@]}" image inspect -f '{{.Config.User}}|{{json .Config.Entrypoint}}|{{.Config.StopSignal}}' "$TAG")
[ "$cfg" = '65532:65532|["/nano-banana-mcp"]|SIGTERM' ] || die "image config is $cfg"

# Fake Gemini on the host's loopback, with a key the server must send.
GKEY="smoke-key-$RANDOM$RANDOM"
GPORT=$(free_port)
"$FAKE_BIN" --addr "127.0.0.1:$GPORT" --api-key "$GKEY" >"$W/fake-gemini.log" 2>&1 &
FAKE_PID=$!
wait_tcp "$GPORT" || { cat "$W/fake-gemini.log" >&2; die "fake Gemini did not start"; }
kill -0 "$FAKE_PID" 2>/dev/null || { cat "$W/fake-gemini.log" >&2; die "fake Gemini exited (port taken?)"; }

# Locked down as in k8s/base/deployment.yaml. Explicit ulimits: podman's
# defaults (nofile 1048576) exceed this sandbox's hard limits, and raising
# them needs CAP_SYS_RESOURCE. (The commas are tmpfs mount options.)
NOFILE=$(ulimit -Hn)
if [ "$NOFILE" = unlimited ] || [ "$NOFILE" -gt 65536 ]; then NOFILE=65536; fi
# shellcheck disable=SC2054
RUN_OPTS=(--network host --read-only --memory 64m --memory-swap 64m
  --cap-drop ALL --security-opt no-new-privileges
  --ulimit "nofile=$NOFILE:$NOFILE" --ulimit nproc=4096:4096
  --tmpfs /tmp:rw,size=16m,mode=1777 --tmpfs /data:rw,size=64m,mode=0700,U
  -e GEMINI_API_KEY="$GKEY" -e GEMINI_BASE_URL="http://127.0.0.1:$GPORT"
  -e GEMINI_MAX_ATTEMPTS=1 -e LOG_LEVEL=info)

# Prints "ok" or why not, for one tools/call result (JSON-RPC message on stdin).
check_result() {
  python3 -c '
import json, sys
msg = json.load(sys.stdin)
res = msg.get("result")
if res is None:
    sys.exit("no result: %s" % json.dumps(msg)[:500])
if res.get("isError") is True:
    sys.exit("tool error: %s" % json.dumps(res.get("content"))[:500])
sc = res.get("structuredContent") or {}
url, path = sc.get("url") or "", sc.get("path") or ""
if not (url.startswith(("file:///data/", "http://", "https://")) or path.startswith("/data/")):
    sys.exit("no URL or /data path in %s" % json.dumps(res)[:500])
if sc.get("bytes") != 200000:
    sys.exit("bytes %r, want 200000" % sc.get("bytes"))
print("ok", url or path)
'
}

# --- 1. stdio ---------------------------------------------------------------
say "stdio: generate_image through podman run -i"
python3 - "$W/stdio.out" "${PODMAN[@]}" run --rm -i --name "nb-smoke-stdio-$$" "${RUN_OPTS[@]}" -e LOG_FORMAT=text "$TAG" serve <<'PY' 2>"$W/stdio.err" || { cat "$W/stdio.err" >&2; die "stdio round trip failed"; }
import json, subprocess, sys, threading
out_path, cmd = sys.argv[1], sys.argv[2:]
p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
timer = threading.Timer(60, p.kill)
timer.start()
def send(m):
    p.stdin.write((json.dumps(m) + "\n").encode()); p.stdin.flush()
def wait_id(i):
    for line in p.stdout:
        m = json.loads(line)
        if m.get("id") == i:
            return m
    sys.exit("stdout closed before response %d" % i)
send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {},
    "clientInfo": {"name": "container-smoke", "version": "0"}}})
wait_id(1)
send({"jsonrpc": "2.0", "method": "notifications/initialized"})
send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
    "name": "generate_image", "arguments": {"prompt": "smoke fake:size=200000"}}})
res = wait_id(2)
p.stdin.close()
rc = p.wait()
timer.cancel()
open(out_path, "w").write(json.dumps(res))
if rc != 0:
    sys.exit("container exited %d after stdin closed" % rc)
PY
check_result <"$W/stdio.out" >&2 || die "stdio generate_image result"
grep -q 'memory limit 64 MiB from cgroup' "$W/stdio.err" ||
  { cat "$W/stdio.err" >&2; die "server inside did not see the 64 MiB cgroup limit"; }
say "stdio: ok; inside: $(grep -o 'memory limit 64 MiB[^"]*' "$W/stdio.err" | head -1)"

# The root filesystem really is read-only: /home/nonroot belongs to the
# server's user, so only --read-only stops it from writing there.
"${PODMAN[@]}" run --rm "${RUN_OPTS[@]}" -e LOG_FORMAT=text -e NANO_BANANA_OUTPUT_DIR=/home/nonroot/out \
  "$TAG" serve </dev/null >/dev/null 2>"$W/ro.err" || true
grep -q 'Read-only file system' "$W/ro.err" ||
  { cat "$W/ro.err" >&2; die "writing outside /tmp and /data did not fail with EROFS"; }
say "read-only root: ok (output dir outside the mounts refused with EROFS)"

# --- 2. streamable HTTP -----------------------------------------------------
HPORT=$(free_port)
TOKEN="smoke-token-$RANDOM$RANDOM$RANDOM"
GRACE=5
NAME="nb-smoke-http-$$"
BASE="http://127.0.0.1:$HPORT"
"${PODMAN[@]}" run -d --name "$NAME" "${RUN_OPTS[@]}" \
  -e NANO_BANANA_AUTH_TOKEN="$TOKEN" \
  -e NANO_BANANA_ALLOWED_HOSTS="127.0.0.1:$HPORT,localhost:$HPORT,127.0.0.1,localhost" \
  -e NANO_BANANA_SHUTDOWN_GRACE_SECS="$GRACE" \
  "$TAG" serve --http "127.0.0.1:$HPORT" >/dev/null || die "podman run -d failed"
logs() { "${PODMAN[@]}" logs "$NAME" 2>&1 | tail -n 40 >&2 || true; }

ready=
for _ in $(seq 1 150); do
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/readyz" || true)
  [ "$code" = 200 ] && { ready=1; break; }
  [ "$("${PODMAN[@]}" inspect -f '{{.State.Running}}' "$NAME")" = true ] || break
  sleep 0.2
done
[ -n "$ready" ] || { logs; die "/readyz never answered 200"; }
say "HTTP: /readyz 200"

# From the host: the process runs as 65532 inside a 64 MiB memory cgroup.
PID=$("${PODMAN[@]}" inspect -f '{{.State.Pid}}' "$NAME")
uid=$(awk '/^Uid:/ { print $2 }' "/proc/$PID/status")
[ "$uid" = 65532 ] || die "server runs as uid $uid"
mem_cg=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ { print $3 }' "/proc/$PID/cgroup")
if [ -n "$mem_cg" ] && [ -r "/sys/fs/cgroup/memory$mem_cg/memory.limit_in_bytes" ]; then
  lim=$(cat "/sys/fs/cgroup/memory$mem_cg/memory.limit_in_bytes")
else
  lim=$(cat "/sys/fs/cgroup$(awk -F: '$1 == 0 { print $3 }' "/proc/$PID/cgroup")/memory.max")
fi
[ "$lim" = 67108864 ] || die "container memory cgroup limit is $lim"
say "HTTP: pid $PID uid $uid, cgroup memory limit $lim"

[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$BASE/healthz")" = 200 ] || die "/healthz"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST "$BASE/mcp" \
  -H 'Accept: application/json, text/event-stream' -H 'Content-Type: application/json' --data '{}')
[ "$code" = 401 ] || die "/mcp without a token answered $code, want 401"

# POST one JSON-RPC message; the body goes to $W/$1.body, headers to $W/$1.hdr.
mcp_post() {
  local name=$1 data=$2; shift 2
  curl -sS --max-time 60 -o "$W/$name.body" -D "$W/$name.hdr" -w '%{http_code}' -X POST "$BASE/mcp" \
    -H "Authorization: Bearer $TOKEN" \
    -H 'Accept: application/json, text/event-stream' \
    -H 'Content-Type: application/json' "$@" --data "$data"
}
# The JSON-RPC message with id $1 from a JSON or SSE body on stdin.
pick_id() {
  python3 -c '
import json, sys
want, text = int(sys.argv[1]), sys.stdin.read()
cands = [text] + [l[5:].strip() for l in text.splitlines() if l.startswith("data:")]
for c in cands:
    try:
        m = json.loads(c)
    except ValueError:
        continue
    if isinstance(m, dict) and m.get("id") == want:
        print(json.dumps(m)); sys.exit(0)
sys.exit("no response with id %d in: %s" % (want, text[:500]))
' "$1"
}

code=$(mcp_post init '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"container-smoke","version":"0"}}}') || true
[ "$code" = 200 ] || { cat "$W/init.body" >&2; logs; die "initialize answered $code"; }
SID=$(awk 'tolower($1) == "mcp-session-id:" { print $2 }' "$W/init.hdr" | tr -d '\r')
[ -n "$SID" ] || die "no Mcp-Session-Id header on the initialize response"
PROTO=$(pick_id 1 <"$W/init.body" | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["protocolVersion"])') ||
  die "initialize result"
SESSION_HDRS=(-H "Mcp-Session-Id: $SID" -H "MCP-Protocol-Version: $PROTO")

code=$(mcp_post initialized '{"jsonrpc":"2.0","method":"notifications/initialized"}' "${SESSION_HDRS[@]}") || true
[ "$code" = 202 ] || [ "$code" = 200 ] || die "notifications/initialized answered $code"

code=$(mcp_post call '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"generate_image","arguments":{"prompt":"smoke fake:size=200000"}}}' "${SESSION_HDRS[@]}") || true
[ "$code" = 200 ] || { cat "$W/call.body" >&2; logs; die "tools/call answered $code"; }
pick_id 2 <"$W/call.body" | check_result >&2 || { logs; die "HTTP generate_image result"; }
say "HTTP: generate_image ok (session $SID)"

# Behind the token on the MCP listener (anonymous: 401).
[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$BASE/metrics")" = 401 ] || die "/metrics without the token is not 401"
curl -sS --max-time 5 -H "Authorization: Bearer $TOKEN" "$BASE/metrics" >"$W/metrics" || die "/metrics"
grep -Eq '^nano_banana_memory_limit_bytes 67108864(\.0)?$' "$W/metrics" ||
  { grep '^nano_banana_memory' "$W/metrics" >&2 || true; die "/metrics: memory limit is not 64 MiB"; }
grep -q '^nano_banana_memory_budget_bytes ' "$W/metrics" || die "/metrics: no nano_banana_memory_budget_bytes"
say "HTTP: /metrics ok"

# SIGTERM (the image's STOPSIGNAL) with a call in flight (the fake Gemini
# waits 2 s before answering): /readyz turns 503, the call still finishes,
# then the server exits 0 by itself within the grace period.
mcp_post slow '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"generate_image","arguments":{"prompt":"smoke fake:size=200000 fake:latency=2000"}}}' \
  "${SESSION_HDRS[@]}" >"$W/slow.code" 2>"$W/slow.err" &
SLOW_PID=$!
inflight=0
for _ in $(seq 1 100); do
  curl -s --max-time 2 -H "Authorization: Bearer $TOKEN" "$BASE/metrics" | grep -Eq '^nano_banana_calls_in_flight [1-9]' && { inflight=1; break; }
  sleep 0.1
done
[ "$inflight" = 1 ] || die "the slow call never showed in nano_banana_calls_in_flight"
t0=$(date +%s%N)
"${PODMAN[@]}" kill --signal TERM "$NAME" >/dev/null
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/readyz" || true)
[ "$code" = 503 ] || die "/readyz answered $code while draining, want 503"
wait "$SLOW_PID" || true
[ "$(cat "$W/slow.code")" = 200 ] || { cat "$W/slow.err" "$W/slow.body" >&2; logs; die "in-flight call answered $(cat "$W/slow.code") during drain"; }
pick_id 3 <"$W/slow.body" | check_result >&2 || { logs; die "in-flight call during drain"; }
say "HTTP: draining: /readyz 503, the call in flight finished"
rc=$(timeout $((GRACE + 15)) "${PODMAN[@]}" wait "$NAME") || { logs; die "no exit within $((GRACE + 15)) s of SIGTERM"; }
ms=$((($(date +%s%N) - t0) / 1000000))
[ "$rc" = 0 ] || { logs; die "exit code $rc after SIGTERM, want 0"; }
[ "$ms" -le $(((GRACE + 3) * 1000)) ] || die "took $ms ms to exit, grace is $GRACE s"
say "HTTP: SIGTERM -> exit 0 in $ms ms"
say "ok"
