"""Checks on rendered Kubernetes manifests that schema validation misses.
Run by scripts/checks/k8s_validate.sh with the tools venv's Python:

    k8s_checks.py OUTDIR RENDERED.yaml... [--files FILE...]

- Splits each input into core objects (written to OUTDIR/<name>.core.yaml
  for `kubernetes-validate --strict`) and Prometheus Operator objects
  (monitoring.coreos.com), which plain Kubernetes schemas do not know.
  Those are validated here against pydantic models generated from the
  prometheus-operator CRDs (cloudcoil-models-prometheus-operator), made
  strict (unknown fields rejected), and every alert/record expression is
  parsed as PromQL. Any other non-core API group is an error.
- Every resource quantity must parse (Kubernetes quantity grammar), and
  requests must not exceed limits.
- Project invariants: each Deployment container has cpu and memory
  requests and limits, probes, a read-only root filesystem, no privilege
  escalation and all capabilities dropped; terminationGracePeriodSeconds is
  above the NANO_BANANA_SHUTDOWN_GRACE_SECS its ConfigMap sets.
- Every YAML file under k8s/ is used by some kustomization, or is an
  *.example.yaml validated on its own (passed with --files).
"""

import inspect
import os
import re
import sys
from decimal import Decimal

import yaml

ERRORS = []


def err(where, msg):
    ERRORS.append(f"{where}: {msg}")


