# shellcheck shell=bash
# Sourced by scripts/checks/*.sh: makes sure the tools venv exists and
# matches scripts/lib/tools-requirements.txt, then sets TOOLS_BIN.
# The venv lives in .cache/venv (git-ignored); TOOLS_VENV overrides.
# A run with an up-to-date venv installs nothing.
tools_venv() {
  local root req venv stamp want
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  req=$root/scripts/lib/tools-requirements.txt
  venv=${TOOLS_VENV:-$root/.cache/venv}
  stamp=$venv/.tools-requirements.sha256
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "tools_venv: installing $req into $venv" >&2
    local t0=$SECONDS
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$req"
    echo "$want" >"$stamp"
    echo "tools_venv: installed in $((SECONDS - t0)) s" >&2
  fi
  # shellcheck disable=SC2034  # used by the scripts that source this
  TOOLS_BIN=$venv/bin
}
