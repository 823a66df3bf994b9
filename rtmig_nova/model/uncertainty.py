"""Uncertainty beyond the write processes' own randomness.

A model's prediction given a profile carries only the variation of the
writes it describes.  A real migration also differs from it through two
factors that hold for its whole length, so they do not average out over
its rounds:

* the **write intensity** ``s``: the guest writes faster or slower during
  the migration than the profile's average (rates estimated from a few
  probe windows, a workload whose intensity wanders).  Its spread is read
  from the profile's own record of what each probe interval saw
  (:func:`write_scale_sd`);
* the host's **send efficiency** ``e``: the bytes QEMU sends per second vary
  from migration to migration around the model's send rate (a host
  calibration, ``MigrationSettings.send_rate_sd``).

Both are taken lognormal and independent: log s ~ N(0, sd_s^2), log e ~
N(0, sd_e^2).  Scaling the write rates and the send rate by one factor c
runs the same pre-copy 1/c times as fast, so the outcome depends on (s, e)
through the *load* rho = s / e, which decides convergence, and a time
scale 1/s: T(s, e) = T(1, 1/rho) / s (QEMU's 100 ms check and the
downtime threshold do not scale; their share of the change is of the
order of the factors' spread, a few percent).  :func:`mixed` runs the model
at a few loads (Gauss-Hermite nodes in log rho), each with the send
efficiency 1 / rho, and divides each node's times by s given rho: its
conditional median scales them, its conditional spread widens every
component.  Near the convergence cliff the nodes fall on both sides and
P(converge) becomes a weighted mix of theirs.
"""

import dataclasses
import math

import numpy as np

from rtmig_nova.model.distribution import Distribution

# Gauss-Hermite (probabilists') nodes and weights for a standard normal:
# exact for polynomials of degree 5, and three model runs.
NODES = (-math.sqrt(3.0), 0.0, math.sqrt(3.0))
WEIGHTS = (1.0 / 6.0, 2.0 / 3.0, 1.0 / 6.0)

# Below this spread (log units) a factor changes no prediction visibly.
NEGLIGIBLE_SD = 1e-4
# A surrogate (see mixed) stands in for the outer nodes only where the
# model's middle node leaves less than this unconverged and the
# surrogate's times are within this factor of each other.
SURE_DEFECT = 1e-9
# The load's spread at most: the outer nodes then stay within a factor 5
# of the middle one (inside bounds.SEND_EFFICIENCY for an efficiency of 1).
MAX_SD_RHO = math.log(5.0) / math.sqrt(3.0)
SURROGATE_SPAN = 1.5


def _intervals(profile):
    """(interval lengths s, dirty pages) the profile's capture recorded,
    as float arrays, or None (see DirtyProfile.from_observations)."""
    meta = profile.metadata
    tau, dirty = meta.get("observed_interval_s"), \
        meta.get("observed_dirty_pages")
    if tau is None or dirty is None:
        return None
    return np.asarray(tau, dtype=np.float64), \
        np.asarray(dirty, dtype=np.float64)


def _log_scale(profile, tau, dirty):
    """Per interval: log of the factor on every write rate that makes the
    profile dirty ``dirty`` pages in ``tau`` seconds, and the variance of
    that log from the intervals' own Bernoulli sampling."""
    active = profile.active_pages
    target = np.clip(dirty, 0.5, max(active - 0.5, 0.5))
    lo = np.full(tau.size, -30.0)
    hi = np.full(tau.size, 30.0)
    for _ in range(80):             # bisection in log s, to ~1e-22
        mid = 0.5 * (lo + hi)
        below = np.array([profile.dirty_pages(math.exp(m) * t)
                          for m, t in zip(mid, tau)]) < target
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    log_s = 0.5 * (lo + hi)
    var = np.empty(tau.size)
    for i, (ls, t) in enumerate(zip(log_s, tau)):
        p = profile.dirty_probabilities(math.exp(ls) * t)
        sampling = float(np.dot(profile.counts, p * (1.0 - p)))
        # d(expected dirty)/d(log s), numerically: the law's own slope.
        h = 1e-4
        slope = (profile.dirty_pages(math.exp(ls + h) * t) -
                 profile.dirty_pages(math.exp(ls - h) * t)) / (2 * h)
        var[i] = sampling / slope ** 2 if slope > 0 else 0.0
    return log_s, var


