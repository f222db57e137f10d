#!/usr/bin/env python3
"""SSRF by name, for real: run inside a network and mount namespace of
its own (scripts/checks/ssrf_names.sh starts it under `unshare -n -m`),
where only loopback exists and a private /etc/hosts maps test names to
every address class. The release server (stdio) must refuse each name
that resolves to a non-public address with the same short message,
without saying the address, and log the address and its class at warn;
names that resolve to public addresses pass the check (and then fail to
connect, since nothing leaves the namespace); an allowed host by name
(--allow-url-host) is fetched from the loopback. Exits non-zero on any
difference."""

import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import mcpdrive as d  # noqa: E402
from attacks import PngServer  # noqa: E402
from peak_rss import synth_png  # noqa: E402

REFUSED = {
    "meta.test": "169.254.169.254",      # cloud metadata (link-local)
    "ten.test": "10.0.0.5",              # RFC 1918
    "pod.test": "172.16.3.4",            # RFC 1918
    "home.test": "192.168.1.1",          # RFC 1918
    "cgnat.test": "100.64.1.1",          # shared address space
    "bench.test": "198.18.0.1",          # benchmarking
    "ietf.test": "192.0.0.8",            # IETF protocol assignments
    "doc.test": "203.0.113.9",           # documentation
    "loop.test": "127.0.0.1",            # loopback
    "zero.test": "0.0.0.0",              # this network
    "ula.test": "fd00::1",               # unique local
    "v6loop.test": "::1",                # loopback
    "mapped.test": "::ffff:10.0.0.1",    # IPv4-mapped private
    "sixtofour.test": "2002:a00:1::1",   # 6to4 of 10.0.0.1
    "nat64.test": "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "v6doc.test": "2001:db8::1",         # documentation
    "sitelocal.test": "fec0::1",         # deprecated site-local
}
PUBLIC = {
    "public.test": "93.184.215.14",
    "nat64pub.test": "64:ff9b::5db8:d70e",  # NAT64 of 93.184.215.14
    "v6pub.test": "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
}
GENERIC = "its host is not a public internet address"


def main():
    if os.environ.get("NBM_IN_NETNS") != "1":
        print("ssrf_names.py: run through scripts/checks/ssrf_names.sh", file=sys.stderr)
        return 2
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    hosts = tempfile.NamedTemporaryFile("w", suffix=".hosts", delete=False)
    hosts.write("127.0.0.1 localhost\n::1 localhost\n127.0.0.1 local.test\n")
    for name, ip in {**REFUSED, **PUBLIC}.items():
        hosts.write(f"{ip} {name}\n")
    hosts.close()
    subprocess.run(["mount", "--bind", hosts.name, "/etc/hosts"], check=True)

    png = synth_png(40_000)
    pngs = PngServer(png)
    fake = d.FakeGemini()
    out = tempfile.mkdtemp()
    srv = d.Server(fake, out_dir=out, env={
        "LOG_LEVEL": "warn",
        "NANO_BANANA_ALLOW_URL_HOSTS": f"local.test:{pngs.port}",
    })
    failures = []
    try:
        def edit(url):
            return d.result_of(srv.call("edit_image", {"imagePath": url, "prompt": "x fake:size=30000"},
                                        timeout=60))

        for name, ip in REFUSED.items():
            ok, msg = edit(f"https://{name}/img.png")
            msg = str(msg)
            if ok or GENERIC not in msg:
                failures.append(f"{name} ({ip}) was not refused as non-public: {msg}")
            elif ip in msg:
                failures.append(f"{name}: the refusal names the address: {msg}")
        for name, ip in PUBLIC.items():
            ok, msg = edit(f"https://{name}/img.png")
            if ok or GENERIC in str(msg):
                failures.append(f"{name} ({ip}) is public and must pass the address check: {msg}")
        ok, res = edit(f"http://local.test:{pngs.port}/img.png")
        if not ok:
            failures.append(f"the allowed host by name was not fetched: {res}")
    finally:
        log = srv.stop()
        fake.stop()
        pngs.stop()
        subprocess.run(["umount", "/etc/hosts"], check=False)
        os.unlink(hosts.name)
    # The operator's log says what the caller is not told: each refused
    # name, with the address it resolved to.
    refused_lines = [line for line in log.splitlines() if "input URL refused" in line]
    for name in REFUSED:
        if not any(f"host={name}" in line and "ip=" in line for line in refused_lines):
            failures.append(f"no warn line names {name} and its address")
    if failures:
        for f in failures:
            print("FAIL", f)
        return 1
    print(f"ssrf_names: {len(REFUSED)} non-public names refused with one message, "
          f"{len(PUBLIC)} public names pass the check, the allowed host by name is fetched")
    return 0


if __name__ == "__main__":
    sys.exit(main())
