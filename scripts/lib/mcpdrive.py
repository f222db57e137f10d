"""A small MCP-over-stdio driver for scripts: starts the real server binary
(optionally inside a cgroup v1 memory limit), speaks JSON-RPC to it line by
line, and reads its memory figures from /proc. Standard library only."""

import json
import os
import queue
import socket
import subprocess
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release", "nano-banana-mcp")
FAKE_BIN = os.path.join(ROOT, "target", "release", "nano-banana-fake-gemini")
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
TEST_KEY = "AIzaSCRIPT-key-0123456789"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


class Proc:
    def __init__(self, args, env=None, cwd=None, stdin=None, stdout=None):
        self.p = subprocess.Popen(args, env=env, cwd=cwd, stdin=stdin, stdout=stdout,
                                  stderr=subprocess.PIPE)
        self.err = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.p.stderr:
            self.err.append(line.decode("utf-8", "replace"))

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


class FakeGemini(Proc):
    def __init__(self, latency_ms=0):
        self.port = free_port()
        super().__init__([FAKE_BIN, "--addr", f"127.0.0.1:{self.port}",
                          "--latency-ms", str(latency_ms), "--api-key", TEST_KEY],
                         env=dict(os.environ, LOG_LEVEL="warn"))
        wait_port(self.port)
        self.url = f"http://127.0.0.1:{self.port}"

    def sent(self):
        with urllib.request.urlopen(self.url + "/_fake/sent") as r:
            return json.load(r)


class Azurite(Proc):
    """Uses AZURITE_BLOB_ENDPOINT if set (scripts/test.sh starts one)."""

    def __init__(self):
        ep = os.environ.get("AZURITE_BLOB_ENDPOINT")
        if ep:
            self.p = None
            self.endpoint = ep
            return
        port = free_port()
        tmp = os.path.join("/tmp", f"azurite-{port}")
        os.makedirs(tmp, exist_ok=True)
        super().__init__([os.path.join(ROOT, "node_modules", ".bin", "azurite-blob"),
                          "--inMemoryPersistence", "--blobHost", "127.0.0.1", "--blobPort",
                          str(port), "--skipApiVersionCheck", "--disableTelemetry", "--silent"],
                         cwd=tmp)
        wait_port(port)
        self.endpoint = f"http://127.0.0.1:{port}/devstoreaccount1"

    def stop(self):
        if self.p is not None:
            Proc.stop(self)

    def connection_string(self):
        return ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                f"AccountKey={AZURITE_KEY};BlobEndpoint={self.endpoint};")


class Cgroup:
    """A cgroup v1 memory limit; the kernel OOM-kills a process above it."""

    BASE = "/sys/fs/cgroup/memory"

    def __init__(self, name, limit_bytes):
        self.path = os.path.join(self.BASE, name)
        os.makedirs(self.path, exist_ok=True)
        with open(os.path.join(self.path, "memory.limit_in_bytes"), "w") as f:
            f.write(str(limit_bytes))
        # No swap escape hatch where the kernel offers the knob.
        sw = os.path.join(self.path, "memory.memsw.limit_in_bytes")
        if os.path.exists(sw):
            try:
                with open(sw, "w") as f:
                    f.write(str(limit_bytes))
            except OSError:
                pass

    @staticmethod
    def writable():
        try:
            p = os.path.join(Cgroup.BASE, f"nbm-probe-{os.getpid()}")
            os.makedirs(p)
            os.rmdir(p)
            return True
        except OSError:
            return False

    def read(self, name):
        with open(os.path.join(self.path, name)) as f:
            return f.read()

    def oom_kills(self):
        for line in self.read("memory.oom_control").splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def max_usage(self):
        return int(self.read("memory.max_usage_in_bytes"))

    # --- additions for scripts/attacks.py and scripts/bench_waits.py ---

    def write(self, name, value):
        with open(os.path.join(self.path, name), "w") as f:
            f.write(str(value))

    def reset_max_usage(self):
        """Start a new peak: memory.max_usage_in_bytes := current usage."""
        self.write("memory.max_usage_in_bytes", 0)

    def usage(self):
        return int(self.read("memory.usage_in_bytes"))

    def stat(self):
        out = {}
        for line in self.read("memory.stat").splitlines():
            k, _, v = line.partition(" ")
            if v.strip().isdigit():
                out[k] = int(v)
        return out

    def procs(self):
        return [int(x) for x in self.read("cgroup.procs").split()]

    def force_empty(self):
        """Drop the page cache still charged to an empty cgroup (files
        written by a previous server), so the next peak starts near 0.
        No-op while tasks remain or where the kernel refuses."""
        if self.procs():
            return False
        try:
            self.write("memory.force_empty", 0)
            return True
        except OSError:
            return False

    def kill_all(self):
        """SIGKILL whatever is still in this cgroup (only processes a
        script put there, e.g. children a server left behind)."""
        import signal
        for pid in self.procs():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def remove(self):
        for _ in range(50):
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.1)


