#!/usr/bin/env python3
"""HTTP load: the release server on `serve --http`, driven by `hey`.

Two workloads, each at rising concurrency, one fresh server per workload:
- tools/list (the protocol path alone; server pinned to one core with
  taskset, as a small pod would be) with wrk, on one MCP session and
  stateless; wrk's script gives every request its own JSON-RPC id, as a
  real client does (hey repeats one body, and requests on one session that
  share an id wait for each other: replies are routed by id);
- generate_image in stateless mode (each POST a complete call, as behind a
  load balancer) with the fake Gemini answering after 0 ms and after 3 s,
  IMAGE_MIB images into the local folder (or Azurite with --storage azure).

For each row: requests, errors (non-200 or MCP tool errors counted by the
server's metrics), throughput, p50/p99 latency from hey, and the server's
RSS: peak during the row (VmHWM, reset before each row through
/proc/PID/clear_refs) and idle RSS two seconds after (the idle purger
returns memory one second after the last call). Prints Markdown.
Needs `hey` (Debian) and a release build."""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import mcpdrive as d  # noqa: E402

TOKEN = "bench-token-0123456789"
LUA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib", "mcp_post.lua")


def rss(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024
    return out


def reset_peak(pid):
    # "5" resets VmHWM to the current RSS (Linux >= 4.0).
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def tool_errors(port):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req) as r:
        text = r.read().decode()
    n = 0.0
    for line in text.splitlines():
        if line.startswith("nano_banana_tool_calls_total{") and 'outcome="ok"' not in line:
            n += float(line.rsplit(" ", 1)[1])
    return n


class HttpServer(d.Proc):
    def __init__(self, fake, out_dir, extra_args, env_extra, pin_core=None):
        self.port = d.free_port()
        env = dict(os.environ, GEMINI_API_KEY=d.TEST_KEY, GEMINI_BASE_URL=fake.url,
                   NANO_BANANA_OUTPUT_DIR=out_dir, NANO_BANANA_AUTH_TOKEN=TOKEN,
                   LOG_LEVEL="warn", **env_extra)
        args = [d.BIN, "serve", "--http", f"127.0.0.1:{self.port}", *extra_args]
        if pin_core is not None:
            args = ["taskset", "-c", str(pin_core), *args]
        super().__init__(args, env=env)
        end = time.time() + 20
        while time.time() < end:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz").close()
                break
            except OSError:
                time.sleep(0.05)
        self.pid = self.p.pid

    def url(self):
        return f"http://127.0.0.1:{self.port}/mcp"

    def session(self):
        body = (b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":'
                b'"2025-06-18","capabilities":{},"clientInfo":{"name":"hey","version":"1"}}}')
        req = urllib.request.Request(self.url(), data=body, headers=self.headers())
        with urllib.request.urlopen(req) as r:
            sid = r.headers["Mcp-Session-Id"]
            r.read()
        req = urllib.request.Request(
            self.url(), data=b'{"jsonrpc":"2.0","method":"notifications/initialized"}',
            headers=dict(self.headers(), **{"Mcp-Session-Id": sid}))
        urllib.request.urlopen(req).close()
        return sid

    @staticmethod
    def headers():
        return {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": "2025-06-18"}


def hey(url, body, concurrency, headers, n=None, duration=None):
    """Run hey; with n, per-request latencies (csv) give exact percentiles,
    with duration, hey's own summary (enough samples for its p99)."""
    args = ["hey", "-c", str(concurrency), "-m", "POST", "-t", "60", "-d", body]
    args += ["-n", str(n), "-o", "csv"] if n else ["-z", duration]
    for k, v in headers.items():
        if k.lower() == "content-type":
            args += ["-T", v]
        else:
            args += ["-H", f"{k}: {v}"]
    out = subprocess.run(args + [url], capture_output=True, text=True, check=True).stdout
    if n:
        rows = [line.split(",") for line in out.splitlines()[1:] if line.strip()]
        times = sorted(float(r[0]) * 1000 for r in rows)
        ok = sum(1 for r in rows if r[6] == "200")
        wall = max(float(r[7]) + float(r[0]) for r in rows) if rows else float("nan")
        # hey rounds n down to a multiple of the concurrency.
        sent = n // concurrency * concurrency

        def pct(p):
            return times[min(len(times) - 1, int(len(times) * p))] if times else float("nan")

        return {"n": sent, "ok": ok, "failed": sent - ok, "rps": len(rows) / wall,
                "p50": pct(0.50), "p99": pct(0.99)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"50% in ([\d.]+) secs", out)
    p99 = re.search(r"99% in ([\d.]+) secs", out)
    codes = dict((int(c), int(k)) for c, k in re.findall(r"\[(\d+)\]\s+(\d+) responses", out))
    # Transport errors (timeouts, resets) are listed as "[count]\tPost ...".
    errors = sum(int(x) for x in re.findall(r"\[(\d+)\]\s+Post", out))
    total = sum(codes.values()) + errors
    return {
        "n": total,
        "ok": codes.get(200, 0),
        "rps": rps,
        "p50": float(p50.group(1)) * 1000 if p50 else float("nan"),
        "p99": float(p99.group(1)) * 1000 if p99 else float("nan"),
        "failed": total - codes.get(200, 0),
    }


def wrk(url, body, concurrency, session, duration):
    """Run wrk with scripts/lib/mcp_post.lua (a unique JSON-RPC id per
    request, as a real client sends)."""
    env = dict(os.environ, MCP_BODY=body, MCP_TOKEN=TOKEN, MCP_SESSION=session or "")
    args = ["wrk", "-t", str(min(2, concurrency)), "-c", str(concurrency), "-d", duration,
            "--timeout", "60s", "--latency", "-s", LUA, url]
    out = subprocess.run(args, capture_output=True, text=True, check=True, env=env).stdout

    if "Latency Distribution" not in out:
        sys.exit(f"wrk gave no latency figures:\n{out}")

    def dur(v):
        num, unit = re.match(r"([\d.]+)(us|ms|s|m)", v).groups()
        return float(num) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]

    n = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return {
        "n": n,
        "failed": failed,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        # Anchored: the thread stats above can end in "62.50%" too.
        "p50": dur(re.search(r"^\s+50%\s+(\S+)$", out, re.M).group(1)),
        "p99": dur(re.search(r"^\s+99%\s+(\S+)$", out, re.M).group(1)),
    }


