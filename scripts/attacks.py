#!/usr/bin/env python3
"""Issue 12 ("bounded everywhere"): attacks on the HTTP server in a memory
limit.

Starts the fake Gemini (outside the limit) and, for every attack, a fresh
release server on `serve --http 127.0.0.1:PORT` (bearer token, local folder
storage, its own temp dir) inside a cgroup v1 memory cgroup of --limit-mib.
/healthz is probed every 0.5 s during the attack (on the ops listener when
the binary has `--ops-addr`, else on the main port). After each attack:
OOM kills (the cgroup's oom_kill counter), is the server alive, does
/healthz answer, and does a normal generate_image (64 KiB) succeed with the
sha256 the fake sent. One JSON line per attack; a "control" run (no attack)
comes first and proves the harness itself: if it fails, exit 2.

Attacks (every number is a flag):
  slow_heads      400 connections each trickling ~380 KiB of an unfinished
                  request head, held ~20 s
  idle_conns      2,000 connections that send nothing; how many the server
                  closes by 15 s / 40 s, how many it refuses at once
  json_blowup_*   one tools/call whose arguments carry a 2 MiB / 7.9 MiB
                  `[0,0,...]` array (an ignored field)
  session_flood   2,000 initialize POSTs (new sessions, never closed), 32 at
                  a time
  data_uri_edits  24 concurrent edit_image calls with a ~6 MiB data: URI PNG
                  (and the same `--stateless`, where the direct path serves
                  them: the body's payment must last until the URI is a file)
  temp_disk_flood 40 concurrent edit_image calls, each downloading a 12 MiB
                  PNG from a loopback server (allowed with --allow-url-host)
                  while Gemini waits 3 s: the temp dir must stay under
                  --max-temp-bytes (192 MiB), the rest refused as busy
  stateless_leak  `--stateless`, 300 sequential generate_image calls; RSS
                  growth after a 5 s settle
  progress_token  a tools/call whose _meta.progressToken is a 7 MiB string

Exit 0 when no attack caused an OOM kill, a dead server, a failed /healthz
after it, or a failed normal call after it (--strict: also when an
attack's own expectation, listed in "expectations", is missed); 1
otherwise; 2 when the harness itself could not run (control failed).
Needs root and a writable cgroup v1 memory controller; prints "skipped"
and exits 0 without one. Talks only to 127.0.0.1.

Memory figures: peak_rss_mib is the server's VmHWM (or, once it is
killed, its RSS sampled every 50 ms), which includes the binary's text
pages the cgroup is not charged for; cgroup_max_usage_mib is the cgroup's
memory.max_usage_in_bytes (reset before each attack), which includes the
page cache of files the server wrote; cgroup_peak_rss_mib is the sampled
anonymous memory charged to the cgroup, the part an attack inflates."""

import argparse
import asyncio
import base64
import collections
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import mcpdrive as d  # noqa: E402

MiB = 1 << 20

log_tail, mib = d.log_tail, d.mib


def label(resp=None, msg=None, exc=None):
    """(label, detail) of one exchange, for counting."""
    if exc is not None:
        return (exc.kind if isinstance(exc, d.HttpError) else type(exc).__name__), str(exc)[:200]
    if resp.status != 200:
        return f"http_{resp.status}", resp.body[:200].decode("utf-8", "replace")
    if msg is None:
        return "http_200_no_reply", resp.body[:200].decode("utf-8", "replace")
    if "error" in msg:
        return "jsonrpc_error", str(msg["error"].get("message", ""))[:200]
    r = msg.get("result") or {}
    if r.get("isError"):
        text = " ".join(c.get("text", "") for c in r.get("content", []))
        return ("tool_busy" if "busy" in text.lower() else "tool_error"), text[:200]
    return "ok", ""


class Tally:
    def __init__(self):
        self.counts = collections.Counter()
        self.samples = {}

    def add(self, lab, detail=""):
        self.counts[lab] += 1
        if detail and lab != "ok" and lab not in self.samples:
            self.samples[lab] = detail

    def out(self):
        return {"outcomes": dict(self.counts), "samples": self.samples}


# ---------------------------------------------------------------------------
# Attacks: async functions (ctx, srv) -> dict of figures. They must close
# every socket they open before returning.

async def control(ctx, srv):
    return {}


