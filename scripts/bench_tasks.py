#!/usr/bin/env python3
"""Issue 16's benchmark: many durable tasks started at once over HTTP
(MCP 2026-07-28, the Tasks extension), inside a memory limit.

The release server runs `serve --http … --stateless --tasks always` with the
local folder backend inside a cgroup v1 memory cgroup of --limit-mib; the
fake Gemini (outside it) answers every call after --wait-ms with a distinct
--size-mib image (`fake:seed=N`). All --tasks generate_image calls are sent
at once, each on a loopback connection of its own, at most --connections
open at a time (a client's connection pool; each creation takes
milliseconds, so all start within a second or two), each declaring the
tasks extension in its `_meta`; each must answer at once with a task. A
creation the edge refuses (503 at the connection cap, or a reset) is
retried after half a second, at most --retries times, as an HTTP client
would. Then every task is
polled with `tasks/get` (at most --pollers requests in flight, each task at
most every --poll-s) until it is final. A task counts as stored when it
completed and its result names a file whose sha256 equals both the one in
the result and the one the fake sent.

Defaults are the issue's: 1,000 tasks, 20 s wait, 1 MiB, 128 MiB, all
stored, 0 OOM kills. Prints one JSON line and a Markdown row for
BENCHMARKS.md; exits 1 when a threshold is missed, 0 otherwise ("skipped"
without a writable cgroup)."""

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
REV = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": REV,
    "io.modelcontextprotocol/clientCapabilities": {
        "extensions": {"io.modelcontextprotocol/tasks": {}}},
}


def headers(srv, method, name):
    h = srv.headers()
    h["MCP-Protocol-Version"] = REV
    h["Mcp-Method"] = method
    h["Mcp-Name"] = name
    return h


async def rpc(srv, rid, method, name, params, timeout):
    params = dict(params, _meta=META)
    r = await d.aio_request(srv.port, "POST", "/mcp", headers(srv, method, name),
                            d.jsonrpc(rid, method, params), timeout=timeout, until_id=rid)
    return r.status, r.message(rid)


