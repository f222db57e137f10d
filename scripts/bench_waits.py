#!/usr/bin/env python3
"""Issue 12's "done when": many concurrent generate_image calls that wait on
Gemini, inside a memory limit.

The fake Gemini (outside the limit) answers every call after --wait-ms with
a --size-mib image (`fake:latency=… fake:size=…`, a distinct `fake:seed=N`
per call so every image and sha256 differs). The release server runs
`serve --http … --stateless --queue-max … --queue-timeout-secs …` with the
local folder backend inside a cgroup v1 memory cgroup of --limit-mib. All
--calls are sent at once, one loopback connection each (a bare tools/call
POST: stateless mode needs no initialize). A call counts as stored when
its result names a file whose sha256 on disk equals both the one the fake
sent and the one in the result.

Defaults are the issue's (a): 1,000 calls, 20 s wait, 1 MiB, 128 MiB,
>= 999 stored, <= 40 s wall, 0 OOM kills. (b) is
`--calls 100 --wait-ms 10000 --size-mib 8 --min-stored 100`.
Prints one JSON line and a Markdown row for BENCHMARKS.md; exits 1 when a
threshold is missed, 2 when the control call (one small image before the
burst) fails, 0 otherwise ("skipped" without a writable cgroup).

The fake is not free: it builds every distinct image when the request
arrives (before its wait), on the same 2 cores. --floor first runs the same
burst straight at the fake and reports when its last response started and
ended; on the test machine that is ~25 s for (a) and ~12.6 s for (b), so
the server's own share of (a)'s 40 s is ~15 s. cgroup_max_usage_mib
includes the page cache of the stored files (it reaches the limit when the
images add up to more than it; the kernel reclaims that cache, it is no
OOM risk); cgroup_peak_rss_mib is the sampled anonymous memory."""

import argparse
import asyncio
import collections
import json
import os
import re
import resource
import shutil
import signal
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import mcpdrive as d  # noqa: E402

MiB = 1 << 20

log_tail, mib = d.log_tail, d.mib


def classify(resp, msg):
    if resp.status != 200:
        return f"http_{resp.status}", resp.body[:200].decode("utf-8", "replace"), None
    if msg is None:
        return "http_200_no_reply", resp.body[:200].decode("utf-8", "replace"), None
    if "error" in msg:
        return "jsonrpc_error", str(msg["error"].get("message", ""))[:200], None
    r = msg.get("result") or {}
    if r.get("isError"):
        text = " ".join(c.get("text", "") for c in r.get("content", []))
        return ("tool_busy" if "busy" in text.lower() else "tool_error"), text[:200], None
    return "ok", "", r.get("structuredContent") or {}


async def fake_floor(fake, args):
    """The same burst straight at the fake (no server): the seconds until
    the last response's first byte and its end. What the fake and this
    client cost on their own; the server's share of the wall time is the
    rest."""
    port = int(fake.url.rsplit(":", 1)[1])
    size = int(args.size_mib * MiB)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    path = "/v1beta/models/gemini-2.5-flash-image:streamGenerateContent?alt=sse"

    async def one(i):
        body = json.dumps({"contents": [{"role": "user", "parts": [{"text": (
            f"floor fake:latency={args.wait_ms} fake:size={size} "
            f"fake:seed={args.seed_base + i}")}]}]}).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          f"x-goog-api-key: {d.TEST_KEY}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
                         + body)
            await reader.read(1)
            first = loop.time() - t0
            while await reader.read(1 << 20):
                pass
            return first, loop.time() - t0
        finally:
            writer.close()

    res = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(args.calls))),
                                 args.timeout_s)
    return round(max(r[0] for r in res), 2), round(max(r[1] for r in res), 2)


