#!/usr/bin/env python3
"""The preview's cost (README, "Preview"): a 4K PNG and a 4K JPEG stream
through the release binary over stdio into a local folder, once with
NANO_BANANA_PREVIEW=false and once with true, each in a server process of
its own. Checks that the PNG's preview is a JPEG of at most 256 px on the
long side and 48 KiB, the same for the JPEG's, that the stored file's
sha256 is what the fake Gemini sent, and that the peak RSS (VmHWM) with
the preview on is at most --max-extra-mib above the same call without it.
Prints one JSON line per run and a Markdown row per format; exits
non-zero on any miss."""

import argparse
import base64
import json
import os
import struct
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import mcpdrive as d  # noqa: E402

# Sizes for which the fake's synthetic images are 4K: 5504 px wide. Its
# PNG is uncompressed noise, the worst case for a row decoder; its JPEG
# (`fake:picture`) a grainy picture, 4:2:0 with restart markers, whose
# megabytes of entropy-coded data the DC decoder must read through.
SIZES = {"png": 51_100_000, "jpeg": 8_520_000}
EXTRA = {"png": "", "jpeg": " fake:picture"}


def jpeg_size(b):
    """(width, height) from a JPEG's SOF segment."""
    i = 2
    while i + 9 < len(b):
        if b[i] != 0xFF:
            return None
        marker, length = b[i + 1], struct.unpack(">H", b[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            h, w = struct.unpack(">HH", b[i + 5:i + 9])
            return w, h
        i += 2 + length
    return None


def run(fmt, preview):
    fake = d.FakeGemini()
    tmp = tempfile.mkdtemp()
    srv = d.Server(fake, out_dir=tmp, env={"NANO_BANANA_PREVIEW": "true" if preview else "false"})
    try:
        resp = srv.call("generate_image",
                        {"prompt": f"a 4K one fake:format={fmt} fake:size={SIZES[fmt]}{EXTRA[fmt]}"})
        ok, res = d.result_of(resp)
        if not ok:
            return {"format": fmt, "preview": preview, "failures": [f"call failed: {res}"]}
        hwm = srv.status()["hwm"]
        sent = fake.sent()[-1]
        stored = d.sha256_url(res["url"])
        blocks = [c for c in resp["result"]["content"] if c.get("type") == "image"]
        out = {"format": fmt, "preview": preview, "width": res.get("width"),
               "height": res.get("height"), "bytes": res.get("bytes"),
               "peak_rss_mib": round(hwm / 2**20, 1),
               "sha256_matches": stored == sent["sha256"], "failures": []}
        if not out["sha256_matches"]:
            out["failures"].append("stored sha256 differs from what Gemini sent")
        if preview:
            if len(blocks) != 1:
                out["failures"].append(f"{len(blocks)} image blocks, want 1")
            else:
                jpeg = base64.b64decode(blocks[0]["data"])
                size = jpeg_size(jpeg)
                out.update(preview_bytes=len(jpeg), preview_size=size,
                           preview_mime=blocks[0].get("mimeType"))
                if blocks[0].get("mimeType") != "image/jpeg" or not size:
                    out["failures"].append("the preview is not a JPEG")
                elif max(size) > 256:
                    out["failures"].append(f"preview {size} is over 256 px")
                if len(jpeg) > 48 << 10:
                    out["failures"].append(f"preview is {len(jpeg)} bytes, over 48 KiB")
        elif blocks:
            out["failures"].append("an image block without the preview on")
        return out
    finally:
        srv.stop()
        fake.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-extra-mib", type=float, default=4.0)
    args = ap.parse_args()
    failed = False
    rows = []
    for fmt in ("png", "jpeg"):
        off = run(fmt, False)
        on = run(fmt, True)
        for r in (off, on):
            print(json.dumps(r))
        extra = on.get("peak_rss_mib", 0) - off.get("peak_rss_mib", 0)
        misses = off["failures"] + on["failures"]
        if extra > args.max_extra_mib:
            misses.append(f"preview adds {extra:.1f} MiB, over {args.max_extra_mib}")
        failed |= bool(misses)
        rows.append(
            f"| 4K {fmt.upper()} ({on.get('width')}x{on.get('height')}, "
            f"{(on.get('bytes') or 0) / 2**20:.1f} MiB) | {off.get('peak_rss_mib')} | "
            f"{on.get('peak_rss_mib')} | {extra:+.1f} | "
            + f"{on.get('preview_size')} {(on.get('preview_bytes') or 0) / 1024:.1f} KiB | "
            + f"{'yes' if on.get('sha256_matches') and off.get('sha256_matches') else 'NO'} |"
            + (f" MISSED: {'; '.join(misses)}" if misses else ""))
    for r in rows:
        print(r)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
