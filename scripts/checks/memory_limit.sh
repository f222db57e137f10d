#!/usr/bin/env bash
# Issue 4's claim, tested under a real kernel limit: inside a 64 MiB cgroup,
# 16 concurrent 30 MiB generate_image calls into Azurite, then 100 in
# sequence; no OOM kill, every result verified by sha256 (or a clear busy
# error), RSS back within 8 MiB of baseline within 5 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 scripts/memload.py --limit-mib 64 --size-mib 30 --concurrency 16 --sequential 100
