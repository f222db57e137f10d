#!/usr/bin/env bash
# Issue 12 ("bounded everywhere"), tested under a real kernel limit of
# 128 MiB: the attacks of scripts/attacks.py (slow and idle connections,
# JSON blow-ups, session floods, big data: URI edits, stateless leaks, huge
# progress tokens) must cause no OOM kill and leave a server that answers
# /healthz and serves a normal call. The waiting-call benchmark
# (scripts/bench_waits.py) is not part of the check yet: a waiting call
# still costs ~90 KiB and holds the image path's reservation (BENCHMARKS.md).
# Skipped where no writable cgroup v1 memory controller exists.
set -euo pipefail
cd "$(dirname "$0")/../.."
probe=/sys/fs/cgroup/memory/nbm-probe-$$
if ! { mkdir "$probe" && rmdir "$probe"; } 2>/dev/null; then
  echo "attacks.sh: skipped (no writable cgroup v1 memory controller)"
  exit 0
fi
exec python3 scripts/attacks.py --limit-mib 128 --strict