# --- quantities ---------------------------------------------------------------
# <quantity> ::= <signedNumber><suffix>; <suffix> ::= <binarySI> | <decimalExponent> | <decimalSI>
_NUM = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
QUANTITY = re.compile(rf"^({_NUM})(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
MULT = {
    None: Decimal(1), "m": Decimal("0.001"), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9, "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}


def quantity(where, v):
    """The value of a quantity, or None (and an error) when it does not parse."""
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        err(where, f"quantity {v!r} is not a number or string")
        return None
    m = QUANTITY.match(str(v).strip()) if isinstance(v, str) else QUANTITY.match(repr(v))
    if not m:
        err(where, f"{v!r} is not a Kubernetes quantity (e.g. 128Mi, 0.5, 100m, 1e3)")
        return None
    num, suffix = Decimal(m.group(1)), m.group(2)
    if suffix and suffix[0] in "eE" and len(suffix) > 1:
        return num * (Decimal(10) ** int(suffix[1:]))
    return num * MULT[suffix]


def walk(node, path):
    """Yields (path, key, value) for every mapping entry, depth first."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield path, k, v
            yield from walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


def check_quantities(where, doc):
    for path, key, val in walk(doc, ""):
        if key == "resources" and isinstance(val, dict):
            parsed = {}
            for section in ("requests", "limits"):
                for res, q in (val.get(section) or {}).items():
                    parsed[(section, res)] = quantity(f"{where}{path}.resources.{section}.{res}", q)
            for (section, res), q in parsed.items():
                lim = parsed.get(("limits", res))
                if section == "requests" and q is not None and lim is not None and q > lim:
                    err(f"{where}{path}.resources", f"{res} request {q} exceeds limit {lim}")
        elif key in ("sizeLimit", "averageValue") or (key == "value" and path.endswith(".target")):
            quantity(f"{where}{path}.{key}", val)


# --- project invariants -------------------------------------------------------
def check_deployment(where, doc, configmaps):
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    for c in spec.get("containers", []):
        cw = f"{where} container {c.get('name')}"
        res = c.get("resources", {})
        for section in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in (res.get(section) or {}):
                    err(cw, f"no {section}.{r}")
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if probe not in c:
                err(cw, f"no {probe}")
        sc = c.get("securityContext", {})
        if sc.get("readOnlyRootFilesystem") is not True:
            err(cw, "readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            err(cw, "allowPrivilegeEscalation is not false")
        if "ALL" not in (sc.get("capabilities", {}).get("drop") or []):
            err(cw, "capabilities are not all dropped")
        for ref in c.get("envFrom", []):
            name = (ref.get("configMapRef") or {}).get("name")
            grace = configmaps.get(name, {}).get("NANO_BANANA_SHUTDOWN_GRACE_SECS")
            if grace is not None:
                tgps = spec.get("terminationGracePeriodSeconds", 30)
                if not int(tgps) > int(grace):
                    err(where, f"terminationGracePeriodSeconds {tgps} is not above NANO_BANANA_SHUTDOWN_GRACE_SECS {grace}")


# --- Prometheus Operator objects ----------------------------------------------
_MODELS = None


def strict_models():
    """prometheus-operator v1 models with unknown fields forbidden."""
    global _MODELS
    if _MODELS is None:
        import pydantic
        from cloudcoil import apimachinery
        from cloudcoil.models.prometheus_operator import v1

        classes = [
            cls for mod in (apimachinery, v1) for cls in vars(mod).values()
            if inspect.isclass(cls) and issubclass(cls, pydantic.BaseModel) and cls.__module__ == mod.__name__
        ]
        for cls in classes:
            cls.model_config["extra"] = "forbid"
        for cls in classes:
            cls.model_rebuild(force=True)
        _MODELS = v1
    return _MODELS


def check_monitoring(where, doc):
    import promql_parser

    kind = doc.get("kind")
    if doc.get("apiVersion") != "monitoring.coreos.com/v1" or kind not in ("ServiceMonitor", "PrometheusRule", "PodMonitor"):
        err(where, f"unexpected {doc.get('apiVersion')} {kind}")
        return
    try:
        getattr(strict_models(), kind).model_validate(doc)
    except Exception as e:  # pydantic.ValidationError: one line per problem
        err(where, "does not match the prometheus-operator CRD: " + str(e).replace("\n", " | "))
    if kind == "PrometheusRule":
        for g in doc.get("spec", {}).get("groups", []):
            for r in g.get("rules", []):
                name = r.get("alert") or r.get("record")
                try:
                    promql_parser.parse(str(r.get("expr", "")))
                except Exception as e:
                    err(f"{where} rule {name}", f"expr is not valid PromQL: {e}")


CORE_GROUPS = {"v1", "apps/v1", "autoscaling/v2", "policy/v1", "networking.k8s.io/v1",
               "rbac.authorization.k8s.io/v1", "batch/v1"}


def check_file(path, outdir):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    if not docs:
        err(path, "no objects")
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d.get("kind") == "ConfigMap"}
    core = []
    for d in docs:
        where = f"{os.path.basename(path)} {d.get('kind')}/{d.get('metadata', {}).get('name')}"
        api = d.get("apiVersion", "")
        if api.startswith("monitoring.coreos.com/"):
            check_monitoring(where, d)
        elif api in CORE_GROUPS:
            core.append(d)
        else:
            err(where, f"apiVersion {api!r} is neither a core group this check knows nor monitoring.coreos.com")
        check_quantities(where, d)
        if d.get("kind") == "Deployment":
            check_deployment(where, d, configmaps)
    out = os.path.join(outdir, os.path.splitext(os.path.basename(path))[0] + ".core.yaml")
    with open(out, "w") as f:
        yaml.safe_dump_all(core, f, sort_keys=False)
    print(out)
    return len(docs)


def check_tree(root, standalone):
    """Every YAML file under root is a kustomization, referenced by one, or standalone."""
    used = set(os.path.abspath(p) for p in standalone)
    for dirpath, _, files in os.walk(root):
        if "kustomization.yaml" not in files:
            continue
        used.add(os.path.abspath(os.path.join(dirpath, "kustomization.yaml")))
        k = yaml.safe_load(open(os.path.join(dirpath, "kustomization.yaml"))) or {}
        refs = list(k.get("resources", [])) + list(k.get("components", []))
        refs += [p["path"] for p in k.get("patches", []) if isinstance(p, dict) and "path" in p]
        for r in refs:
            used.add(os.path.abspath(os.path.join(dirpath, r)))
    for dirpath, _, files in os.walk(root):
        for fn in files:
            p = os.path.abspath(os.path.join(dirpath, fn))
            if fn.endswith((".yaml", ".yml")) and p not in used:
                err(os.path.relpath(p), "not referenced by any kustomization.yaml (and not an *.example.yaml): it would go unvalidated")


def main(argv):
    outdir, rest = argv[0], argv[1:]
    files = []
    if "--files" in rest:
        i = rest.index("--files")
        rest, files = rest[:i], rest[i + 1:]
    n = sum(check_file(p, outdir) for p in rest + files)
    check_tree("k8s", files)
    for e in ERRORS:
        print("ERROR " + e, file=sys.stderr)
    print(f"k8s_checks: {n} objects, {len(ERRORS)} problems", file=sys.stderr)
    return 1 if ERRORS else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
