#!/usr/bin/env bash
# Issue 16's benchmark as a check, under a real kernel limit of 128 MiB:
# 1,000 durable tasks started at once over stateless HTTP (MCP 2026-07-28,
# the Tasks extension) against a Gemini that answers each after 20 s;
# every task must complete with the right sha256, with no OOM kill
# (scripts/bench_tasks.py; figures in BENCHMARKS.md, "Tasks"). Skipped
# where no writable cgroup v1 memory controller exists.
set -euo pipefail
cd "$(dirname "$0")/../.."
probe=/sys/fs/cgroup/memory/nbm-probe-$$
if ! { mkdir "$probe" && rmdir "$probe"; } 2>/dev/null; then
  echo "tasks_load.sh: skipped (no writable cgroup v1 memory controller)"
  exit 0
fi
python3 scripts/bench_tasks.py --tasks 1000 --wait-ms 20000 --size-mib 1 --limit-mib 128
