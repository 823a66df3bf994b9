"""Synthetic guests for the benchmarks (per-page rates, address order)."""

import numpy as np

PAGE = 4096
GIB = 2 ** 30


def video_server_rates(memory_bytes, seed=0):
    """Per-page write rates (writes/s) of a video-server-like guest of
    ``memory_bytes``: a 1080p 8-frame ring at 25 fps, hot metadata, 6% of
    memory as lognormal background (kernel, page cache), the rest idle.
    Returns (rates, zero_pages)."""
    rng = np.random.default_rng(seed)
    pages = memory_bytes // PAGE
    rates = np.zeros(pages)
    ring = 8 * -(-(1920 * 1080 * 3 // 2) // PAGE)
    rates[:ring] = 25.0 / 8
    rates[ring:ring + 64] = 200.0
    bg = pages * 6 // 100
    idx = rng.choice(np.arange(ring + 64, pages), bg, replace=False)
    rates[idx] = np.exp(rng.normal(np.log(0.01), 1.5, bg))
    idle = pages - ring - 64 - bg
    return rates, idle // 2