def ms(x):
    return f"{x:.1f} ms" if x < 100 else f"{x:.0f} ms"


def tools_list_rows(args):
    """tools/list with the server pinned to one core: on one session (wrk,
    unique ids) and stateless."""
    fake = d.FakeGemini(0)
    out = tempfile.mkdtemp()
    body = '{"jsonrpc":"2.0","id":__ID__,"method":"tools/list"}'
    servers = []
    try:
        for mode, extra in (("one session", []), ("stateless", ["--stateless"])):
            srv = HttpServer(fake, out, extra, {}, pin_core=0)
            servers.append(srv)
            sid = srv.session() if not extra else None
            for c in args.list_concurrency:
                reset_peak(srv.pid)
                r = wrk(srv.url(), body, c, sid, args.duration)
                m = rss(srv.pid)
                row(f"tools/list, {mode}, one core (wrk)", c, r, m["VmHWM"], m["VmRSS"])
            srv.stop()
    finally:
        for srv in servers:
            srv.stop()
        fake.stop()
        shutil.rmtree(out, ignore_errors=True)


def row(name, c, r, peak, idle):
    print(f"| {name} | {c} | {r['n']} | {r['failed']} | {r['rps']:.1f} | {ms(r['p50'])} | "
          f"{ms(r['p99'])} | {peak:.1f} | {idle:.1f} |", flush=True)


def generate_rows(args, latency_ms):
    fake = d.FakeGemini(latency_ms)
    out = tempfile.mkdtemp()
    env = {}
    az = None
    if args.storage == "azure":
        az = d.Azurite()
        env = {"AZURE_STORAGE_CONNECTION_STRING": az.connection_string(),
               "AZURE_STORAGE_CONTAINER_NAME": f"benchhttp{int(time.time())}"}
    srv = HttpServer(fake, out, ["--stateless"], env)
    size = int(args.image_mib * (1 << 20))
    body = ('{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"generate_image",'
            f'"arguments":{{"prompt":"load test fake:size={size}"}}}}}}')
    try:
        # Warm-up: connection pools, allocator arenas.
        hey(srv.url(), body, 2, HttpServer.headers(), n=4)
        for c in args.gen_concurrency:
            before = tool_errors(srv.port)
            reset_peak(srv.pid)
            n = c * args.per_worker if latency_ms else max(c * args.per_worker, args.min_requests)
            r = hey(srv.url(), body, c, HttpServer.headers(), n=n)
            peak = rss(srv.pid)["VmHWM"]
            time.sleep(2.0)
            idle = rss(srv.pid)["VmRSS"]
            r["failed"] += int(tool_errors(srv.port) - before)
            row(f"generate_image {args.image_mib:g} MiB, {args.storage}, stateless (hey), "
                f"Gemini {latency_ms / 1000:g} s", c, r, peak, idle)
            for f in os.listdir(out):
                os.unlink(os.path.join(out, f))
    finally:
        srv.stop()
        fake.stop()
        if az:
            az.stop()
        shutil.rmtree(out, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", default="10s", help="hey -z for tools/list rows")
    ap.add_argument("--list-concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--gen-concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--latency-ms", type=int, nargs="+", default=[0, 3000])
    ap.add_argument("--image-mib", type=float, default=1.0)
    ap.add_argument("--per-worker", type=int, default=4,
                    help="calls each hey worker makes in a generate row")
    ap.add_argument("--min-requests", type=int, default=200,
                    help="at least this many calls per 0 ms generate row")
    ap.add_argument("--storage", choices=["local", "azure"], default="local")
    ap.add_argument("--skip-list", action="store_true")
    args = ap.parse_args()
    if not shutil.which("hey"):
        sys.exit("hey is not installed (apt-get install hey)")
    print(f"<!-- {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}, "
          f"python3 scripts/bench_http.py {' '.join(sys.argv[1:])} -->")
    print("| workload | concurrency | requests | failed | req/s | p50 | p99 | peak RSS MiB | idle RSS after MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    if not args.skip_list:
        tools_list_rows(args)
    for lat in args.latency_ms:
        generate_rows(args, lat)


if __name__ == "__main__":
    main()
