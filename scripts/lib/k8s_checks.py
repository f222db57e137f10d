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
- NetworkPolicy egress (docs/kubernetes.md, "Network policy"): a rule
  that can reach port 53 allows only port 53, and only to the cluster DNS
  pods (namespaceSelector and podSelector in one peer) or one address (a
  node-local cache); every other rule goes to ipBlocks whose except list
  holds every private range of their family (PRIVATE_RANGES) that they
  overlap. A policy annotated nano-banana-mcp/private-egress (never one
  under k8s/base) may reach private ipBlocks instead, never a selector.
  Every ipBlock is canonical, one family, its excepts strictly inside it.
  Where a Deployment's server pods are, some policy restricts their egress.
- Every YAML file under k8s/ is used by some kustomization, or is an
  *.example.yaml validated on its own (passed with --files).
"""

import inspect
import ipaddress
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


# --- NetworkPolicy egress -----------------------------------------------------
# Never reachable from the server's pods except through a policy annotated
# PRIVATE_EGRESS: the VNet and the cluster's pod and Service CIDRs (RFC 1918,
# shared address space), cloud metadata and node-local services
# (link-local), loopback, "this network"; IPv6 unique local, link-local,
# loopback.
PRIVATE_RANGES = [ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
    "169.254.0.0/16", "127.0.0.0/8", "0.0.0.0/8",
    "fc00::/7", "fe80::/10", "::1/128",
)]
PRIVATE_EGRESS = "nano-banana-mcp/private-egress"
DNS_PORT = 53


def ip_block(where, block):
    """(cidr, [except]) as networks, or None (and errors) when malformed."""
    try:
        cidr = ipaddress.ip_network(str(block.get("cidr")), strict=True)
        excepts = [ipaddress.ip_network(str(e), strict=True) for e in block.get("except") or []]
    except ValueError as e:
        err(where, f"ipBlock {block!r}: {e} (write each CIDR in canonical form)")
        return None
    for e in excepts:
        if e.version != cidr.version or not (e.subnet_of(cidr) and e != cidr):
            err(where, f"ipBlock except {e} is not strictly inside {cidr} (the API server refuses it)")
    return cidr, [e for e in excepts if e.version == cidr.version]


def reaches(port_entry, port):
    """Whether one entry of an egress rule's ports can match `port`. A named
    port names the destination pod's port, so it may be any number."""
    p = port_entry.get("port")
    if p is None or isinstance(p, str):
        return True
    return int(p) <= port <= int(port_entry.get("endPort", p))


def check_networkpolicy(where, doc):
    spec = doc.get("spec", {})
    if "Egress" not in (spec.get("policyTypes") or []):
        return
    private_ok = PRIVATE_EGRESS in ((doc.get("metadata") or {}).get("annotations") or {})
    for i, rule in enumerate(spec.get("egress") or []):
        rw = f"{where} egress[{i}]"
        ports = rule.get("ports") or [{}]  # no ports: every port
        peers = rule.get("to") or []
        if not peers:
            err(rw, "no `to`: allows every destination")
        if any(reaches(p, DNS_PORT) for p in ports):
            # DNS: only port 53, only to the cluster DNS pods or one address.
            if not all(reaches(p, DNS_PORT) and p.get("port") == DNS_PORT and p.get("endPort") in (None, DNS_PORT) for p in ports):
                err(rw, "reaches port 53, so it must allow port 53 only (DNS goes to the cluster DNS, nothing else rides along)")
            for j, peer in enumerate(peers):
                if "ipBlock" in peer:
                    b = ip_block(f"{rw}.to[{j}]", peer["ipBlock"])
                    if b and b[0].num_addresses != 1:
                        err(f"{rw}.to[{j}]", f"DNS to {b[0]}: only the cluster DNS pods or one node-local address")
                elif not (peer.get("podSelector", {}).get("matchLabels") or peer.get("podSelector", {}).get("matchExpressions")):
                    err(f"{rw}.to[{j}]", "DNS peer has no podSelector: it allows port 53 to every pod of the namespaces it selects")
                elif "namespaceSelector" not in peer:
                    err(f"{rw}.to[{j}]", "DNS peer has no namespaceSelector: it selects pods in this namespace, not kube-system")
            continue
        for j, peer in enumerate(peers):
            pw = f"{rw}.to[{j}]"
            if "ipBlock" not in peer:
                err(pw, "egress to pods or namespaces: only ipBlocks (in-cluster services are no destination of this server)")
                continue
            b = ip_block(pw, peer["ipBlock"])
            if b is None or private_ok:
                continue
            cidr, excepts = b
            for r in PRIVATE_RANGES:
                if r.version == cidr.version and r.overlaps(cidr) and not any(r.subnet_of(e) for e in excepts):
                    err(pw, f"ipBlock {cidr} reaches private range {r}: add it to `except`, or allow the private subnet in a policy annotated {PRIVATE_EGRESS}")


def restricts_egress(policy, pod_labels):
    """Whether the policy limits the egress of pods with these labels."""
    spec = policy.get("spec", {})
    sel = spec.get("podSelector") or {}
    match = sel.get("matchLabels") or {}
    return ("Egress" in (spec.get("policyTypes") or []) and not sel.get("matchExpressions")
            and all(pod_labels.get(k) == v for k, v in match.items()))


def check_base_exemptions(root):
    """No object under root claims the private-egress exemption."""
    for dirpath, _, files in os.walk(root):
        for fn in files:
            if fn.endswith((".yaml", ".yml")):
                p = os.path.join(dirpath, fn)
                for d in yaml.safe_load_all(open(p)):
                    if d and PRIVATE_EGRESS in ((d.get("metadata") or {}).get("annotations") or {}):
                        err(os.path.relpath(p), f"{d.get('kind')}/{d['metadata'].get('name')} is annotated {PRIVATE_EGRESS}: the base allows no private egress")


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
        if d.get("kind") == "NetworkPolicy":
            check_networkpolicy(where, d)
    for dep in (d for d in docs if d.get("kind") == "Deployment"):
        pod_labels = dep.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {}
        if not any(d.get("kind") == "NetworkPolicy" and restricts_egress(d, pod_labels) for d in docs):
            err(f"{os.path.basename(path)} Deployment/{dep['metadata'].get('name')}", "no NetworkPolicy restricts its pods' egress")
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
    check_base_exemptions("k8s/base")
    for e in ERRORS:
        print("ERROR " + e, file=sys.stderr)
    print(f"k8s_checks: {n} objects, {len(ERRORS)} problems", file=sys.stderr)
    return 1 if ERRORS else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