async def burst(srv, args, tag):
    size = int(args.size_mib * MiB)
    results = [None] * args.calls
    loop = asyncio.get_running_loop()
    t0 = loop.time()

    async def one(i):
        prompt = (f"waiting call {tag}c{i}x fake:latency={args.wait_ms} fake:size={size} "
                  f"fake:seed={args.seed_base + i}")
        s = loop.time()
        try:
            r, m = await d.aio_call(srv, "generate_image", {"prompt": prompt}, rid=i + 1,
                                    timeout=args.timeout_s)
            lab, detail, res = classify(r, m)
        except d.HttpError as e:
            lab, detail, res = e.kind, str(e)[:200], None
        results[i] = (lab, detail, res, loop.time() - s, loop.time() - t0)

    await asyncio.gather(*(one(i) for i in range(args.calls)))
    return results, loop.time() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--wait-ms", type=int, default=20000, help="fake Gemini time to first byte")
    ap.add_argument("--size-mib", type=float, default=1.0)
    ap.add_argument("--limit-mib", type=int, default=128)
    ap.add_argument("--min-stored", type=int, default=None,
                    help="default: calls - calls // 1000 (999 of 1,000; all of 100)")
    ap.add_argument("--max-wall-s", type=float, default=40.0)
    ap.add_argument("--queue-max", type=int, default=2000)
    ap.add_argument("--queue-timeout-secs", type=int, default=60)
    ap.add_argument("--timeout-s", type=float, default=None,
                    help="client timeout per call (default: wait + queue timeout + 60 s)")
    ap.add_argument("--seed-base", type=int, default=1_000_000)
    ap.add_argument("--server-arg", action="append", default=[],
                    help="extra argument for `serve` (repeatable)")
    ap.add_argument("--floor", action="store_true",
                    help="first run the same burst straight at the fake (no server) and "
                         "report its time: the part of the wall time that is not the server's")
    ap.add_argument("--log-level", default="warn", help="the server's LOG_LEVEL")
    ap.add_argument("--sockets", action="store_true",
                    help="also sample the kernel memory of the server's TCP sockets "
                         "(`ss -tmp`), which cgroup v2 charges to the pod and v1 does not")
    ap.add_argument("--server-log", default=None,
                    help="write the server's stderr here at the end (for diagnosis)")
    ap.add_argument("--md-header", action="store_true",
                    help="print the Markdown table header before the row")
    ap.add_argument("--bin-dir", default=None,
                    help="where nano-banana-mcp and nano-banana-fake-gemini are "
                         "(default: target/release)")
    args = ap.parse_args()
    if args.bin_dir:
        d.BIN = os.path.join(args.bin_dir, "nano-banana-mcp")
        d.FAKE_BIN = os.path.join(args.bin_dir, "nano-banana-fake-gemini")
    if args.min_stored is None:
        args.min_stored = args.calls - args.calls // 1000
    if args.timeout_s is None:
        args.timeout_s = args.wait_ms / 1000 + args.queue_timeout_secs + 60
    if not (os.path.exists(d.BIN) and os.path.exists(d.FAKE_BIN)):
        sys.exit(f"needs release binaries {d.BIN} and {d.FAKE_BIN}")
    if not d.Cgroup.writable():
        print(json.dumps({"skipped": "no writable cgroup v1 memory controller"}))
        return 0

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 2 * args.calls + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Ctrl-C unwinds too, even when started with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    root = tempfile.mkdtemp(prefix="nbm-waits-")
    out_dir = os.path.join(root, "out")
    os.makedirs(out_dir)
    cg = fake = srv = None
    tag = f"bw{os.getpid()}"
    try:
        cg = d.Cgroup(f"nbm-waits-{os.getpid()}", args.limit_mib * MiB)
        fake = d.FakeGemini()
        srv = d.HttpServer(fake, out_dir, cgroup=cg, stateless=True,
                           extra_args=["--queue-max", str(args.queue_max),
                                       "--queue-timeout-secs", str(args.queue_timeout_secs),
                                       *args.server_arg],
                           env={"NANO_BANANA_TEMP_DIR": os.path.join(root, "tmp"),
                                "LOG_LEVEL": args.log_level,
                                "NANO_BANANA_SHUTDOWN_GRACE_SECS": "2"})
        os.makedirs(os.path.join(root, "tmp"), exist_ok=True)

        # Control: one small call must work, or the numbers mean nothing.
        ctl = f"{tag}ctl"
        r, m = asyncio.run(d.aio_call(srv, "generate_image",
                                      {"prompt": f"control {ctl} fake:size=65536"}, rid=1,
                                      timeout=30))
        lab, detail, res = classify(r, m)
        path = d.result_file(res or {})
        if lab != "ok" or not path or d.sha256_file(path) != d.fake_sha_by_prompt(fake, ctl):
            print(json.dumps({"control_failed": f"{lab}: {detail}", "result": res}))
            return 2
        os.unlink(path)

        floor = asyncio.run(fake_floor(fake, args)) if args.floor else None

        time.sleep(0.5)
        idle = srv.mem()
        oom0 = cg.oom_kills()
        cg.reset_max_usage()
        sampler = d.Sampler(srv.pid, cg, interval=0.05)
        sockets = d.SocketSampler(srv.pid) if args.sockets else None
        results, wall = asyncio.run(burst(srv, args, tag))
        sampler.stop()
        if sockets:
            sockets.stop()
        alive = srv.alive()
        m = srv.mem()
        oom = cg.oom_kills() - oom0
        max_usage = cg.max_usage()

        want_sha = {}
        pat = re.compile(re.escape(tag) + r"c(\d+)x")
        for s in fake.sent():
            g = pat.search(s.get("prompt", ""))
            if g and not s.get("thought"):
                want_sha[int(g.group(1))] = s["sha256"]
        outcomes = collections.Counter()
        samples = {}
        stored = 0
        stored_at = []
        for i, (lab, detail, res, lat, done_at) in enumerate(results):
            if lab == "ok":
                path = d.result_file(res)
                got = d.sha256_file(path) if path and os.path.exists(path) else None
                if got and got == want_sha.get(i) == res.get("sha256"):
                    stored += 1
                    stored_at.append(done_at)
                    lab = "stored"
                else:
                    lab, detail = "sha_mismatch", (f"file {got} fake {want_sha.get(i)} "
                                                   f"result {res.get('sha256')}")
            outcomes[lab] += 1
            if detail and lab not in samples:
                samples[lab] = detail
        lats = sorted(r[3] for r in results)

        def pct(p):
            return round(lats[min(len(lats) - 1, int(len(lats) * p))], 2) if lats else None

        failures = []
        if stored < args.min_stored:
            failures.append(f"stored {stored} < {args.min_stored}")
        if oom:
            failures.append(f"{oom} OOM kill(s)")
        if not alive:
            failures.append(f"server died (exit {srv.p.returncode})")
        if wall > args.max_wall_s:
            failures.append(f"wall {wall:.1f} s > {args.max_wall_s:g} s")
        report = {
            "bench": "waits", "binary": d.BIN, "calls": args.calls, "wait_ms": args.wait_ms,
            "size_mib": args.size_mib, "limit_mib": args.limit_mib,
            "queue_max": args.queue_max, "queue_timeout_secs": args.queue_timeout_secs,
            "stored": stored, "min_stored": args.min_stored, "outcomes": dict(outcomes),
            "samples": samples, "oom_kills": oom, "alive": alive,
            "exit_code": None if alive else srv.p.returncode,
            "wall_s": round(wall, 2), "max_wall_s": args.max_wall_s,
            "last_stored_s": round(max(stored_at), 2) if stored_at else None,
            "latency_p50_s": pct(0.5), "latency_p99_s": pct(0.99), "latency_max_s": pct(1.0),
            "rss_idle_mib": mib(idle["rss"]) if idle else None,
            "peak_rss_mib": mib(max(sampler.max_rss, m["hwm"] if m else 0)),
            "cgroup_max_usage_mib": mib(max_usage),
            "cgroup_peak_rss_mib": mib(sampler.max_cg_rss),
            "fake_floor_first_byte_s": floor[0] if floor else None,
            "fake_floor_end_s": floor[1] if floor else None,
            "failures": failures,
        }
        if sockets:
            report["socket_kernel_peak_mib"] = mib(sockets.max_bytes)
            report["sockets_at_peak"] = sockets.sockets_at_max
            report["socket_kernel_max_one_kib"] = round(sockets.max_one / 1024, 1)
        if failures:
            report["server_log_tail"] = log_tail(srv.err)
        if args.server_log:
            with open(args.server_log, "w") as f:
                f.write("".join(srv.err))
        print(json.dumps(report), flush=True)
        cmd = (f"python3 scripts/bench_waits.py --calls {args.calls} --wait-ms {args.wait_ms} "
               f"--size-mib {args.size_mib:g} --limit-mib {args.limit_mib}")
        if args.md_header:
            print("| workload | stored | OOM kills | wall | cgroup max usage MiB "
                  "| peak RSS MiB | command |")
            print("|---|---|---|---|---|---|---|")
        print(f"| {args.calls} concurrent generate_image, {args.size_mib:g} MiB after "
              f"{args.wait_ms / 1000:g} s, stateless, local, {args.limit_mib} MiB cgroup "
              f"| {stored}/{args.calls} stored (sha256) | {oom} | {wall:.1f} s "
              f"| {mib(max_usage)} | {report['peak_rss_mib']} | `{cmd}` |", flush=True)
        return 1 if failures else 0
    finally:
        if srv:
            srv.stop(grace=5)
        if fake:
            fake.stop()
        if cg:
            cg.kill_all()
            cg.remove()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # cleaned up already, in the finally blocks
        sys.exit(130)
