#!/usr/bin/env bash
# Issue 7's soak, short for the test command (200 sequential + 50 at once,
# a mix of good and failing calls, 64 MiB cgroup, Azurite); run
# `python3 scripts/soak.py --long` for 1,000 + 200.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 scripts/soak.py