def write_scale_sd(profile):
    """Standard deviation of log(write intensity during a migration / the
    profile's rates), from the dirty pages each probe interval saw (in
    capture order): the error of the profile's mean intensity from
    finitely many intervals, plus the drift of the intensity between
    stretches of the capture beyond what the intervals' own scatter
    explains, for a migration that is one more such stretch.  Scatter from
    interval to interval alone (a frame ring caught at two or three frames
    per window) averages out over a migration's rounds and is not counted
    as drift.  Only intervals that say something about a factor on the
    rates count: not saturated (the expected dirty pages must move by at
    least half as much as the factor), at least 10 ms, not empty.
    0 when the profile has no record of its intervals (a histogram, a
    synthetic profile) or fewer than :data:`MIN_INTERVALS` count."""
    cache = profile.__dict__.setdefault("_uncertainty_cache", {})
    if "write_scale_sd" not in cache:
        cache["write_scale_sd"] = _write_scale_sd(profile)
    return cache["write_scale_sd"]


MIN_INTERVALS = 4      # intervals below which a spread is not estimated
BLOCKS = 4             # stretches of the capture compared for drift
MIN_ELASTICITY = 0.5   # d log(expected dirty) / d log(scale), to count


def _write_scale_sd(profile):
    rec = _intervals(profile)
    if rec is None or profile.active_pages == 0:
        return 0.0
    tau, dirty = rec
    h = 1e-3
    elastic = np.array([
        (math.log(max(profile.dirty_pages(t * math.exp(h)), 1e-300)) -
         math.log(max(profile.dirty_pages(t * math.exp(-h)), 1e-300)))
        / (2 * h) for t in tau])
    use = (tau >= 0.01) & (dirty > 0) & (elastic >= MIN_ELASTICITY)
    if use.sum() < MIN_INTERVALS:
        return 0.0
    log_s, _ = _log_scale(profile, tau[use], dirty[use])
    m = log_s.size
    mean = float(log_s.mean())
    var = float(log_s.var(ddof=1))
    # Drift: the capture in BLOCKS consecutive stretches; their means vary
    # by var / size if the intensity is steady.
    nb = min(BLOCKS, m // 2)
    blocks = np.array_split(log_s, nb)
    size = m / nb
    drift = 0.0
    if nb > 1:
        between = float(np.var([b.mean() for b in blocks], ddof=1))
        drift = max(between - var / size, 0.0)
    # A mean off 0 (the per-page rates and the intervals' totals disagree)
    # is an error of the profile too: counted, not corrected.
    total = drift * (1.0 + 1.0 / nb) + var / m + mean * mean
    return min(math.sqrt(total), 1.0)


def spreads(profile, settings):
    """(sd of log write scale, sd of log send efficiency) of a prediction
    of ``profile`` under ``settings``."""
    sd_s = settings.write_scale_sd
    if sd_s is None:
        sd_s = write_scale_sd(profile)
    return float(sd_s), float(settings.send_rate_sd)


def _stretched(dist, factor, rel_sd):
    """``dist`` with every component's value times ``factor`` and a
    relative spread ``rel_sd`` (a lognormal factor, to first order) added
    to it."""
    means = dist.means * factor
    sds = np.hypot(dist.sds * factor, means * rel_sd)
    return means, sds


def node_efficiencies(sd_s, sd_e, send_efficiency=1.0):
    """The send efficiencies the nodes run at (see :func:`mixed`)."""
    sd_rho = min(math.hypot(sd_s, sd_e), MAX_SD_RHO)
    return [send_efficiency * math.exp(-sd_rho * z) for z in NODES]


def quantile_shift(times, sd_s, sd_e, confidence):
    """log(the mixture's ``confidence`` quantile of the total time / the
    middle node's time) from the nodes' pre-copy times ``times`` (s, e.g.
    a mean recursion's at :func:`node_efficiencies`): what the planner's
    first guess adds for the spread.  The mixture is :func:`mixed`'s, each
    node a point at its time: its quantile is solved for, as the model's
    own mixture would give it (a lognormal approximation of the whole
    mixture put the first guess a bandwidth step off in half the planner
    benchmark's deadlines)."""
    from scipy import optimize
    from scipy import special
    var_rho = sd_s * sd_s + sd_e * sd_e
    if var_rho <= 0:
        return 0.0
    sd_rho = math.sqrt(var_rho)
    if sd_rho > MAX_SD_RHO:             # as mixed() shrinks them
        sd_s, sd_e = sd_s * MAX_SD_RHO / sd_rho, sd_e * MAX_SD_RHO / sd_rho
        var_rho, sd_rho = MAX_SD_RHO ** 2, MAX_SD_RHO
    b = sd_s * sd_s / var_rho
    c = math.sqrt((sd_s * sd_e) ** 2 / var_rho)
    mid = float(times[NODES.index(0.0)])
    # each node's time times its factor, relative to the middle's, with
    # _stretched's relative spread c (a floor keeps the cdf a step's width
    # when c is 0)
    means = np.array([t / mid * math.exp(-b * sd_rho * z)
                      for t, z in zip(times, NODES)])
    sds = np.maximum(means * c, 1e-9)
    weights = np.array(WEIGHTS)

    def excess(x):
        return float(weights @ special.ndtr((x - means) / sds)) - confidence

    lo = float((means - 8 * sds).min())
    hi = float((means + 8 * sds).max())
    q = optimize.brentq(excess, lo, hi, xtol=1e-9)
    return math.log(q) if q > 0 else 0.0


def _time_scaled(pred, ratio):
    """``pred`` with its total time ``ratio`` times as long."""
    d = pred.total_time
    hi = d.hi * ratio if math.isfinite(d.hi) else d.hi
    lo = d.lo * ratio if math.isfinite(d.lo) else d.lo
    total = Distribution(d.means * ratio, d.sds * ratio, d.weights,
                         d.defect, support=(lo, hi))
    return dataclasses.replace(pred, total_time=total)


def mixed(predict, profile, settings, sd_s, sd_e, horizon=None,
          surrogate=None):
    """The prediction of ``profile`` under ``settings`` with the write
    scale and the send efficiency uncertain (log-sds ``sd_s``, ``sd_e``;
    see the module doc).  ``predict(profile, settings, horizon)`` is a
    model's predict; the result is a Prediction of the same model whose
    distributions mix the nodes' (weights: the Gauss-Hermite ones).

    ``surrogate(efficiencies)``, if given, is a cheap mean pre-copy time
    (s, inf: no convergence) at these send efficiencies (the planner's mean
    recursion): where it and the model at the middle node say the
    migration surely converges at every node, an outer node is the middle
    one's prediction with its times scaled by the surrogate's ratio, not a
    model run of its own.  Near the convergence cliff every node is run."""
    var_rho = sd_s * sd_s + sd_e * sd_e
    sd_rho = math.sqrt(var_rho)
    if sd_rho > MAX_SD_RHO:             # both spreads shrunk alike
        sd_s, sd_e = sd_s * MAX_SD_RHO / sd_rho, sd_e * MAX_SD_RHO / sd_rho
        var_rho, sd_rho = MAX_SD_RHO ** 2, MAX_SD_RHO
    # log s given log rho = l: normal, mean b l, variance c2.
    b = sd_s * sd_s / var_rho
    c2 = (sd_s * sd_e) ** 2 / var_rho
    c = math.sqrt(c2)
    effs = node_efficiencies(sd_s, sd_e, settings.send_efficiency)
    factors = [math.exp(-b * sd_rho * z) for z in NODES]

    def run(i):
        node = dataclasses.replace(settings, send_efficiency=effs[i],
                                   write_scale_sd=0.0, send_rate_sd=0.0)
        h = None if horizon is None else horizon / factors[i]
        return predict(profile, node, h)

    mid = NODES.index(0.0)
    preds = [None] * len(NODES)
    preds[mid] = run(mid)
    times = None
    if surrogate is not None and \
            preds[mid].total_time.defect < SURE_DEFECT:
        times = np.asarray(surrogate(effs), dtype=np.float64)
        # Finite everywhere and not far apart: away from the cliff, where
        # the mean recursion's ratio is the model's (a stalling mean is
        # finite but long: not trusted).
        if not (np.isfinite(times).all() and (times > 0).all() and
                times.max() <= SURROGATE_SPAN * times.min()):
            times = None
    for i in range(len(NODES)):
        if preds[i] is None:
            preds[i] = run(i) if times is None else \
                _time_scaled(preds[mid], times[i] / times[mid])
    parts = list(zip(WEIGHTS, factors, preds))
    first = preds[mid]

    def mix(attr, scale_time):
        means, sds, weights, defect = [], [], [], 0.0
        for w, factor, pred in parts:
            d = getattr(pred, attr)
            if scale_time:
                m, s = _stretched(d, factor, c)
            else:
                m, s = d.means, d.sds
            means.append(m)
            sds.append(s)
            weights.append(w * d.weights)
            defect += w * d.defect
        los = [getattr(p, attr).lo for _, _, p in parts]
        his = [getattr(p, attr).hi for _, _, p in parts]
        lo, hi = min(los), max(his)
        if scale_time:
            lo = min(lo * min(f for _, f, _ in parts) * math.exp(-4 * c),
                     lo) if math.isfinite(lo) else lo
            if math.isfinite(hi):
                hi = hi * max(f for _, f, _ in parts) * math.exp(4 * c)
        return Distribution(np.concatenate(means), np.concatenate(sds),
                            np.concatenate(weights), defect,
                            support=(lo, hi))

    return dataclasses.replace(
        first, total_time=mix("total_time", True),
        downtime=mix("downtime", False), bytes_sent=mix("bytes_sent", False),
        rounds=mix("rounds", False), settings=settings)
