#!/usr/bin/env python3
"""Write the embedded default profile, rtmig_nova/data/default-profile.json.

Synthetic until a real capture replaces it (the capture tool arrives with the
testbed): a 4 GiB guest running a video server like the paper's VLC case.
  * a ring of 8 frame buffers of 1920x1080 YUV 4:2:0 (3 MiB each), one frame
    written every 40 ms, so each ring page is written 25/8 times a second;
  * 64 KiB of per-frame metadata written every frame (25 writes/s) and a
    256 KiB hot set of stacks and counters (200 writes/s);
  * 256 MiB of kernel and page cache written rarely (lognormal rates around
    0.01 writes/s);
  * the rest never written, half of it zero pages.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))
from rtmig_nova.model import DirtyProfile  # noqa: E402

PAGE = 4096
MIB = 2 ** 20


def build(seed=20091):
    rng = np.random.default_rng(seed)
    pages = 4 * 1024 * MIB // PAGE
    rates = np.zeros(pages)
    frame = 1920 * 1080 * 3 // 2
    ring = 8 * -(-frame // PAGE)
    pos = 0
    rates[pos:pos + ring] = 25.0 / 8
    pos += ring
    rates[pos:pos + 64 * 1024 // PAGE] = 25.0
    pos += 64 * 1024 // PAGE
    rates[pos:pos + 256 * 1024 // PAGE] = 200.0
    pos += 256 * 1024 // PAGE
    bg = 256 * MIB // PAGE
    rates[pos:pos + bg] = np.exp(rng.normal(np.log(0.01), 1.5, bg))
    pos += bg
    idle = pages - pos
    return DirtyProfile.from_rates(
        rates, PAGE, zero_pages=idle // 2,
        metadata={"source": "synthetic", "synthetic": True,
                  "name": "default",
                  "description": "4 GiB video-server-like guest (25 fps, "
                                 "8-frame 1080p ring); synthetic, not a "
                                 "capture",
                  "generator": "tools/make_default_profile.py"})


if __name__ == "__main__":
    out = os.path.join(os.path.dirname(__file__), os.pardir, "rtmig_nova",
                       "data", "default-profile.json")
    build().save(out)
    print(out)