async def run(srv, args, tag):
    size = int(args.size_mib * MiB)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    ids = [None] * args.tasks
    refused = collections.Counter()
    samples = {}

    conns = asyncio.Semaphore(args.connections)
    retried = collections.Counter()

    async def start(i):
        prompt = (f"task {tag}c{i}x fake:latency={args.wait_ms} fake:size={size} "
                  f"fake:seed={args.seed_base + i}")
        for attempt in range(args.retries + 1):
            if attempt:
                await asyncio.sleep(0.5)
            try:
                async with conns:
                    status, m = await rpc(
                        srv, i + 1, "tools/call", "generate_image",
                        {"name": "generate_image", "arguments": {"prompt": prompt}}, timeout=60)
            except d.HttpError as e:
                kind, detail = e.kind, str(e)[:200]
            else:
                res = (m or {}).get("result") or {}
                if status == 200 and res.get("resultType") == "task" and res.get("taskId"):
                    ids[i] = res["taskId"]
                    return
                kind = f"http_{status}" if status != 200 else "not_a_task"
                detail = json.dumps(m)[:300]
                if kind == "not_a_task":
                    break
            retried[kind] += 1
            samples.setdefault(kind, detail)
        refused[kind] += 1

    await asyncio.gather(*(start(i) for i in range(args.tasks)))
    started_s = loop.time() - t0
    final = {}
    sem = asyncio.Semaphore(args.pollers)
    deadline = t0 + args.timeout_s

    async def follow(i, tid):
        while loop.time() < deadline:
            await asyncio.sleep(args.poll_s)
            async with sem:
                try:
                    status, m = await rpc(srv, 100000 + i, "tasks/get", tid,
                                          {"taskId": tid}, timeout=30)
                except d.HttpError:
                    continue
            res = (m or {}).get("result") or {}
            if res.get("status") in ("completed", "failed", "cancelled"):
                final[i] = (res, loop.time() - t0)
                return
        final[i] = ({"status": "timeout"}, loop.time() - t0)

    await asyncio.gather(*(follow(i, t) for i, t in enumerate(ids) if t))
    samples["retried"] = dict(retried)
    return ids, final, refused, samples, started_s, loop.time() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--wait-ms", type=int, default=20000)
    ap.add_argument("--size-mib", type=float, default=1.0)
    ap.add_argument("--limit-mib", type=int, default=128)
    ap.add_argument("--min-stored", type=int, default=None, help="default: all")
    ap.add_argument("--connections", type=int, default=200,
                    help="creation requests in flight at once (each on its own connection)")
    ap.add_argument("--retries", type=int, default=3)
    ap.add_argument("--poll-s", type=float, default=2.0)
    ap.add_argument("--pollers", type=int, default=64)
    ap.add_argument("--timeout-s", type=float, default=300.0)
    ap.add_argument("--seed-base", type=int, default=2_000_000)
    ap.add_argument("--server-arg", action="append", default=[])
    ap.add_argument("--log-level", default="warn")
    ap.add_argument("--md-header", action="store_true")
    args = ap.parse_args()
    if args.min_stored is None:
        args.min_stored = args.tasks
    if not (os.path.exists(d.BIN) and os.path.exists(d.FAKE_BIN)):
        sys.exit(f"needs release binaries {d.BIN} and {d.FAKE_BIN}")
    if not d.Cgroup.writable():
        print(json.dumps({"skipped": "no writable cgroup v1 memory controller"}))
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * args.tasks + 1024)), hard))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)

    root = tempfile.mkdtemp(prefix="nbm-tasks-")
    out_dir = os.path.join(root, "out")
    os.makedirs(out_dir)
    os.makedirs(os.path.join(root, "tmp"))
    cg = fake = srv = None
    tag = f"bt{os.getpid()}"
    try:
        cg = d.Cgroup(f"nbm-tasks-{os.getpid()}", args.limit_mib * MiB)
        fake = d.FakeGemini()
        srv = d.HttpServer(fake, out_dir, cgroup=cg, stateless=True,
                           extra_args=["--tasks", "always", "--max-tasks", str(args.tasks),
                                       *args.server_arg],
                           env={"NANO_BANANA_TEMP_DIR": os.path.join(root, "tmp"),
                                "LOG_LEVEL": args.log_level,
                                "NANO_BANANA_SHUTDOWN_GRACE_SECS": "2"})
        time.sleep(0.5)
        idle = srv.mem()
        oom0 = cg.oom_kills()
        cg.reset_max_usage()
        sampler = d.Sampler(srv.pid, cg, interval=0.05)
        ids, final, refused, samples, started_s, wall = asyncio.run(run(srv, args, tag))
        sampler.stop()
        alive = srv.alive()
        m = srv.mem()
        oom = cg.oom_kills() - oom0

        want_sha = {}
        pat = re.compile(re.escape(tag) + r"c(\d+)x")
        for s in fake.sent():
            g = pat.search(s.get("prompt", ""))
            if g and not s.get("thought"):
                want_sha[int(g.group(1))] = s["sha256"]
        outcomes = collections.Counter(refused)
        stored = 0
        for i, (res, _) in final.items():
            lab = res.get("status")
            if lab == "completed":
                sc = (res.get("result") or {}).get("structuredContent") or {}
                path = d.result_file(sc)
                got = d.sha256_file(path) if path and os.path.exists(path) else None
                if got and got == want_sha.get(i) == sc.get("sha256"):
                    stored += 1
                    lab = "stored"
                else:
                    lab = "sha_mismatch"
                    samples.setdefault(lab, f"{got} {want_sha.get(i)} {sc.get('sha256')}")
            elif lab == "failed":
                samples.setdefault(lab, json.dumps(res.get("error"))[:300])
            outcomes[lab] += 1
        failures = []
        if stored < args.min_stored:
            failures.append(f"stored {stored} < {args.min_stored}")
        if oom:
            failures.append(f"{oom} OOM kill(s)")
        if not alive:
            failures.append(f"server died (exit {srv.p.returncode})")
        report = {
            "bench": "tasks", "tasks": args.tasks, "wait_ms": args.wait_ms,
            "size_mib": args.size_mib, "limit_mib": args.limit_mib,
            "stored": stored, "outcomes": dict(outcomes), "samples": samples,
            "oom_kills": oom, "alive": alive, "all_started_s": round(started_s, 2),
            "wall_s": round(wall, 2),
            "last_final_s": round(max((t for _, t in final.values()), default=0), 2),
            "rss_idle_mib": d.mib(idle["rss"]) if idle else None,
            "peak_rss_mib": d.mib(max(sampler.max_rss, m["hwm"] if m else 0)),
            "cgroup_max_usage_mib": d.mib(cg.max_usage()),
            "cgroup_peak_rss_mib": d.mib(sampler.max_cg_rss),
            "failures": failures,
        }
        if failures:
            report["server_log_tail"] = d.log_tail(srv.err)
        print(json.dumps(report), flush=True)
        cmd = (f"python3 scripts/bench_tasks.py --tasks {args.tasks} --wait-ms {args.wait_ms} "
               f"--size-mib {args.size_mib:g} --limit-mib {args.limit_mib}")
        if args.md_header:
            print("| workload | stored | OOM kills | all started | last final | peak RSS MiB "
                  "| command |")
            print("|---|---|---|---|---|---|---|")
        print(f"| {args.tasks} tasks at once ({args.connections} connections), "
              f"{args.size_mib:g} MiB after "
              f"{args.wait_ms / 1000:g} s, {args.limit_mib} MiB cgroup | {stored}/{args.tasks} "
              f"| {oom} | {started_s:.1f} s | {report['last_final_s']} s "
              f"| {report['peak_rss_mib']} | `{cmd}` |", flush=True)
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
    except KeyboardInterrupt:
        sys.exit(130)