async def slow_heads(ctx, srv):
    a = ctx.args
    loop = asyncio.get_running_loop()
    head = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: "
    piece = b"a" * a.slow_piece
    pieces = max(1, (a.slow_kib * 1024 - len(head)) // len(piece))
    interval = a.slow_send_s / pieces
    start = loop.time()
    deadline = start + a.slow_hold_s
    tally = Tally()
    closed_at = []
    sent_total = [0]

    async def one(i):
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", srv.port), 5)
        except (OSError, asyncio.TimeoutError) as e:
            tally.add("connect_failed", str(e))
            return
        rd = asyncio.ensure_future(reader.read(4096))
        sent = 0
        write_err = None
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    writer.write(head)
                    sent += len(head)
                    # Stagger the connections across one interval.
                    await asyncio.sleep(interval * (i % 16) / 16)
                    for _ in range(pieces):
                        if rd.done():
                            break
                        await asyncio.sleep(interval)
                        writer.write(piece)
                        await writer.drain()
                        sent += len(piece)
                    await asyncio.wait({rd})
            except TimeoutError:
                pass
            except OSError as e:
                write_err = e
                # A status line may have come before the reset.
                await asyncio.wait({rd}, timeout=0.5)
            if rd.done():
                closed_at.append(loop.time() - start)
                try:
                    data = rd.result()
                except OSError as e:
                    tally.add("reset", str(e))
                else:
                    if data.startswith(b"HTTP/1."):
                        tally.add(f"http_{data.split()[1].decode()}",
                                  data[:120].decode("latin-1"))
                    elif data:
                        tally.add("garbage", repr(data[:60]))
                    else:
                        tally.add("closed")
            elif write_err is not None:
                closed_at.append(loop.time() - start)
                tally.add("reset", str(write_err))
            else:
                tally.add("open_at_end")
        finally:
            if rd.done() and not rd.cancelled():
                rd.exception()  # retrieved: no "never retrieved" noise
            rd.cancel()
            sent_total[0] += sent
            writer.close()

    await asyncio.gather(*(one(i) for i in range(a.slow_conns)))
    closed_at.sort()
    out = tally.out()
    out.update({
        "connections": a.slow_conns, "head_bytes_each": pieces * len(piece) + len(head),
        "sent_mib_total": mib(sent_total[0]),
        "first_close_s": round(closed_at[0], 2) if closed_at else None,
        "median_close_s": round(closed_at[len(closed_at) // 2], 2) if closed_at else None,
    })
    out["expectations"] = {
        "every connection refused or closed by the end": out["outcomes"].get("open_at_end", 0) == 0,
    }
    return out


async def idle_conns(ctx, srv):
    a = ctx.args
    loop = asyncio.get_running_loop()
    start = loop.time()
    horizon = max(a.idle_checks)
    deadline = start + horizon
    sem = asyncio.Semaphore(200)
    rows = []  # (opened_at, closed_at or None, kind)
    tally = Tally()

    async def one():
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", srv.port), 5)
            except (OSError, asyncio.TimeoutError) as e:
                tally.add("connect_failed", str(e))
                return
        opened = loop.time() - start
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    data = await reader.read(4096)
                kind = (f"http_{data.split()[1].decode()}" if data.startswith(b"HTTP/1.")
                        else "closed" if not data else "garbage")
                rows.append((opened, loop.time() - start, kind))
                tally.add(kind, data[:120].decode("latin-1") if data else "")
            except TimeoutError:
                rows.append((opened, None, "open"))
                tally.add("open_at_end")
            except OSError as e:
                rows.append((opened, loop.time() - start, "reset"))
                tally.add("reset", str(e))
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(a.idle_conns)))
    out = tally.out()
    opened = len(rows)
    out.update({
        "connections": a.idle_conns, "opened": opened,
        "last_open_s": round(max((r[0] for r in rows), default=0), 2),
        "refused_within_1s": sum(1 for o, c, k in rows if c is not None and c - o <= 1.0),
    })
    for t in a.idle_checks:
        out[f"closed_by_{t:g}s"] = sum(1 for _, c, _ in rows if c is not None and c <= t)
    out["expectations"] = {
        f"idle connections closed by {a.idle_checks[0]:g} s":
            out[f"closed_by_{a.idle_checks[0]:g}s"] >= opened,
    }
    return out


def blowup_attack(pad_mib):
    async def json_blowup(ctx, srv):
        tally = Tally()
        sid = await d.aio_session(srv)
        pad_bytes = int(pad_mib * MiB)
        n = max(1, pad_bytes // 2)
        pad = b"[" + b"0," * (n - 1) + b"0]"
        prefix = (b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":'
                  b'"generate_image","arguments":{"prompt":"json blowup fake:size=65536",'
                  b'"pad":')
        suffix = b"}}}"
        body = [prefix, pad, suffix]
        t0 = time.monotonic()
        try:
            r = await d.aio_request(srv.port, "POST", "/mcp", srv.headers(sid), body,
                                    timeout=ctx.args.call_timeout, until_id=2)
            tally.add(*label(r, r.message(2)))
        except d.HttpError as e:
            tally.add(*label(exc=e))
        out = tally.out()
        out.update({"body_mib": mib(sum(map(len, body))), "array_elements": n,
                    "answer_s": round(time.monotonic() - t0, 2)})
        return out
    return json_blowup


async def session_flood(ctx, srv):
    a = ctx.args
    tally = Tally()
    retry_after = collections.Counter()
    sem = asyncio.Semaphore(a.flood_concurrency)
    body = d.jsonrpc(1, "initialize", {"protocolVersion": d.MCP_PROTOCOL, "capabilities": {},
                                       "clientInfo": {"name": "flood", "version": "1"}})
    first_503 = [None]

    async def one(i):
        async with sem:
            try:
                r = await d.aio_request(srv.port, "POST", "/mcp", srv.headers(), body,
                                        timeout=10, until_id=1)
            except d.HttpError as e:
                tally.add(*label(exc=e))
                return
            if r.status == 200 and not r.headers.get("mcp-session-id"):
                tally.add("http_200_without_session_id")
                return
            lab, detail = label(r, r.message(1))
            tally.add("session_created" if lab == "ok" else lab, detail)
            if r.status == 503:
                if first_503[0] is None:
                    first_503[0] = i
                retry_after["with_retry_after" if "retry-after" in r.headers
                            else "without_retry_after"] += 1

    await asyncio.gather(*(one(i) for i in range(a.flood_sessions)))
    m = srv.mem()
    # Recovery: once the flood's idle sessions expire, initialize works
    # again (honouring Retry-After meanwhile).
    t_end = time.monotonic()
    recovered = None
    while time.monotonic() - t_end < a.session_idle_s + 20:
        try:
            r = await d.aio_request(srv.port, "POST", "/mcp", srv.headers(), body,
                                    timeout=10, until_id=1)
        except d.HttpError:
            r = None
        if r is not None and r.status == 200:
            recovered = round(time.monotonic() - t_end, 1)
            break
        wait = 1.0
        if r is not None and r.headers.get("retry-after", "").isdigit():
            wait = float(r.headers["retry-after"])
        await asyncio.sleep(min(wait, 5.0))
    await asyncio.sleep(a.settle_s)
    m2 = srv.mem()
    out = tally.out()
    out.update({
        "initialize_posts": a.flood_sessions, "concurrency": a.flood_concurrency,
        "retry_after_on_503": dict(retry_after), "first_503_at": first_503[0],
        "recovered_after_s": recovered,
        "rss_after_mib": mib(m["rss"]) if m else None,
        "rss_settled_mib": mib(m2["rss"]) if m2 else None,
    })
    out["expectations"] = {
        "some 503 with Retry-After": retry_after.get("with_retry_after", 0) > 0,
    }
    return out


async def files_left(path, within_s=3.0):
    """What is still in `path` once it empties or `within_s` passes
    (deletion may trail the reply by a moment)."""
    left = os.listdir(path)
    for _ in range(int(within_s / 0.1)):
        if not left:
            break
        await asyncio.sleep(0.1)
        left = os.listdir(path)
    return left


async def data_uri_edits(ctx, srv):
    a = ctx.args
    tally = Tally()
    sid = None if srv.stateless else await d.aio_session(srv)
    r = await d.aio_request(srv.port, "POST", "/mcp", srv.headers(sid),
                            d.jsonrpc(3, "tools/list", {}), timeout=10, until_id=3)
    tools = {t["name"]: t for t in (r.message(3) or {}).get("result", {}).get("tools", [])}
    props = tools.get("edit_image", {}).get("inputSchema", {}).get("properties", {})
    if "imagePath" not in props or "prompt" not in props:
        raise RuntimeError(f"edit_image's schema has no imagePath/prompt: {sorted(props)}")
    if "png" not in ctx.cache:
        png = d.random_png(int(a.edit_raw_mib * MiB))
        ctx.cache["png"] = b"data:image/png;base64," + base64.b64encode(png)
    uri = ctx.cache["png"]
    marker = f"edit{os.getpid()}x{int(time.time())}"

    async def one(i):
        rid = 100 + i
        prefix = ('{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"edit_image",'
                  '"arguments":{"prompt":"%s-%d make it pink fake:size=65536","imagePath":"'
                  % (rid, marker, i)).encode()
        try:
            resp = await d.aio_request(srv.port, "POST", "/mcp", srv.headers(sid),
                                       [prefix, uri, b'"}}}'], timeout=a.call_timeout,
                                       until_id=rid)
        except d.HttpError as e:
            tally.add(*label(exc=e))
            return
        msg = resp.message(rid)
        lab, detail = label(resp, msg)
        if lab == "ok":
            res = msg["result"].get("structuredContent") or {}
            path = d.result_file(res)
            want = d.fake_sha_by_prompt(ctx.fake, f"{marker}-{i} ")
            got = d.sha256_file(path) if path and os.path.exists(path) else None
            if not (got and got == want == res.get("sha256")):
                lab, detail = "sha_mismatch", f"file {got} fake {want} result {res.get('sha256')}"
        tally.add(lab, detail)

    await asyncio.gather(*(one(i) for i in range(a.edit_calls)))
    left = await files_left(ctx.temp_dir)
    out = tally.out()
    out.update({"calls": a.edit_calls, "data_uri_mib": mib(len(uri)),
                "temp_files_left": len(left), "temp_left_sample": left[:5]})
    # A 503 from the body check (with Retry-After) is a busy refusal too.
    good = sum(out["outcomes"].get(k, 0) for k in ("ok", "tool_busy", "http_503"))
    out["expectations"] = {
        "every edit ok or busy": good == a.edit_calls,
        "temp dir empty after": not left,
    }
    return out


class PngServer:
    """A loopback HTTP server (its own thread) answering every GET with the
    same PNG and its Content-Length: edit inputs by URL, for the temp-disk
    attack (the server allows the host with --allow-url-host)."""

    def __init__(self, png):
        import http.server
        import threading

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(png)))
                self.end_headers()
                try:
                    self.wfile.write(png)
                except OSError:
                    pass

            def log_message(self, *_):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def dir_bytes(path):
    total = 0
    try:
        for e in os.scandir(path):
            try:
                total += e.stat().st_size
            except OSError:
                pass
    except OSError:
        pass
    return total


