#!/usr/bin/env python3
"""Memory under load, under a real kernel-enforced limit.

Starts the fake Gemini and Azurite outside the limit, and the release server
binary inside a fresh cgroup v1 memory cgroup (--limit-mib; 0 = no cgroup).
Fires --concurrency generate_image calls of --size-mib images at once, then
--sequential more one by one. Every call must return a URL whose blob has the
sha256 the fake sent, or a clear "busy" error; the server must not be killed;
RSS must return to within --settle-mib of its idle baseline within
--settle-secs of the last call. Prints one JSON line; exits non-zero on any
failure. Needs root for the cgroup; reports "skipped" where the cgroup fs is
not writable."""

import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import mcpdrive as d  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit-mib", type=int, default=64)
    ap.add_argument("--size-mib", type=float, default=30)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--sequential", type=int, default=100)
    ap.add_argument("--settle-mib", type=float, default=8)
    ap.add_argument("--settle-secs", type=float, default=5)
    ap.add_argument("--storage", choices=["azure", "local"], default="azure")
    ap.add_argument("--latency-ms", type=int, default=0, help="fake Gemini time to first byte")
    ap.add_argument("--verify-every", type=int, default=1,
                    help="download and hash every Nth sequential result (all concurrent ones always)")
    args = ap.parse_args()

    cg = None
    if args.limit_mib:
        if not d.Cgroup.writable():
            print(json.dumps({"skipped": "no writable cgroup"}))
            return 0
        cg = d.Cgroup(f"nbm-memload-{os.getpid()}", args.limit_mib << 20)
    fake = d.FakeGemini(latency_ms=args.latency_ms)
    az = d.Azurite() if args.storage == "azure" else None
    import tempfile
    out = tempfile.mkdtemp()
    srv = d.Server(fake, out_dir=out, azure=az, container=f"memload{os.getpid()}", cgroup=cg)
    failures = []
    try:
        time.sleep(1.0)
        base = srv.status()["rss"]
        size = int(args.size_mib * (1 << 20))
        prompt = f"load fake:size={size} fake:seed=7"

        def check(resp, verify=True):
            ok, res = d.result_of(resp)
            if not ok:
                return "busy" if "busy" in res.lower() else f"error: {res[:300]}"
            if verify:
                want = fake_sha[0]
                got = d.sha256_url(res["url"])
                if got != want:
                    return f"sha mismatch {got} != {want}"
            return "ok"

        # The fake is deterministic for a fixed seed: learn the sha once.
        fake_sha = [None]
        t0 = time.time()
        queues = [srv.request_async("tools/call", {"name": "generate_image",
                                                   "arguments": {"prompt": prompt}})
                  for _ in range(args.concurrency)]
        results = [q.get(timeout=600) for q in queues]
        conc_wall = time.time() - t0
        sent = fake.sent()
        fake_sha[0] = sent[-1]["sha256"] if sent else None
        outcomes = [check(r) for r in results]
        peak_conc = srv.status()["hwm"] if srv.alive() else None
        seq_times = []
        for i in range(args.sequential):
            t = time.time()
            r = srv.call("generate_image", {"prompt": prompt})
            seq_times.append(time.time() - t)
            o = check(r, verify=(i % args.verify_every == 0))
            if o != "ok":
                failures.append(f"sequential call {i}: {o}")
        last = time.time()
        settled = None
        rss_after = None
        while time.time() - last < args.settle_secs + 5:
            if not srv.alive():
                break
            rss_after = srv.status()["rss"]
            if rss_after <= base + args.settle_mib * 2**20:
                settled = time.time() - last
                break
            time.sleep(0.25)
        alive = srv.alive()
        st = srv.status() if alive else {}
        for i, o in enumerate(outcomes):
            if o not in ("ok", "busy"):
                failures.append(f"concurrent call {i}: {o}")
        if not alive:
            failures.append("the server died")
        oom = cg.oom_kills() if cg else 0
        if oom:
            failures.append(f"{oom} OOM kill(s) in the cgroup")
        if settled is None or settled > args.settle_secs:
            failures.append(f"RSS did not return within {args.settle_mib} MiB of the "
                            f"baseline within {args.settle_secs} s (now {rss_after})")
        report = {
            "limit_mib": args.limit_mib, "size_mib": args.size_mib,
            "concurrency": args.concurrency, "storage": args.storage,
            "ok": outcomes.count("ok"), "busy": outcomes.count("busy"),
            "concurrent_wall_s": round(conc_wall, 2),
            "sequential": args.sequential,
            "sequential_mean_s": round(sum(seq_times) / len(seq_times), 3) if seq_times else None,
            "baseline_rss_mib": round(base / 2**20, 1),
            "peak_rss_after_concurrent_mib": round(peak_conc / 2**20, 1) if peak_conc else None,
            "peak_rss_mib": round(st.get("hwm", 0) / 2**20, 1),
            "cgroup_max_usage_mib": round(cg.max_usage() / 2**20, 1) if cg else None,
            "settled_after_s": round(settled, 2) if settled is not None else None,
            "rss_after_mib": round((rss_after or 0) / 2**20, 1),
            "oom_kills": oom, "failures": failures[:10],
        }
        print(json.dumps(report))
        return 1 if failures else 0
    finally:
        log = srv.stop()
        fake.stop()
        if az:
            az.stop()
        if cg:
            cg.remove()
        if failures:
            sys.stderr.write(log[-4000:])


if __name__ == "__main__":
    sys.exit(main())
