#!/usr/bin/env python3
"""What one waiting call costs: RSS and jemalloc-allocated bytes per call,
read from /metrics before and 10 s after N things are started against the
release server (stateless HTTP, local folder, no cgroup):

- conns:   N connections that sent half a request head (the edge's part);
- fullheads: N connections that sent all but the end of a head just
           under the 16 KiB cap (the worst a connection can be made to
           hold before its request is read);
- queued:  N generate_image calls with the smallest limit that serves
           (52 MiB: ~120 admitted, the rest queued for admission); the
           admitted ones are priced at the `waiting` figure and the rest
           of the growth is shared by the queued ones;
- waiting: N generate_image calls admitted and waiting at the fake Gemini
           (latency longer than the measurement);
- started: N calls whose responses have started (1 s latency) while four
           slow-dripping calls hold the image path's memory: each has read
           its first piece of the body and waits for image memory.

Prints one JSON line per mode. The figures behind WAITING_CALL_BYTES
(src/pipeline/mod.rs) and PER_CONNECTION (src/transport/edge.rs);
BENCHMARKS.md has the results."""

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import mcpdrive as d  # noqa: E402


def metric(srv, name):
    st, body = d.http_get(srv.health_port, "/metrics")
    if st != 200:
        return None
    for line in body.decode().splitlines():
        if line.startswith(f"nano_banana_{name} "):
            return float(line.split()[1])
    return None


async def measure(srv, mode, n, settle_s):
    rss0, alloc0 = srv.mem()["rss"], metric(srv, "jemalloc_allocated_bytes") or 0
    held = []
    if mode in ("conns", "fullheads"):
        # Just under HEAD_CAP (16 KiB): hyper's read buffer grows to hold it.
        pad = b"X-Pad: " + b"a" * (16 * 1024 - 200) + b"\r\n" if mode == "fullheads" else b""
        for _ in range(n):
            _, w = await asyncio.open_connection("127.0.0.1", srv.port)
            w.write(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n" + pad)
            held.append(w)
    else:
        if mode == "started":
            for i in range(4):
                prompt = f"hog {i} fake:size=4000000 fake:drip=60000 fake:seed={i}"
                held.append(asyncio.create_task(d.aio_call(
                    srv, "generate_image", {"prompt": prompt}, rid=100000 + i, timeout=120)))
            await asyncio.sleep(2)
            rss0 = srv.mem()["rss"]
            alloc0 = metric(srv, "jemalloc_allocated_bytes") or 0
        latency = 1000 if mode == "started" else 60000
        for i in range(n):
            prompt = f"cost {mode} {i} fake:latency={latency} fake:size=1000 fake:seed={i}"
            held.append(asyncio.create_task(d.aio_call(
                srv, "generate_image", {"prompt": prompt}, rid=i + 1, timeout=120)))
    await asyncio.sleep(settle_s)
    rss1, alloc1 = srv.mem()["rss"], metric(srv, "jemalloc_allocated_bytes") or 0
    out = {"mode": mode, "n": n,
           "rss_kib_each": round((rss1 - rss0) / n / 1024, 1),
           "allocated_kib_each": round((alloc1 - alloc0) / n / 1024, 1),
           "rss_idle_mib": round(rss0 / 2**20, 1), "rss_mib": round(rss1 / 2**20, 1),
           "calls_in_flight": metric(srv, "calls_in_flight"),
           "calls_queued": metric(srv, "calls_queued")}
    for h in held:
        if mode in ("conns", "fullheads"):
            h.close()
        else:
            h.cancel()
    await asyncio.gather(*[h for h in held if mode not in ("conns", "fullheads")],
                         return_exceptions=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=500)
    ap.add_argument("--settle-s", type=float, default=10.0)
    ap.add_argument("--modes", default="conns,waiting,queued")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="extra server argument, e.g. --server-arg=--direct-calls=false "
                         "(every call through rmcp's per-request service)")
    args = ap.parse_args()
    if not (os.path.exists(d.BIN) and os.path.exists(d.FAKE_BIN)):
        sys.exit(f"needs release binaries {d.BIN} and {d.FAKE_BIN}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * args.n + 1024)), hard))
    fake = d.FakeGemini()
    waiting = None
    try:
        for mode in args.modes.split(","):
            out = tempfile.mkdtemp(prefix="nbm-cost-")
            extra = ["--queue-max", str(2 * args.n), "--queue-timeout-secs", "120",
                     "--max-connections", str(2 * args.n)] + args.server_arg
            if mode == "started":
                # Two streaming responses at most: the hogs hold both.
                extra += ["--memory-limit", "128MiB"]
            if mode == "queued":
                # Room for one streaming response and ~120 waiting calls.
                extra += ["--memory-limit", "52MiB"]
            srv = d.HttpServer(fake, out, stateless=True, extra_args=extra)
            try:
                time.sleep(1)
                res = asyncio.run(measure(srv, mode, args.n, args.settle_s))
                if mode == "waiting":
                    waiting = res["rss_kib_each"]
                if mode == "queued" and waiting is not None and res["calls_in_flight"]:
                    admitted = res["calls_in_flight"]
                    total = res["rss_kib_each"] * res["n"]
                    res["queued_rss_kib_each"] = round(
                        (total - admitted * waiting) / (res["n"] - admitted), 1)
                print(json.dumps(res), flush=True)
            finally:
                srv.stop()
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