async def temp_disk_flood(ctx, srv):
    """Many edits whose input is a big download: the temp disk budget
    (--max-temp-bytes) must refuse what does not fit before it is written,
    so the temp dir never passes it (the k8s emptyDir would evict the pod)."""
    a = ctx.args
    tally = Tally()
    sid = await d.aio_session(srv)
    url = f"http://127.0.0.1:{ctx.png_server.port}/big.png"
    marker = f"disk{os.getpid()}x{int(time.time())}"
    peak = {"bytes": 0}
    stop = asyncio.Event()

    async def watch():
        while not stop.is_set():
            peak["bytes"] = max(peak["bytes"], dir_bytes(ctx.temp_dir))
            await asyncio.sleep(0.02)

    async def one(i):
        rid = 100 + i
        args = {"prompt": f"{marker}-{i} make it pink fake:size=65536 fake:latency={a.disk_latency_ms}",
                "imagePath": url}
        try:
            r, m = await d.aio_call(srv, "edit_image", args, rid=rid, session=sid,
                                    timeout=a.call_timeout)
        except d.HttpError as e:
            tally.add(*label(exc=e))
            return
        lab, detail = label(r, m)
        if lab == "tool_busy" and "--max-temp-bytes" not in detail and "being fetched" not in detail:
            lab = "tool_busy_other"
        tally.add(lab, detail)

    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(one(i) for i in range(a.disk_calls)))
    stop.set()
    await watcher
    left = await files_left(ctx.temp_dir)
    out = tally.out()
    cap = a.disk_cap_mib * MiB
    out.update({"calls": a.disk_calls, "input_mib": a.disk_input_mib,
                "temp_cap_mib": a.disk_cap_mib, "temp_peak_mib": mib(peak["bytes"]),
                "temp_files_left": len(left)})
    good = sum(out["outcomes"].get(k, 0) for k in ("ok", "tool_busy"))
    out["expectations"] = {
        "every edit ok or refused for temp disk": good == a.disk_calls,
        "some refused (the flood is bigger than the cap)": out["outcomes"].get("tool_busy", 0) > 0,
        "temp dir never over --max-temp-bytes": peak["bytes"] <= cap,
        "temp dir empty after": not left,
    }
    return out


