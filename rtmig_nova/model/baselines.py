"""Baseline predictors that know only one average dirty rate.

Both see the guest as its first-pass volume (bytes on the wire, zero pages
as QEMU sends them) and one aggregate dirty rate: the distinct pages written
per second over a 1 s window, as QEMU's ``dirty-pages-rate`` and libvirt's
dirty-rate calculation (1 s by default) report it.  They are deterministic:
their distributions are point masses.
"""

import math

from rtmig_nova.model.distribution import Distribution
from rtmig_nova.model.precopy import PAGE_HEADER_BYTES, ZERO_PAGE_BYTES
from rtmig_nova.model.prediction import Prediction

RATE_WINDOW = 1.0   # seconds over which the average dirty rate is measured


def first_pass_bytes(profile):
    """Bytes QEMU puts on the wire for a pass over all of RAM."""
    full = profile.total_pages - profile.zero_pages
    return full * (profile.page_size + PAGE_HEADER_BYTES) + \
        profile.zero_pages * ZERO_PAGE_BYTES


def _points(settings, profile, name, total, downtime, nbytes, rounds):
    return Prediction(
        total_time=Distribution.point(total),
        downtime=Distribution.point(downtime),
        bytes_sent=Distribution.point(nbytes),
        rounds=Distribution.point(rounds),
        settings=settings, model=name, coarse=profile.coarse)


def geometric(profile, settings):
    """Liu et al. (HPDC 2011) style geometric model.

    Round i sends V r^i bytes, r = dirty rate / bandwidth; the migration
    stops after the first round n with V r^n <= bandwidth x downtime-limit
    (or after ``max_rounds``): total time V (1 - r^(n+1)) / ((1 - r) B),
    downtime V r^n / B.
    """
    bw, limit = settings.bandwidth, settings.downtime_limit
    v = float(first_pass_bytes(profile))
    r = profile.dirty_rate(RATE_WINDOW) / bw
    threshold = bw * limit
    so = settings.stop_overhead
    if v <= threshold:
        n = 0
    elif r <= 0:
        n = 1
        v_n = 0.0
    elif r >= 1:
        return _points(settings, profile, "geometric", math.inf, math.inf,
                       math.inf, math.inf)
    else:
        n = math.ceil(math.log(threshold / v) / math.log(r))
        if n > settings.max_rounds:
            return _points(settings, profile, "geometric", math.inf,
                           math.inf, math.inf, math.inf)
    if n == 0:
        stop = v / settings.stop_rate + so
        return _points(settings, profile, "geometric", stop, stop, v, 1)
    v_n = v * r ** n if r > 0 else 0.0
    sent = v * (1 - r ** (n + 1)) / (1 - r) if r > 0 else v
    # The last round goes at the stop rate (QEMU lifts its rate limit).
    stop = settings.stop_rate
    return _points(settings, profile, "geometric",
                   (sent - v_n) / bw + v_n / stop + so, v_n / stop + so,
                   sent, n)


def qemu_estimate(profile, settings):
    """QEMU's own estimate: expected-downtime = remaining / bandwidth.

    Before the migration, the remaining bytes after the first pass are the
    dirty rate times the first pass's length; QEMU would stop there if the
    estimate is within the downtime limit.  Beyond that it has no model of
    the rounds, so it predicts no convergence.
    """
    bw = settings.bandwidth
    v = float(first_pass_bytes(profile))
    first = v / bw
    remaining = min(profile.dirty_rate(RATE_WINDOW) * first,
                    profile.memory_bytes)
    downtime = remaining / bw
    if downtime > settings.downtime_limit:
        return _points(settings, profile, "qemu-estimate", math.inf,
                       math.inf, math.inf, math.inf)
    so = settings.stop_overhead
    return _points(settings, profile, "qemu-estimate",
                   first + downtime + so, downtime + so, v + remaining, 1)
