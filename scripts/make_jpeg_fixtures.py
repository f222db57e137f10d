#!/usr/bin/env python3
"""Writes src/preview/testdata/*.jpg, the JPEG preview decoder's fixtures
made by libjpeg (through Pillow) rather than by jpeg-encoder: a progressive
frame with libjpeg's default scan script (the first scan is all three
components' DC terms, interleaved, with successive approximation) and an
Adobe RGB frame. The picture: four coloured quadrants, 200 x 120.
Run: pip install pillow && python3 scripts/make_jpeg_fixtures.py"""

import os

from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "preview", "testdata")
W, H = 200, 120
QUADRANTS = [(220, 30, 30), (30, 200, 40), (40, 40, 210), (240, 240, 240)]


def picture():
    im = Image.new("RGB", (W, H))
    for i, c in enumerate(QUADRANTS):
        x, y = (i % 2) * W // 2, (i // 2) * H // 2
        im.paste(c, (x, y, x + W // 2, y + H // 2))
    return im


def main():
    os.makedirs(OUT, exist_ok=True)
    im = picture()
    im.save(os.path.join(OUT, "progressive-420.jpg"), "JPEG", quality=90,
            progressive=True, subsampling=2, optimize=True)
    im.save(os.path.join(OUT, "rgb-444.jpg"), "JPEG", quality=90, subsampling=0,
            keep_rgb=True)


if __name__ == "__main__":
    main()
