#!/usr/bin/env python3
"""Speed of DirtyProfile.from_observations with the choice of a write law
on a synthetic 64 GiB guest: 16 Mi pages, 1 Mi active (half Poisson, half
periodic, rates 0.05..20 writes/s), observed over 16 back-to-back
intervals of unequal length (0.2..2 s, like the probe's rounds).

    python benchmarks/estimate_laws.py
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir))

import numpy as np  # noqa: E402

from rtmig_nova.model import DirtyProfile  # noqa: E402


def main():
    rng = np.random.default_rng(1)
    n, active, m = 1 << 24, 1 << 20, 16
    tau = rng.uniform(0.2, 2.0, m)
    starts = np.concatenate(([0.0], np.cumsum(tau)[:-1]))
    idx = np.sort(rng.choice(n, active, replace=False))
    rate = 10 ** rng.uniform(np.log10(0.05), np.log10(20.0), active)
    periodic = rng.random(active) < 0.5
    phase = rng.random(active) / rate
    obs = []
    for i in range(m):
        pois = rng.random(active) < -np.expm1(-rate * tau[i])
        per = (np.mod(phase - starts[i], 1 / rate) < tau[i]) | \
            (tau[i] * rate >= 1)
        obs.append(idx[np.where(periodic, per, pois)])
    t = time.perf_counter()
    prof = DirtyProfile.from_observations(obs, tau, total_pages=n)
    el = time.perf_counter() - t
    found = prof.page_laws[idx] == 1 if prof.page_laws is not None else \
        np.zeros(active, dtype=bool)
    print(f"from_observations: {el:.2f} s for {n} pages, {active} active, "
          f"{m} intervals; periodic found {int(found.sum())} "
          f"(of them truly periodic {int((found & periodic).sum())}, "
          f"of {int(periodic.sum())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