async def stateless_leak(ctx, srv):
    a = ctx.args
    tally = Tally()
    prompt = "leak check fake:size=65536 fake:seed=11"
    for i in range(5):
        await d.aio_call(srv, "generate_image", {"prompt": prompt}, rid=i + 1, timeout=30)
    await asyncio.sleep(a.settle_s)
    before = srv.mem()
    t0 = time.monotonic()
    for i in range(a.leak_calls):
        try:
            r, m = await d.aio_call(srv, "generate_image", {"prompt": prompt}, rid=100 + i,
                                    timeout=30)
            tally.add(*label(r, m))
        except d.HttpError as e:
            tally.add(*label(exc=e))
    calls_s = time.monotonic() - t0
    await asyncio.sleep(a.settle_s)
    after = srv.mem()
    out = tally.out()
    growth = (after["rss"] - before["rss"]) if before and after else None
    out.update({"calls": a.leak_calls, "calls_s": round(calls_s, 2),
                "rss_before_mib": mib(before["rss"]) if before else None,
                "rss_after_mib": mib(after["rss"]) if after else None,
                "rss_growth_mib": mib(growth)})
    out["expectations"] = {
        f"RSS growth < {a.leak_max_growth_mib:g} MiB":
            growth is not None and growth < a.leak_max_growth_mib * MiB,
        "every call ok": out["outcomes"].get("ok", 0) == a.leak_calls,
    }
    return out


