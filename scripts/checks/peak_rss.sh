#!/usr/bin/env bash
# One 30 MiB image through the stdio server: generate into Azurite, generate
# into the local folder, and edit from a 30 MiB input; peak RSS (VmHWM)
# must stay under 48 MiB and every sha256 must match. Then a 4K PNG and a
# 4K JPEG with and without the preview: at most 4 MiB more with it.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 scripts/peak_rss.py --size-mib 30 --storage azure --max-mib 48
python3 scripts/peak_rss.py --size-mib 30 --storage local --max-mib 48
python3 scripts/peak_rss.py --size-mib 30 --storage azure --edit --max-mib 48
python3 scripts/bench_preview.py --max-extra-mib 4
