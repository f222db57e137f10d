#!/usr/bin/env python3
"""Peak RSS of the server for one image: starts the fake Gemini, Azurite
(unless AZURITE_BLOB_ENDPOINT is set) and the release binary, generates one
image of the given size (or edits one, with --edit), checks the stored
blob's sha256 against what the fake sent, and prints the server's VmHWM.
Exits non-zero if the sha256 differs or the peak exceeds --max-mib."""

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import mcpdrive as d  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=float, default=30)
    ap.add_argument("--storage", choices=["azure", "local"], default="azure")
    ap.add_argument("--edit", action="store_true", help="edit a local input image of that size")
    ap.add_argument("--max-mib", type=float, default=48)
    args = ap.parse_args()
    size = int(args.size_mib * (1 << 20))
    fake = d.FakeGemini()
    az = d.Azurite() if args.storage == "azure" else None
    tmp = tempfile.mkdtemp()
    # Over stdio edit inputs default to the working directory: allow tmp.
    srv = d.Server(fake, out_dir=tmp, azure=az, container="peakrss",
                   env={"NANO_BANANA_ALLOWED_DIRS": tmp})
    try:
        base = srv.status()
        if args.edit:
            # A 30 MiB input made by the fake's own image synthesiser.
            inp = os.path.join(tmp, "input.png")
            with open(inp, "wb") as f:
                f.write(synth_png(size))
            resp = srv.call("edit_image", {"imagePath": inp,
                                           "prompt": "make it pink fake:size=1MiB"})
        else:
            resp = srv.call("generate_image", {"prompt": f"a big one fake:size={size}"})
        ok, res = d.result_of(resp)
        if not ok:
            print("call failed:", res)
            return 1
        peak = srv.status()["hwm"]
        sent = fake.sent()[-1]
        got = d.sha256_url(res["url"])
        if args.edit:
            import hashlib
            with open(inp, "rb") as f:
                want_in = hashlib.sha256(f.read()).hexdigest()
            with __import__("urllib.request").request.urlopen(fake.url + "/_fake/requests") as r:
                reqs = json.load(r)
            got_in = reqs[-1]["inputs"][0]["sha256"]
            if got_in != want_in:
                print("input mismatch: Gemini received", got_in, "expected", want_in)
                return 1
        out = {"size_mib": args.size_mib, "storage": args.storage, "edit": args.edit,
               "baseline_rss_mib": round(base["rss"] / 2**20, 1),
               "peak_rss_mib": round(peak / 2**20, 1),
               "sha256_match": got == sent["sha256"]}
        print(json.dumps(out))
        if got != sent["sha256"]:
            return 1
        if peak > args.max_mib * 2**20:
            print(f"peak RSS {peak / 2**20:.1f} MiB is over {args.max_mib} MiB")
            return 1
        return 0
    finally:
        srv.stop()
        fake.stop()
        if az:
            az.stop()


def synth_png(size):
    """A valid PNG of about `size` bytes (stored deflate blocks), random content."""
    import struct
    import zlib
    w = 1024
    row = 1 + 3 * w
    h = max(1, size // row)
    rnd = os.urandom(row * h)
    raw = bytearray(rnd)
    for y in range(h):
        raw[y * row] = 0
    comp = zlib.compress(bytes(raw), 0)

    def chunk(t, data):
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xffffffff)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", comp) + chunk(b"IEND", b""))


if __name__ == "__main__":
    sys.exit(main())
