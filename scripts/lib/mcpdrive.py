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