async def progress_token(ctx, srv):
    a = ctx.args
    tally = Tally()
    sid = await d.aio_session(srv)
    await asyncio.sleep(1)
    before = srv.mem()
    token = b"p" * int(a.token_mib * MiB)
    answers = []

    async def one(i):
        rid = 10 + i
        prefix = ('{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":'
                  '"generate_image","arguments":{"prompt":"progress token %d fake:size=65536"},'
                  '"_meta":{"progressToken":"' % (rid, i)).encode()
        try:
            r = await d.aio_request(srv.port, "POST", "/mcp", srv.headers(sid),
                                    [prefix, token, b'"}}}'], timeout=a.call_timeout,
                                    until_id=rid)
            tally.add(*label(r, r.message(rid)))
            answers.append((len(r.body), sum(1 for m in r.messages
                                             if m.get("method") == "notifications/progress")))
        except d.HttpError as e:
            tally.add(*label(exc=e))

    await asyncio.gather(*(one(i) for i in range(a.token_calls)))
    await asyncio.sleep(a.settle_s)
    after = srv.mem()
    out = tally.out()
    out.update({"calls": a.token_calls, "token_mib": a.token_mib,
                "reply_bytes": [x[0] for x in answers], "progress_notes": [x[1] for x in answers],
                "rss_before_mib": mib(before["rss"]) if before else None,
                "rss_settled_mib": mib(after["rss"]) if after else None})
    served = sum(out["outcomes"].get(k, 0) for k in ("ok", "tool_busy", "tool_error",
                                                   "jsonrpc_error", "http_413"))
    out["expectations"] = {
        "served or refused": served == a.token_calls,
        "RSS settles within 8 MiB": bool(before and after and
                                        after["rss"] - before["rss"] < 8 * MiB),
    }
    return out


# ---------------------------------------------------------------------------

