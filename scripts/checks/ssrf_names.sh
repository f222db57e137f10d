#!/usr/bin/env bash
# Issue 13: SSRF by name. scripts/ssrf_names.py runs in a network and
# mount namespace of its own (only loopback; a private /etc/hosts maps
# test names to every address class), so nothing can leave the machine.
# Skipped where namespaces cannot be made (not root, no unshare).
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! unshare -n -m true 2>/dev/null; then
  echo "ssrf_names.sh: skipped (cannot create network and mount namespaces)"
  exit 0
fi
NBM_IN_NETNS=1 exec unshare -n -m python3 scripts/ssrf_names.py