class Server:
    def __init__(self, fake, out_dir=None, azure=None, container="bench", env=None, cgroup=None):
        e = {"PATH": os.environ.get("PATH", ""), "HOME": "/tmp", "GEMINI_API_KEY": TEST_KEY,
             "GEMINI_BASE_URL": fake.url, "LOG_LEVEL": "warn", "GEMINI_RETRY_BASE_MS": "50"}
        if out_dir:
            e["NANO_BANANA_OUTPUT_DIR"] = out_dir
        if azure:
            e["AZURE_STORAGE_CONNECTION_STRING"] = azure.connection_string()
            e["AZURE_STORAGE_CONTAINER_NAME"] = container
        e.update(env or {})
        args = [BIN]
        if cgroup:
            # Join the cgroup before exec so every byte is counted.
            args = ["sh", "-c", f'echo $$ > {cgroup.path}/cgroup.procs && exec "$0" "$@"', BIN]
        self.proc = Proc(args, env=e, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.pid = self.proc.p.pid
        self.next_id = 1
        self.pending = {}
        self.lock = threading.Lock()
        self.notes = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        r = self.request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                         "clientInfo": {"name": "mcpdrive", "version": "1"}})
        assert "result" in r, r
        self.notify("notifications/initialized", {})

    def _read(self):
        for line in self.proc.p.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "id" in msg and ("result" in msg or "error" in msg):
                with self.lock:
                    q = self.pending.pop(msg["id"], None)
                if q:
                    q.put(msg)
            else:
                self.notes.put(msg)
        with self.lock:
            for q in self.pending.values():
                q.put({"error": {"message": "server closed stdout"}})
            self.pending.clear()

    def send(self, obj):
        self.proc.p.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.p.stdin.flush()

    def notify(self, method, params):
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def request_async(self, method, params):
        with self.lock:
            rid = self.next_id
            self.next_id += 1
            q = queue.Queue()
            self.pending[rid] = q
        self.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        return q

    def request(self, method, params, timeout=300):
        return self.request_async(method, params).get(timeout=timeout)

    def call(self, tool, args, timeout=300):
        return self.request("tools/call", {"name": tool, "arguments": args}, timeout)

    def status(self):
        with open(f"/proc/{self.pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        kb = lambda k: int(fields[k].split()[0]) * 1024
        return {"rss": kb("VmRSS"), "hwm": kb("VmHWM")}

    def alive(self):
        return self.proc.p.poll() is None

    def stop(self):
        try:
            self.proc.p.stdin.close()
        except OSError:
            pass
        try:
            self.proc.p.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.stop()
        return "".join(self.proc.err)


def result_of(resp):
    """(ok, structured-or-text) of a tools/call response."""
    if "error" in resp:
        return False, resp["error"].get("message", "")
    r = resp["result"]
    if r.get("isError"):
        return False, " ".join(c.get("text", "") for c in r.get("content", []))
    return True, r.get("structuredContent") or {}


def sha256_url(url):
    import hashlib
    h = hashlib.sha256()
    if url.startswith("file://"):
        with open(urllib.request.url2pathname(url[7:]), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    with urllib.request.urlopen(url) as r:
        for chunk in iter(lambda: r.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# HTTP mode helpers (scripts/attacks.py, scripts/bench_waits.py). Additions
# only: nothing above depends on them.

HTTP_TOKEN = "attack-token-0123456789"
MCP_PROTOCOL = "2025-06-18"

_HELP_CACHE = {}


def serve_help():
    """`nano-banana-mcp serve --help` (cached): to detect optional flags."""
    if "serve" not in _HELP_CACHE:
        r = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True, timeout=20)
        _HELP_CACHE["serve"] = r.stdout + r.stderr
    return _HELP_CACHE["serve"]


def serve_supports(flag):
    import re
    pattern = r"(^|[\s,])" + re.escape(flag) + r"([\s=<,]|$)"
    return re.search(pattern, serve_help(), re.M) is not None


def proc_mem(pid):
    """{"rss", "hwm"} in bytes from /proc/PID/status, or None if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return {"rss": int(fields["VmRSS"].split()[0]) * 1024,
                "hwm": int(fields["VmHWM"].split()[0]) * 1024}
    except (OSError, KeyError, ValueError):
        return None


def http_get(port, path, timeout=2.0, headers=None):
    """(status, body) of a GET on 127.0.0.1, or (None, error) — never raises.
    The whole exchange must finish within `timeout`."""
    import http.client
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        body = r.read(65536)
        if time.monotonic() - t0 > timeout:
            return None, "slow"
        return r.status, body
    except (OSError, http.client.HTTPException) as e:
        return None, f"{type(e).__name__}: {e}"
    finally:
        conn.close()


class HttpServer(Proc):
    """The release server on `serve --http 127.0.0.1:PORT` with a bearer
    token and the local folder backend, optionally inside a cgroup (joined
    before exec, so every byte is counted). With ops=None, an ops listener
    (`--ops-addr`) is used when the binary has the flag; `health_port` is
    where /healthz and /readyz answer."""

    def __init__(self, fake, out_dir, extra_args=(), env=None, cgroup=None, ops=None,
                 token=HTTP_TOKEN, stateless=False, ready_timeout=20):
        self.port = free_port()
        if ops is None:
            ops = serve_supports("--ops-addr")
        self.ops_port = free_port() if ops else None
        self.token = token
        self.stateless = stateless
        e = {"PATH": os.environ.get("PATH", ""), "HOME": "/tmp", "GEMINI_API_KEY": TEST_KEY,
             "GEMINI_BASE_URL": fake.url, "LOG_LEVEL": "warn", "GEMINI_RETRY_BASE_MS": "50",
             "NANO_BANANA_OUTPUT_DIR": out_dir, "NANO_BANANA_AUTH_TOKEN": token}
        e.update(env or {})
        args = [BIN, "serve", "--http", f"127.0.0.1:{self.port}"]
        if self.ops_port:
            args += ["--ops-addr", f"127.0.0.1:{self.ops_port}"]
        if stateless:
            args.append("--stateless")
        args += list(extra_args)
        self.args = args
        if cgroup:
            args = ["sh", "-c", f'echo $$ > {cgroup.path}/cgroup.procs && exec "$0" "$@"', *args]
        super().__init__(args, env=e, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        self.pid = self.p.pid
        end = time.time() + ready_timeout
        while True:
            if self.p.poll() is not None:
                raise RuntimeError(f"server exited {self.p.returncode} at start: "
                                   f"{''.join(self.err)[-2000:]}")
            st, _ = http_get(self.health_port, "/readyz", timeout=1)
            if st == 200:
                break
            if time.time() > end:
                self.stop()
                raise RuntimeError(f"server not ready in {ready_timeout} s: "
                                   f"{''.join(self.err)[-2000:]}")
            time.sleep(0.05)

    @property
    def health_port(self):
        return self.ops_port or self.port

    def alive(self):
        return self.p.poll() is None

    def mem(self):
        return proc_mem(self.pid)

    def headers(self, session=None):
        h = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
             "Accept": "application/json, text/event-stream",
             "MCP-Protocol-Version": MCP_PROTOCOL}
        if session:
            h["Mcp-Session-Id"] = session
        return h

    def stop(self, grace=5):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(grace)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return "".join(self.err)


class Sampler:
    """A thread sampling a process's RSS and a cgroup's usage every
    `interval` s, keeping the maxima (the peak survives an OOM kill)."""

    def __init__(self, pid, cgroup=None, interval=0.2):
        self.pid, self.cg, self.interval = pid, cgroup, interval
        self.max_rss = 0
        self.max_cg_usage = 0
        self.max_cg_rss = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            m = proc_mem(self.pid)
            if m:
                self.max_rss = max(self.max_rss, m["rss"], m["hwm"])
            if self.cg:
                try:
                    self.max_cg_usage = max(self.max_cg_usage, self.cg.usage())
                    self.max_cg_rss = max(self.max_cg_rss, self.cg.stat().get("rss", 0))
                except OSError:
                    pass
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self._t.join(5)
        return self


class SocketSampler:
    """A thread summing the kernel memory of a process's TCP sockets
    (`ss -tmp`: skmem r + t + f + w, bytes) every `interval` s and keeping
    the maximum. cgroup v2 charges this memory to the pod; v1 (where the
    benchmarks run) does not, so it is measured here instead."""

    def __init__(self, pid, interval=0.5):
        self.pid, self.interval = pid, interval
        self.max_bytes, self.sockets_at_max, self.max_one = 0, 0, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def sample(self):
        out = subprocess.run(["ss", "-tmpnH"], capture_output=True, text=True).stdout
        mine, total, n, one = False, 0, 0, 0
        tag = f"pid={self.pid},"
        for line in out.splitlines():
            if "users:" in line:
                mine = tag in line
            if mine and "skmem:(" in line:
                fields = line.split("skmem:(", 1)[1].split(")", 1)[0].split(",")
                b = sum(int(f[1:]) for f in fields if f[:1] in "rtfw" and f[1:].isdigit())
                total, n, one = total + b, n + 1, max(one, b)
        return total, n, one

    def _run(self):
        while not self._stop.is_set():
            total, n, one = self.sample()
            if total > self.max_bytes:
                self.max_bytes, self.sockets_at_max = total, n
            self.max_one = max(self.max_one, one)
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self._t.join(10)
        return self


class HealthProber:
    """A thread GETting /healthz every `interval` s (each answer must be a
    200 within `timeout` s), independent of the caller's event loop."""

    def __init__(self, port, path="/healthz", interval=0.5, timeout=2.0):
        self.port, self.path, self.interval, self.timeout = port, path, interval, timeout
        self.total = 0
        self.ok = 0
        self.errors = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            t0 = time.monotonic()
            st, err = http_get(self.port, self.path, timeout=self.timeout)
            self.total += 1
            if st == 200:
                self.ok += 1
            else:
                k = f"http_{st}" if st else str(err).split(":")[0]
                self.errors[k] = self.errors.get(k, 0) + 1
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t0)))

    def stop(self):
        self._stop.set()
        self._t.join(self.timeout + 2)
        return self

    def fraction(self):
        return round(self.ok / self.total, 3) if self.total else None