def attack_list(args):
    """(name, function, stateless) in run order."""
    out = [("slow_heads", slow_heads, False), ("idle_conns", idle_conns, False)]
    for m in args.blowup_mib:
        out.append((f"json_blowup_{m:g}mib", blowup_attack(m), False))
    out += [("session_flood", session_flood, False), ("data_uri_edits", data_uri_edits, False),
            ("data_uri_edits_stateless", data_uri_edits, True),
            ("temp_disk_flood", temp_disk_flood, False),
            ("stateless_leak", stateless_leak, True), ("progress_token", progress_token, False)]
    return out


class Ctx:
    def __init__(self, args, cg, fake, root):
        self.args, self.cg, self.fake, self.root = args, cg, fake, root
        self.cache = {}
        self.temp_dir = None
        self.server = None
        self.png_server = None


async def normal_call(srv, fake, marker, timeout):
    """A small generate_image on a fresh session (or stateless POST); checks
    the stored file's sha256 against the fake's and the result's."""
    try:
        sid = None if srv.stateless else await d.aio_session(srv, timeout=timeout)
        prompt = f"normal call {marker} fake:size=65536"
        r, m = await d.aio_call(srv, "generate_image", {"prompt": prompt}, rid=7, session=sid,
                                timeout=timeout)
    except d.HttpError as e:
        return {"ok": False, "error": str(e)[:300]}
    lab, detail = label(r, m)
    if lab != "ok":
        return {"ok": False, "error": f"{lab}: {detail}"}
    res = m["result"].get("structuredContent") or {}
    path = d.result_file(res)
    if not path or not os.path.exists(path):
        return {"ok": False, "error": f"no stored file in the result: {json.dumps(res)[:300]}"}
    got = d.sha256_file(path)
    want = d.fake_sha_by_prompt(fake, marker)
    if got != want or got != res.get("sha256"):
        return {"ok": False,
                "error": f"sha256: file {got}, fake {want}, result {res.get('sha256')}"}
    return {"ok": True}


def healthz_after(srv, within=5.0):
    end = time.monotonic() + within
    while True:
        st, _ = d.http_get(srv.health_port, "/healthz", timeout=2.0)
        if st == 200:
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.25)


