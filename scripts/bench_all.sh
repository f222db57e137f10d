#!/usr/bin/env bash
# Regenerates every table in BENCHMARKS.md (prints them; paste over the old).
# Needs a release build (cargo build --release) and Azurite
# (AZURITE_BLOB_ENDPOINT, or node_modules from `npm install`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench extract 2>/dev/null | grep '^|'
python3 scripts/bench_e2e.py
python3 scripts/bench_e2e.py --drip-ms 3 --concurrency 1
python3 scripts/peak_rss.py --size-mib 30 --storage azure
python3 scripts/peak_rss.py --size-mib 30 --edit
python3 scripts/bench_preview.py
for s in 1 8 30; do for c in 1 4 16; do
  python3 scripts/memload.py --limit-mib 64 --size-mib "$s" --concurrency "$c" --sequential 0
done; done
python3 scripts/bench_http.py
python3 scripts/bench_http.py --skip-list --storage azure
