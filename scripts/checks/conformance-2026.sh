#!/usr/bin/env bash
# The MCP conformance suite for the current revision (@modelcontextprotocol/
# conformance 0.2.0-alpha.12, pinned in scripts/lib/npm-tools/ as
# conformance-2026-07-28), `server --requirements 2026-07-28`: exactly the
# scenarios that revision requires, plus the extension and pending ones it
# runs unscored. Against the HTTP server twice, stateless and with sessions.
#
# Judged per check, not per scenario: many scenarios mix checks any server
# must pass with checks that call the suite's own fixture tools
# (test_simple_text, test_missing_capability, …). Every check must pass,
# be skipped or warn, except those listed with their reason in
# scripts/checks/conformance-2026-expected-failures.txt (`scenario/check-id`).
# A listed check that passes in both runs is stale and fails this script, so
# the list stays honest; so does a scenario that produced no results.
#
# Auth: as in conformance.sh, the suite cannot send headers, so the server
# runs with --no-auth (allowed only on loopback).
#
# Env: NANO_BANANA_BIN, NANO_BANANA_FAKE_BIN, CONFORMANCE_KEEP=1,
# CONFORMANCE_EXPECTED_FAILURES (another list, to test this script).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
# shellcheck source=scripts/lib/npm-tools.sh
. scripts/lib/npm-tools.sh
ensure_npm_tools "$ROOT"
SUITE=(node "$NPM_TOOLS/node_modules/conformance-2026-07-28/dist/index.js")
EXPECTED=${CONFORMANCE_EXPECTED_FAILURES:-$ROOT/scripts/checks/conformance-2026-expected-failures.txt}

SRC_BIN=${NANO_BANANA_BIN:-$ROOT/target/release/nano-banana-mcp}
FAKE_BIN=${NANO_BANANA_FAKE_BIN:-$ROOT/target/release/nano-banana-fake-gemini}
[ -x "$SRC_BIN" ] || { echo "conformance-2026: no server binary at $SRC_BIN (cargo build --release first)" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/nb-conformance-2026.XXXXXX")
BIN="$WORK/nano-banana-mcp"
cp "$SRC_BIN" "$BIN"
clean_server_env "$WORK"
PIDS=()
cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  kill_exe "$BIN"
  if [ "${CONFORMANCE_KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
    echo "conformance-2026: results and server logs kept in $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

KEY="fake-key-$RANDOM$RANDOM"
GPORT=$(free_port)
"$FAKE_BIN" --addr "127.0.0.1:$GPORT" --api-key "$KEY" >"$WORK/fake-gemini.log" 2>&1 &
PIDS+=($!)
wait_tcp "$GPORT" "${PIDS[-1]}"

run_suite() {
  local mode=$1; shift
  local port pid rc=0
  port=$(free_port)
  mkdir -p "$WORK/$mode/out"
  GEMINI_API_KEY="$KEY" GEMINI_BASE_URL="http://127.0.0.1:$GPORT" \
    NANO_BANANA_OUTPUT_DIR="$WORK/$mode/out" \
    "$BIN" serve --http "127.0.0.1:$port" --no-auth "$@" >"$WORK/$mode/server.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  if ! wait_http "http://127.0.0.1:$port/readyz" "$pid"; then
    cat "$WORK/$mode/server.log" >&2
    return 1
  fi
  timeout -k 5 300 "${SUITE[@]}" server --url "http://127.0.0.1:$port/mcp" \
    --requirements 2026-07-28 -o "$WORK/$mode/results" >"$WORK/$mode/suite.log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then
    echo "conformance-2026: the suite exited with $rc ($mode); its output:" >&2
    cat "$WORK/$mode/suite.log" >&2
    return 1
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "conformance-2026: the server ($mode) died during the suite; its log:" >&2
    cat "$WORK/$mode/server.log" >&2
    return 1
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

run_suite stateless --stateless
run_suite stateful

python3 - "$WORK" "$EXPECTED" <<'PY'
import json, os, re, sys

work, expected_path = sys.argv[1], sys.argv[2]
expected = {}
for line in open(expected_path):
    body, _, reason = line.partition("#")
    name = body.strip()
    if name:
        expected[name] = reason.strip() or "(no reason given)"

# The scenarios the suite said it would run, from its own log.
modes = ("stateless", "stateful")
dir_re = re.compile(r"^server-(.+)-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d+Z$")
problems, summary, failing = [], [], {m: set() for m in modes}
for mode in modes:
    log = open(os.path.join(work, mode, "suite.log")).read()
    planned = re.findall(r"^=== Running scenario: (\S+) ===$", log, re.M)
    if not planned:
        problems.append(f"{mode}: the suite ran no scenario")
    results = os.path.join(work, mode, "results")
    found = {}
    for d in os.listdir(results) if os.path.isdir(results) else []:
        m = dir_re.match(d)
        if m:
            found[m.group(1)] = os.path.join(results, d, "checks.json")
    counts = {"pass": 0, "xfail": 0, "FAIL": 0}
    print(f"\n--- conformance 2026-07-28, {mode} server ---")
    for scenario in planned:
        path = found.get(scenario)
        if not path or not os.path.exists(path):
            problems.append(f"{mode}: {scenario} left no results (crashed or did not run)")
            continue
        for c in json.load(open(path)):
            cid = f"{scenario}/{c.get('id')}"
            if c.get("status") != "FAILURE":
                counts["pass"] += 1
                continue
            failing[mode].add(cid)
            why = (c.get("errorMessage") or c.get("description") or "")[:160]
            if cid in expected:
                counts["xfail"] += 1
            else:
                counts["FAIL"] += 1
                print(f"  FAIL   {cid}: {why}")
                problems.append(f"{mode}: {cid} failed: {why}")
    summary.append(f"{mode} {counts['pass']} checks pass, {counts['xfail']} expected-fail, "
                   f"{counts['FAIL']} unexpected-fail")
    print("  " + summary[-1])

for cid in sorted(expected):
    if not any(cid in failing[m] for m in modes):
        problems.append(f"{cid}: listed as an expected failure but passed (or no longer exists) in both runs: remove it")

print()
if problems:
    print("conformance-2026: PROBLEMS", file=sys.stderr)
    for p in problems:
        print("  - " + p, file=sys.stderr)
    print("conformance-2026: FAILED -- " + "; ".join(summary))
    sys.exit(1)
print("conformance-2026: OK -- " + "; ".join(summary))
PY
