#!/usr/bin/env python3
"""Soak: a mix of good and failing generate_image calls against the release
server inside a 64 MiB cgroup (Azurite storage): N sequential, then M fired
at once. Checks: the server never dies (0 OOM kills), every success's blob
downloads with the sha256 the result claims and the fake sent, every
failure is a clear tool error, no secret reaches stderr, and RSS after the
run (idle, settled) is within 2 MiB of RSS after the warm-up. Short by
default for the test command; --long for 1,000 sequential + 200 at once."""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import mcpdrive as d  # noqa: E402

MIX = [
    ("fake:size={n}", True),
    ("fake:size={n} fake:format=jpeg fake:label=image/png", True),
    ("fake:size={n} fake:thought", True),
    ("fake:size={n} fake:status=503 fake:times=1", True),
    ("fake:safety", False),
    ("fake:truncate fake:size={n}", False),
    ("fake:badbase64 fake:size={n}", False),
    ("fake:images=0", False),
    ("fake:blocked", False),
]
SIZES = [100_000, 1 << 20, 3 << 20, 8 << 20]


def settle(srv, secs=6.0):
    """Lowest RSS seen over a few seconds of idleness."""
    low = None
    end = time.time() + secs
    while time.time() < end:
        r = srv.status()["rss"]
        low = r if low is None else min(low, r)
        time.sleep(0.25)
    return low


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--long", action="store_true")
    ap.add_argument("--sequential", type=int, default=200)
    ap.add_argument("--concurrent", type=int, default=50)
    ap.add_argument("--limit-mib", type=int, default=64)
    ap.add_argument("--drift-mib", type=float, default=2.0)
    args = ap.parse_args()
    if args.long:
        args.sequential, args.concurrent = 1000, 200
    if not d.Cgroup.writable():
        print(json.dumps({"skipped": "no writable cgroup"}))
        return 0
    cg = d.Cgroup(f"nbm-soak-{os.getpid()}", args.limit_mib << 20)
    fake = d.FakeGemini()
    az = d.Azurite()
    srv = d.Server(fake, azure=az, container=f"soak{os.getpid()}", cgroup=cg,
                   env={"NANO_BANANA_QUEUE_TIMEOUT_SECS": "60"})
    failures, stats = [], {"ok": 0, "error": 0, "busy": 0}
    seq = [0]

    def prompt(i):
        tmpl, expect_ok = MIX[i % len(MIX)]
        n = SIZES[(i // len(MIX)) % len(SIZES)]
        seq[0] += 1
        # A unique word per call: "times=1" counters are per exact prompt.
        return f"soak {seq[0]} " + tmpl.format(n=n), expect_ok

    def check(resp, expect_ok, p):
        ok, res = d.result_of(resp)
        if ok:
            stats["ok"] += 1
            if not expect_ok:
                failures.append(f"{p}: succeeded but should fail")
                return
            got = d.sha256_url(res["url"])
            if got != res["sha256"]:
                failures.append(f"{p}: blob sha {got} != result sha {res['sha256']}")
        elif "busy" in res.lower():
            stats["busy"] += 1
        else:
            stats["error"] += 1
            if expect_ok:
                failures.append(f"{p}: {res[:200]}")

    try:
        # Warm-up: every path, sequentially and in one burst as large as the
        # concurrent phase, so first-touch growth (worker threads, arenas,
        # maps) is in the baseline and the drift measures leaks.
        for i in range(20):
            p, e = prompt(i)
            check(srv.call("generate_image", {"prompt": p}), e, p)
        warm = [prompt(i) for i in range(args.concurrent)]
        for q, e, p in [(srv.request_async("tools/call", {"name": "generate_image",
                                                          "arguments": {"prompt": p}}), e, p)
                        for p, e in warm]:
            check(q.get(timeout=900), e, p)
        base = settle(srv)
        t0 = time.time()
        for i in range(args.sequential):
            p, e = prompt(i)
            check(srv.call("generate_image", {"prompt": p}), e, p)
        seq_s = time.time() - t0
        batch = [prompt(i) for i in range(args.concurrent)]
        qs = [(srv.request_async("tools/call", {"name": "generate_image",
                                                "arguments": {"prompt": p}}), e, p)
              for p, e in batch]
        for q, e, p in qs:
            check(q.get(timeout=900), e, p)
        alive = srv.alive()
        end = settle(srv) if alive else None
        oom = cg.oom_kills()
        if not alive:
            failures.append("the server died")
        if oom:
            failures.append(f"{oom} OOM kills")
        drift = (end - base) / 2**20 if end else None
        if drift is not None and drift > args.drift_mib:
            failures.append(f"RSS drift {drift:.2f} MiB > {args.drift_mib}")
        log = srv.stop()
        for secret in (d.TEST_KEY, d.AZURITE_KEY):
            if secret in log:
                failures.append("a secret appeared in the log")
        print(json.dumps({"sequential": args.sequential, "concurrent": args.concurrent,
                          **stats, "sequential_s": round(seq_s, 1),
                          "rss_base_mib": round(base / 2**20, 2),
                          "rss_end_mib": round(end / 2**20, 2) if end else None,
                          "drift_mib": round(drift, 2) if drift is not None else None,
                          "cgroup_max_usage_mib": round(cg.max_usage() / 2**20, 1),
                          "oom_kills": oom, "failures": failures[:10]}))
        return 1 if failures else 0
    finally:
        if srv.alive():
            srv.stop()
        fake.stop()
        az.stop()
        cg.remove()


if __name__ == "__main__":
    sys.exit(main())
