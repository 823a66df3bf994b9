#!/usr/bin/env python3
"""What one reading of the closed loop costs (run on demand, not in CI).

    python benchmarks/replan.py [--repeat 9]

The loop (rtmig_nova/compute/closed_loop.py) runs in Nova's migration
monitor, which reads the job every 0.5 s: one re-planning decision
(rtmig_nova.model.replan.replan) must take a small part of that.  Timed,
on the video-server-like benchmark guests of 4, 16 and 64 GiB (each
planned for a 60 s deadline and 300 ms downtime at 95% over a 10 Gbit/s
link share), three readings half-way through the first pass:

``on plan``   progress as planned: the band check only
``slower``    the send at 60% of the plan: a re-plan that raises
``hopeless``  a dirty rate no bandwidth meets: a re-plan that aborts

Medians of --repeat calls, each a fresh decision; the plan's calibration
(its mean path from the first page) is made once, as the loop makes it.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from benchmarks.guests import GIB, video_server_rates  # noqa: E402
from rtmig_nova.model import DirtyProfile, plan, replan  # noqa: E402
from rtmig_nova.model.baselines import first_pass_bytes  # noqa: E402
from rtmig_nova.model.precopy import send_rate  # noqa: E402

LINK = 1.25e9


def readings(profile, pl):
    st = pl.prediction.settings
    rate = send_rate(pl.bandwidth, profile.page_size)
    # half-way through the first pass, as the plan has it
    t = first_pass_bytes(profile) / 2 / rate
    half = profile.memory_bytes / 2
    return {
        "on plan": replan.Observation(t, half, rate * t, 1, None, None, t),
        "slower": replan.Observation(t, half, 0.6 * rate * t, 1, None,
                                     0.6 * rate, t),
        "hopeless": replan.Observation(t, half, rate * t, 3, 1e12, None,
                                       0.5, 0.5),
    }, st


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=9)
    args = ap.parse_args(argv)
    print(f"{'guest':>6} {'reading':>9} {'decision':>8} {'median ms':>9}")
    for gib in (4, 16, 64):
        rates, zero = video_server_rates(gib * GIB)
        profile = DirtyProfile.from_rates(rates, zero_pages=zero)
        pl = plan(profile, deadline=60, max_downtime=0.3, confidence=0.95,
                  link_capacity=LINK)
        if not pl.feasible:
            print(f"{gib:>4}Gi plan infeasible: {pl.reason}")
            continue
        band = pl.prediction.total_time.quantile(0.95)
        obs, st = readings(profile, pl)
        # once per migration, as the loop does
        cal = replan.calibrate(profile, st, band)
        for name, o in obs.items():
            times, r = [], None
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                r = replan.replan(profile, st, 60.0, band, o, pl.bandwidth,
                                  LINK, margin=2.0, calibration=cal)
                times.append(time.perf_counter() - t0)
            print(f"{gib:>4}Gi {name:>9} {r.decision:>8} "
                  f"{statistics.median(times) * 1000:>9.2f}")


if __name__ == "__main__":
    main()