# --- asyncio HTTP/1.1 over loopback: cheap clients for many connections ---

class HttpError(Exception):
    """A transport-level failure; `kind` is a short label for counting."""

    def __init__(self, kind, detail=""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class Response:
    def __init__(self, status, headers, body, messages=None):
        self.status = status
        self.headers = headers  # lower-case names
        self.body = body
        self.messages = messages if messages is not None else parse_messages(
            headers.get("content-type", ""), body)

    def message(self, rid):
        """The JSON-RPC response with this id, or None."""
        for m in self.messages:
            if isinstance(m, dict) and m.get("id") == rid and ("result" in m or "error" in m):
                return m
        return None


def parse_messages(content_type, body):
    """JSON-RPC messages in a JSON or SSE body (best effort)."""
    if not body:
        return []
    if "text/event-stream" in content_type:
        out = []
        for event in body.replace(b"\r\n", b"\n").split(b"\n\n"):
            data = b"\n".join(line[5:].lstrip(b" ") for line in event.split(b"\n")
                              if line.startswith(b"data:"))
            if data.strip():
                try:
                    out.append(json.loads(data))
                except ValueError:
                    pass
        return out
    try:
        v = json.loads(body)
    except ValueError:
        return []
    return v if isinstance(v, list) else [v]


async def aio_request(port, method, path, headers=None, body=b"", timeout=60.0,
                      until_id=None, max_body=64 << 20):
    """One HTTP/1.1 exchange on a fresh connection to 127.0.0.1:port
    (`Connection: close`). `body` is bytes or a list of bytes parts (sent
    one after the other, so a big shared part is never copied). For an SSE
    reply with `until_id`, returns as soon as the JSON-RPC response with
    that id has arrived (the stream may stay open). A response the server
    sends before the request body is fully written (413, 431, 503) is still
    read. Raises HttpError(kind) on transport failures: connect, timeout,
    reset, closed (EOF before a status line)."""
    import asyncio
    parts = body if isinstance(body, (list, tuple)) else [body]
    length = sum(len(p) for p in parts)

    async def run():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        except OSError as e:
            raise HttpError("connect", str(e))
        try:
            h = {"Host": f"127.0.0.1:{port}", "Connection": "close"}
            h.update(headers or {})
            if length or method in ("POST", "PUT"):
                h["Content-Length"] = str(length)
            head = f"{method} {path} HTTP/1.1\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
            write_error = None
            try:
                writer.write(head.encode())
                for p in parts:
                    writer.write(p)
                    await writer.drain()
                await writer.drain()
            except OSError as e:
                write_error = e
            try:
                status_line = await reader.readline()
            except OSError as e:
                raise HttpError("reset", str(e))
            if not status_line:
                if write_error:
                    raise HttpError("reset", f"while writing: {write_error}")
                raise HttpError("closed", "EOF before a status line")
            try:
                status = int(status_line.split()[1])
            except (IndexError, ValueError):
                raise HttpError("garbage", repr(status_line[:80]))
            hdrs = {}
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                k, _, v = line.decode("latin-1").partition(":")
                hdrs[k.strip().lower()] = v.strip()
            ctype = hdrs.get("content-type", "")
            sse = "text/event-stream" in ctype
            buf = bytearray()

            def done():
                if until_id is None or not sse:
                    return False
                r = Response(status, hdrs, bytes(buf))
                return r.message(until_id) is not None

            try:
                if hdrs.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        size_line = await reader.readline()
                        if not size_line:
                            break
                        n = int(size_line.split(b";")[0].strip() or b"0", 16)
                        if n == 0:
                            break
                        buf += await reader.readexactly(n)
                        await reader.readexactly(2)
                        if len(buf) > max_body:
                            raise HttpError("too_big", f"{len(buf)} bytes")
                        if done():
                            break
                elif "content-length" in hdrs:
                    n = int(hdrs["content-length"])
                    if n > max_body:
                        raise HttpError("too_big", f"{n} bytes")
                    buf += await reader.readexactly(n)
                elif status not in (204, 304) and not (100 <= status < 200):
                    while True:
                        chunk = await reader.read(65536)
                        if not chunk:
                            break
                        buf += chunk
                        if len(buf) > max_body:
                            raise HttpError("too_big", f"{len(buf)} bytes")
                        if done():
                            break
            except asyncio.IncompleteReadError:
                if not buf:
                    raise HttpError("truncated", f"status {status}, body cut")
            except OSError as e:
                if not buf:
                    raise HttpError("reset", f"status {status}, body: {e}")
            return Response(status, hdrs, bytes(buf))
        finally:
            writer.close()

    try:
        return await asyncio.wait_for(run(), timeout)
    except asyncio.TimeoutError:
        raise HttpError("timeout", f"{timeout} s")


def jsonrpc(rid, method, params=None):
    m = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        m["params"] = params
    return json.dumps(m).encode()


async def aio_session(srv, timeout=10.0):
    """initialize + notifications/initialized on `srv` (an HttpServer in
    session mode); returns the Mcp-Session-Id."""
    r = await aio_request(srv.port, "POST", "/mcp", srv.headers(), jsonrpc(
        1, "initialize", {"protocolVersion": MCP_PROTOCOL, "capabilities": {},
                          "clientInfo": {"name": "mcpdrive", "version": "1"}}),
        timeout=timeout, until_id=1)
    sid = r.headers.get("mcp-session-id")
    if r.status != 200 or not sid or not r.message(1) or "result" not in r.message(1):
        raise HttpError(f"initialize_http_{r.status}", r.body[:300].decode("utf-8", "replace"))
    n = await aio_request(srv.port, "POST", "/mcp", srv.headers(sid),
                          json.dumps({"jsonrpc": "2.0",
                                      "method": "notifications/initialized"}).encode(),
                          timeout=timeout)
    if n.status not in (200, 202):
        raise HttpError(f"initialized_http_{n.status}", n.body[:300].decode("utf-8", "replace"))
    return sid


async def aio_call(srv, tool, arguments, rid=2, session=None, timeout=60.0, meta=None):
    """tools/call over HTTP; returns (Response, JSON-RPC message or None)."""
    params = {"name": tool, "arguments": arguments}
    if meta:
        params["_meta"] = meta
    r = await aio_request(srv.port, "POST", "/mcp", srv.headers(session),
                          jsonrpc(rid, "tools/call", params), timeout=timeout, until_id=rid)
    return r, r.message(rid)


def sha256_file(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def result_file(structured):
    """The local file of a stored image result (`path`, else a file:// url)."""
    p = structured.get("path")
    if p:
        return p
    url = structured.get("url") or ""
    if url.startswith("file://"):
        return urllib.request.url2pathname(url[7:])
    return None


def fake_sha_by_prompt(fake, marker):
    """sha256 of the (last non-thought) image the fake sent for the prompt
    containing `marker`, or None."""
    want = None
    for s in fake.sent():
        if marker in s.get("prompt", "") and not s.get("thought"):
            want = s["sha256"]
    return want


def random_png(raw_bytes, seed=1):
    """A valid RGB PNG of about `raw_bytes` of incompressible pixels
    (stored deflate blocks), deterministic for a seed."""
    import random
    import struct
    import zlib
    side = max(1, int((raw_bytes / 3) ** 0.5))
    rnd = random.Random(seed)
    row = side * 3
    raw = bytearray()
    for _ in range(side):
        raw += b"\x00"
        raw += rnd.randbytes(row)

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(bytes(raw), 0)) + chunk(b"IEND", b""))


MiB = 1 << 20

def log_tail(lines, n=6):
    """The last n distinct server log lines (timestamps cut), oldest first."""
    out = []
    for ln in reversed(lines[-2000:]):
        ln = ln.rstrip()
        ln = ln.split(" ", 1)[1].strip() if ln[:4].isdigit() and " " in ln else ln
        if ln and ln[:300] not in out:
            out.append(ln[:300])
        if len(out) >= n:
            break
    return out[::-1]


def mib(x):
    return round(x / MiB, 1) if x is not None else None
