"""Guests and bandwidths for validating the analytic model against the
page-level simulator (shared by the tests and benchmarks/validate_model.py).

Four 32 MiB guests whose page write rates span four orders of magnitude,
each at four bandwidths from barely converging to ten times the dirty rate.
"""

import numpy as np

from rtmig_nova.model import DirtyProfile, MigrationSettings
from rtmig_nova.model import analytic

PAGES = 8192            # 32 MiB of 4 KiB pages
DOWNTIME_LIMIT = 0.05   # seconds
MAX_ROUNDS = 60


def guests():
    rng = np.random.default_rng(7)
    out = {}
    r = np.zeros(PAGES)
    r[rng.choice(PAGES, 1500, replace=False)] = 5.0
    out["uniform-5/s"] = DirtyProfile.from_rates(r, zero_pages=2000)
    r = np.zeros(PAGES)
    idx = rng.choice(PAGES, 3000, replace=False)
    r[idx] = 10 ** rng.uniform(-2, 2, idx.size)
    out["log-uniform-0.01..100/s"] = DirtyProfile.from_rates(r,
                                                             zero_pages=1000)
    r = np.zeros(PAGES)
    idx = rng.choice(PAGES, 4000, replace=False)
    zipf = 1.0 / np.arange(1, idx.size + 1) ** 1.1
    r[idx] = 400 * zipf / zipf[0]
    out["zipf-400/s"] = DirtyProfile.from_rates(r)
    r = np.zeros(PAGES)
    hot = rng.choice(PAGES, 200, replace=False)
    r[hot] = 200.0
    cold = rng.choice(np.setdiff1d(np.arange(PAGES), hot), 3000,
                      replace=False)
    r[cold] = 0.05
    out["hot-200/s+cold"] = DirtyProfile.from_rates(r, zero_pages=3000)
    return out


def periodic_guests():
    """Guests with periodic writers (:mod:`rtmig_nova.model.laws`): a ring
    of 2000 pages rewritten every 4 s (the testbed's ``ring`` workload at
    small scale) beside hot Poisson pages, and a log-uniform mix where half
    the active pages are periodic."""
    rng = np.random.default_rng(9)
    out = {}
    r = np.zeros(PAGES)
    law = np.zeros(PAGES, dtype=np.int8)
    ring = rng.choice(PAGES, 2000, replace=False)
    r[ring], law[ring] = 0.25, 1
    rest = np.setdiff1d(np.arange(PAGES), ring)
    r[rng.choice(rest, 30, replace=False)] = 20.0
    out["ring-4s+hot"] = DirtyProfile.from_rates(r, laws=law)
    r = np.zeros(PAGES)
    law = np.zeros(PAGES, dtype=np.int8)
    idx = rng.choice(PAGES, 3000, replace=False)
    r[idx] = 10 ** rng.uniform(-2, 1.5, idx.size)
    law[idx[::2]] = 1
    out["log-uniform-half-periodic"] = DirtyProfile.from_rates(
        r, zero_pages=1000, laws=law)
    return out


def barely_converging_bandwidth(profile, **settings):
    """Least bandwidth (bytes/s, within 0.1%) at which the analytic model
    converges with probability 0.999 within MAX_ROUNDS rounds."""
    lo, hi = 1e5, 1e10
    while hi / lo > 1.001:
        mid = np.sqrt(lo * hi)
        pred = analytic.predict(profile, MigrationSettings(
            mid, DOWNTIME_LIMIT, max_rounds=MAX_ROUNDS, **settings))
        if pred.converges > 0.999:
            hi = mid
        else:
            lo = mid
    return hi


def cases(profiles=None, **settings):
    """(name, profile, MigrationSettings) for every guest (``profiles``:
    {name: profile}, default :func:`guests`) x bandwidth."""
    out = []
    for name, prof in (guests() if profiles is None else profiles).items():
        dirty = prof.dirty_rate(0.1)
        b0 = barely_converging_bandwidth(prof, **settings)
        for label, bw in (("barely", 1.05 * b0),
                          ("2x", max(2 * dirty, 1.5 * b0)),
                          ("4x", max(4 * dirty, 2.5 * b0)),
                          ("10x", 10 * dirty)):
            out.append((f"{name}@{label}", prof, MigrationSettings(
                bw, DOWNTIME_LIMIT, max_rounds=MAX_ROUNDS, **settings)))
    return out


def mc_interval(samples, q, z=3.0):
    """Distribution-free confidence interval of the q-quantile from an
    i.i.d. sample (order statistics, normal approximation to the binomial,
    z standard errors)."""
    s = np.sort(np.asarray(samples))
    n = s.size
    half = z * np.sqrt(n * q * (1 - q))
    lo = int(np.clip(np.floor(n * q - half) - 1, 0, n - 1))
    hi = int(np.clip(np.ceil(n * q + half), 0, n - 1))
    return s[lo], s[hi]


def agreement(analytic_pred, mc_pred, rel=0.03, abs_downtime=1e-3):
    """How the analytic prediction compares with the simulation.

    The target: mean and p95 of total time within ``rel`` and of downtime
    within ``rel`` or ``abs_downtime``.  The simulator's own estimates are
    random; an analytic value counts as agreeing when it is within the
    tolerance of the simulator's confidence interval (3 standard errors for
    the mean, an order-statistics interval for the p95).  Returns a dict of
    failures (empty when all agree) and the raw numbers.
    """
    out, fails = {}, {}
    for key in ("total_time", "downtime"):
        a = getattr(analytic_pred, key)
        samples = getattr(mc_pred, key).means
        n = samples.size
        tol = (lambda v: max(rel * abs(v), abs_downtime)) \
            if key == "downtime" else (lambda v: rel * abs(v))
        m = samples.mean()
        se = samples.std(ddof=1) / np.sqrt(n) if n > 1 else 0.0
        am = a.mean
        if not (m - 3 * se - tol(m) <= am <= m + 3 * se + tol(m)):
            fails[f"{key}.mean"] = (am, m)
        lo, hi = mc_interval(samples, 0.95)
        aq = a.quantile(0.95)
        if not (lo - tol(lo) <= aq <= hi + tol(hi)):
            fails[f"{key}.p95"] = (aq, (lo, hi))
        out[key] = {"analytic_mean": am, "mc_mean": m,
                    "analytic_p95": aq, "mc_p95": float(np.quantile(
                        samples, 0.95))}
    return fails, out
