#!/usr/bin/env python3
"""End-to-end benchmark: the release server over stdio, the fake Gemini and
Azurite (or the local folder), streaming design vs the naive reference mode
(NANO_BANANA_NAIVE_REFERENCE=true: buffer, parse, decode, upload whole — the
old server's way) in the same build.

For each storage x image size x concurrency x mode it starts a fresh server
and reports: idle RSS before, peak RSS (VmHWM), idle RSS after (2 s later),
mean wall time per call, and the added latency: the mean call time minus the
time a bare client needs to read the same response from the fake Gemini
(so it is what the server adds after Gemini's last byte). Prints a Markdown
table (and JSON lines with --json)."""

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import mcpdrive as d  # noqa: E402


DRIP = 0


def directives(size, seed):
    return f"fake:size={size} fake:seed={seed}" + (f" fake:drip={DRIP}" if DRIP else "")


def fetch_time(fake, size, seed, reps=3):
    """How long a bare client takes to read the whole SSE response."""
    body = json.dumps({"contents": [{"role": "user", "parts": [
        {"text": f"bench {directives(size, seed)}"}]}]})
    times = []
    for _ in range(reps):
        c = http.client.HTTPConnection("127.0.0.1", fake.port)
        t = time.time()
        c.request("POST", "/v1beta/models/gemini-2.5-flash-image:streamGenerateContent?alt=sse",
                  body, {"x-goog-api-key": d.TEST_KEY, "content-type": "application/json"})
        r = c.getresponse()
        while r.read(1 << 20):
            pass
        times.append(time.time() - t)
        c.close()
    return statistics.median(times)


def cell(fake, az, storage, size_mib, conc, naive):
    out = tempfile.mkdtemp()
    env = {"NANO_BANANA_NAIVE_REFERENCE": "true" if naive else "false"}
    srv = d.Server(fake, out_dir=out, azure=az if storage == "azure" else None,
                   container="bench", env=env)
    try:
        time.sleep(0.5)
        before = srv.status()["rss"]
        size = int(size_mib * (1 << 20))
        prompt = f"bench {directives(size, 3)}"
        t0 = time.time()
        qs = [srv.request_async("tools/call", {"name": "generate_image",
                                               "arguments": {"prompt": prompt}})
              for _ in range(conc)]
        per = []
        for q in qs:
            r = q.get(timeout=900)
            ok, res = d.result_of(r)
            if not ok:
                raise RuntimeError(f"call failed: {res}")
            per.append(time.time() - t0)
        wall = time.time() - t0
        peak = srv.status()["hwm"]
        time.sleep(2.0)
        after = srv.status()["rss"]
        return {"storage": storage, "size_mib": size_mib, "concurrency": conc,
                "mode": "naive" if naive else "streaming",
                "idle_before_mib": round(before / 2**20, 1),
                "peak_rss_mib": round(peak / 2**20, 1),
                "idle_after_mib": round(after / 2**20, 1),
                "wall_s": round(wall, 3),
                "mean_call_s": round(statistics.mean(per), 3)}
    finally:
        srv.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1,8,30")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--storage", default="local,azure")
    ap.add_argument("--modes", default="streaming,naive")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--drip-ms", type=int, default=0,
                    help="fake Gemini pause between 64 KiB body chunks (a realistic download rate)")
    args = ap.parse_args()
    global DRIP
    DRIP = args.drip_ms
    fake = d.FakeGemini()
    az = d.Azurite() if "azure" in args.storage else None
    rows = []
    try:
        base_fetch = {}
        for s in [float(x) for x in args.sizes.split(",")]:
            base_fetch[s] = fetch_time(fake, int(s * (1 << 20)), 3)
        for storage in args.storage.split(","):
            for s in [float(x) for x in args.sizes.split(",")]:
                for c in [int(x) for x in args.concurrency.split(",")]:
                    for mode in args.modes.split(","):
                        r = cell(fake, az, storage, s, c, mode == "naive")
                        if c == 1:
                            r["added_latency_ms"] = round((r["mean_call_s"] - base_fetch[s]) * 1000)
                        rows.append(r)
                        if args.json:
                            print(json.dumps(r), flush=True)
    finally:
        fake.stop()
        if az:
            az.stop()
    print("| storage | image MiB | concurrency | mode | idle before | peak RSS | idle after | wall s | mean call s | added latency ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['storage']} | {r['size_mib']:g} | {r['concurrency']} | {r['mode']} | "
              f"{r['idle_before_mib']} | {r['peak_rss_mib']} | {r['idle_after_mib']} | "
              f"{r['wall_s']} | {r['mean_call_s']} | {r.get('added_latency_ms', '')} |")
    # Ratios streaming/naive for peak RSS.
    print()
    print("| storage | image MiB | concurrency | peak RSS streaming/naive |")
    print("|---|---|---|---|")
    for r in rows:
        if r["mode"] != "streaming":
            continue
        n = next((x for x in rows if x["mode"] == "naive" and x["storage"] == r["storage"]
                  and x["size_mib"] == r["size_mib"] and x["concurrency"] == r["concurrency"]), None)
        if n:
            print(f"| {r['storage']} | {r['size_mib']:g} | {r['concurrency']} | "
                  f"{r['peak_rss_mib']} / {n['peak_rss_mib']} = {r['peak_rss_mib'] / n['peak_rss_mib']:.2f} "
                  f"({n['peak_rss_mib'] / r['peak_rss_mib']:.1f}x less) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