def run_one(ctx, name, fn, stateless):
    a = ctx.args
    cg = ctx.cg
    work = tempfile.mkdtemp(prefix=f"{name}-", dir=ctx.root)
    out_dir = os.path.join(work, "out")
    ctx.temp_dir = os.path.join(work, "tmp")
    os.makedirs(out_dir)
    os.makedirs(ctx.temp_dir)
    cg.force_empty()
    try:
        srv = d.HttpServer(ctx.fake, out_dir, cgroup=cg, stateless=stateless,
                           env={"NANO_BANANA_TEMP_DIR": ctx.temp_dir,
                                "NANO_BANANA_SHUTDOWN_GRACE_SECS": "2",
                                # The flood's sessions must expire for the
                                # normal call after it to get one.
                                **({"NANO_BANANA_SESSION_IDLE_SECS": str(a.session_idle_s)}
                                   if name == "session_flood" else {}),
                                **({"NANO_BANANA_ALLOW_URL_HOSTS":
                                    f"127.0.0.1:{ctx.png_server.port}",
                                    "NANO_BANANA_MAX_TEMP_BYTES": f"{a.disk_cap_mib}MiB"}
                                   if name == "temp_disk_flood" else {})})
    except RuntimeError as e:
        cg.kill_all()
        shutil.rmtree(work, ignore_errors=True)
        return {"attack": name, "stateless": stateless,
                "failures": [f"server did not start: {e}"[:500]], "expectations_missed": []}
    ctx.server = srv
    rec = {"attack": name, "stateless": stateless, "limit_mib": a.limit_mib,
           "healthz_port": "ops" if srv.ops_port else "main"}
    try:
        oom0 = cg.oom_kills()
        time.sleep(0.3)
        idle = srv.mem()
        cg.reset_max_usage()
        sampler = d.Sampler(srv.pid, cg, interval=0.05)
        prober = d.HealthProber(srv.health_port, interval=0.5, timeout=2.0)
        t0 = time.monotonic()
        harness_error = None
        try:
            detail = asyncio.run(asyncio.wait_for(fn(ctx, srv), a.attack_timeout))
        except d.HttpError as e:
            detail = {"outcomes": {f"aborted_{e.kind}": 1}, "samples": {"aborted": str(e)[:300]}}
        except asyncio.TimeoutError:
            detail = {"outcomes": {"attack_timeout": 1}}
        except Exception:
            harness_error = traceback.format_exc()
            detail = {}
        duration = time.monotonic() - t0
        prober.stop()
        alive = srv.alive()
        hz_after = healthz_after(srv) if alive else False
        normal = (asyncio.run(normal_call(srv, ctx.fake, f"chk{name}{os.getpid()}",
                                          a.call_timeout))
                  if alive else {"ok": False, "error": "server dead"})
        sampler.stop()
        alive = srv.alive()
        m = srv.mem()
        oom = cg.oom_kills() - oom0
        expectations = detail.pop("expectations", {})
        rec.update({
            "oom_kills": oom, "alive": alive,
            "exit_code": None if alive else srv.p.returncode,
            "duration_s": round(duration, 1),
            "rss_idle_mib": mib(idle["rss"]) if idle else None,
            "peak_rss_mib": mib(max(sampler.max_rss, m["hwm"] if m else 0)),
            "cgroup_max_usage_mib": mib(cg.max_usage()),
            "cgroup_peak_rss_mib": mib(sampler.max_cg_rss),
            "healthz_during": prober.fraction(), "healthz_probes": prober.total,
            "healthz_errors": prober.errors,
            "healthz_after": hz_after,
            "normal_call_after": normal,
            **detail,
            "expectations": expectations,
        })
        failures = []
        if oom:
            failures.append(f"{oom} OOM kill(s)")
        if not alive:
            failures.append(f"server died (exit {srv.p.returncode})")
        elif not hz_after:
            failures.append("/healthz did not answer after the attack")
        if not normal["ok"]:
            failures.append("normal call after failed")
        if harness_error:
            failures.append("harness error")
            rec["harness_error"] = harness_error[-1500:]
        missed = [k for k, v in expectations.items() if not v]
        if a.strict and missed:
            failures += [f"expectation missed: {k}" for k in missed]
        rec["failures"] = failures
        rec["expectations_missed"] = missed
        if failures:
            rec["server_log_tail"] = log_tail(srv.err)
        return rec
    finally:
        srv.stop(grace=5)
        cg.kill_all()  # anything the server left behind in the cgroup
        ctx.server = None
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--limit-mib", type=int, default=128)
    ap.add_argument("--only", action="append", default=[],
                    help="run only attacks whose name starts with this (repeatable, "
                         "comma-separated); the control run always comes first")
    ap.add_argument("--list", action="store_true", help="list the attacks and exit")
    ap.add_argument("--strict", action="store_true",
                    help="also fail when an attack's expectation is missed")
    ap.add_argument("--attack-timeout", type=float, default=60.0,
                    help="hard bound on one attack's own run, in seconds")
    ap.add_argument("--call-timeout", type=float, default=40.0)
    ap.add_argument("--settle-s", type=float, default=5.0)
    g = ap.add_argument_group("slow_heads")
    g.add_argument("--slow-conns", type=int, default=400)
    g.add_argument("--slow-kib", type=int, default=380, help="head bytes per connection")
    g.add_argument("--slow-piece", type=int, default=10240, help="bytes per write")
    g.add_argument("--slow-send-s", type=float, default=12.0, help="time to send the head")
    g.add_argument("--slow-hold-s", type=float, default=20.0, help="end of the attack")
    g = ap.add_argument_group("idle_conns")
    g.add_argument("--idle-conns", type=int, default=2000)
    g.add_argument("--idle-checks", type=float, nargs="+", default=[15.0, 40.0],
                   help="report closed connections at these seconds; the last ends the attack")
    g = ap.add_argument_group("json_blowup")
    g.add_argument("--blowup-mib", type=float, nargs="+", default=[2.0, 7.9])
    g = ap.add_argument_group("session_flood")
    g.add_argument("--session-idle-s", type=int, default=15,
                   help="the server's session idle time in this attack")
    g.add_argument("--flood-sessions", type=int, default=2000)
    g.add_argument("--flood-concurrency", type=int, default=32)
    g = ap.add_argument_group("data_uri_edits")
    g.add_argument("--edit-calls", type=int, default=24)
    g.add_argument("--edit-raw-mib", type=float, default=4.5,
                   help="PNG size before base64 (x4/3 in the data: URI)")
    g = ap.add_argument_group("temp_disk_flood")
    g.add_argument("--disk-calls", type=int, default=40)
    g.add_argument("--disk-input-mib", type=float, default=12.0,
                   help="PNG each edit downloads (Content-Length given)")
    g.add_argument("--disk-cap-mib", type=int, default=192, help="--max-temp-bytes")
    g.add_argument("--disk-latency-ms", type=int, default=3000,
                   help="fake Gemini's wait, so inputs are held on disk meanwhile")
    g = ap.add_argument_group("stateless_leak")
    g.add_argument("--leak-calls", type=int, default=300)
    g.add_argument("--leak-max-growth-mib", type=float, default=5.0)
    g = ap.add_argument_group("progress_token")
    g.add_argument("--token-mib", type=float, default=7.0)
    g.add_argument("--token-calls", type=int, default=1)
    ap.add_argument("--bin-dir", default=None,
                    help="where nano-banana-mcp and nano-banana-fake-gemini are "
                         "(default: target/release)")
    args = ap.parse_args()
    if args.bin_dir:
        d.BIN = os.path.join(args.bin_dir, "nano-banana-mcp")
        d.FAKE_BIN = os.path.join(args.bin_dir, "nano-banana-fake-gemini")

    attacks = attack_list(args)
    if args.list:
        for name, _, stateless in attacks:
            print(name + ("  (--stateless)" if stateless else ""))
        return 0
    only = [o for x in args.only for o in x.split(",") if o]
    if only:
        attacks = [t for t in attacks if any(t[0].startswith(o) for o in only)]
        if not attacks:
            sys.exit(f"--only {only}: no such attack (--list)")
    if not (os.path.exists(d.BIN) and os.path.exists(d.FAKE_BIN)):
        sys.exit(f"needs release binaries {d.BIN} and {d.FAKE_BIN}")
    if not d.Cgroup.writable():
        print(json.dumps({"skipped": "no writable cgroup v1 memory controller"}))
        return 0

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 3 * (args.idle_conns + args.slow_conns) + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    # SIGTERM unwinds like Ctrl-C, through every finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Ctrl-C unwinds too, even when started with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    root = tempfile.mkdtemp(prefix="nbm-attacks-")
    cg = fake = None
    ctx = None
    results = []
    try:
        cg = d.Cgroup(f"nbm-attacks-{os.getpid()}", args.limit_mib * MiB)
        fake = d.FakeGemini()
        ctx = Ctx(args, cg, fake, root)
        if any(name == "temp_disk_flood" for name, _, _ in attacks):
            ctx.png_server = PngServer(d.random_png(int(args.disk_input_mib * MiB), seed=5))
        print(json.dumps({"binary": d.BIN, "ops_listener": d.serve_supports("--ops-addr"),
                          "limit_mib": args.limit_mib, "cores": os.cpu_count(),
                          "nofile": want, "date": time.strftime("%Y-%m-%d %H:%M")}), flush=True)
        rec = run_one(ctx, "control", control, False)
        rec_stateless = run_one(ctx, "control_stateless", control, True)
        for r in (rec, rec_stateless):
            print(json.dumps(r), flush=True)
        if rec["failures"] or rec_stateless["failures"]:
            print("control run failed: the harness or the server's normal path is broken; "
                  "no attack run", file=sys.stderr)
            return 2
        t_all = time.monotonic()
        for name, fn, stateless in attacks:
            rec = run_one(ctx, name, fn, stateless)
            results.append(rec)
            print(json.dumps(rec), flush=True)
        failed = [r["attack"] for r in results if r["failures"]]
        harness = [r["attack"] for r in results if "harness_error" in r]
        print(json.dumps({"summary": True, "attacks": len(results), "failed": failed,
                          "expectations_missed": {r["attack"]: r["expectations_missed"]
                                                  for r in results if r["expectations_missed"]},
                          "total_s": round(time.monotonic() - t_all, 1)}), flush=True)
        if harness:
            return 2
        return 1 if failed else 0
    finally:
        if ctx and ctx.server:
            ctx.server.stop(grace=2)
        if ctx and ctx.png_server:
            ctx.png_server.stop()
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
