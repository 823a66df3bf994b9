"""Write laws: how a page's writes are spread in time.

A page has a write rate (writes/s) and a law saying how the writes fall:

``poisson``
    independent writes at random instants (a Poisson process):
    P(written in an interval of d seconds) = 1 - exp(-rate d).
``periodic``
    one write every P = 1/rate seconds at a phase uniform in [0, P) (a log
    ring, a write-ahead log, a frame ring): P(written in d) = min(rate d, 1).

This module is the one copy of the law arithmetic: the dirty probability
over an interval, its mean over a stretch of send times (the cleared dirty
log), the per-law maximum-likelihood rate of a page from interval
observations, and the choice of a law for a group of pages.  Pure numpy.
"""

import math

import numpy as np

POISSON, PERIODIC = "poisson", "periodic"
NAMES = (POISSON, PERIODIC)     # law code i is NAMES[i]
POISSON_CODE, PERIODIC_CODE = 0, 1

# Pages are grouped for the choice of a law by their Poisson rate on log
# bins of 2**-GROUP_BITS octave: the analytic model's bins
# (analytic.COMPUTE_BITS), so a group is what the model computes on.
GROUP_BITS = 3

# A group is periodic only if its summed log-likelihood ratio (periodic
# over Poisson, nats) beats what Poisson pages of its rate would give by
# LLR_MIN nats and by LLR_Z standard errors: see choose().  NULL_PAGES
# Poisson pages per group (NULL_MAX in all) are simulated for that, with a
# fixed seed (the estimate is deterministic); a group with fewer than
# NULL_MIN of them landing in it cannot be calibrated and stays Poisson.
LLR_MIN = 10.0
LLR_Z = 4.0
LLR_PER_PAGE = 0.3
NULL_PAGES = 4096
NULL_MAX = 1 << 19    # simulated pages at most (bounded memory)
NULL_MIN = 64
NULL_SEED = 20260


def codes(laws, size, name="laws"):
    """Law codes (int8 array of ``size``) from None (all Poisson), one law
    name or code, or a sequence of them; ValueError naming ``name``."""
    if laws is None:
        return np.zeros(size, dtype=np.int8)
    if isinstance(laws, str) or np.ndim(laws) == 0:
        return np.full(size, _code(laws, name), dtype=np.int8)
    arr = np.asarray(laws)
    if arr.ndim != 1 or arr.size != size:
        raise ValueError(f"{name} must have one law per entry ({size}), "
                         f"got {arr.size}")
    if arr.dtype.kind in "iub":
        if arr.size and (arr.min() < 0 or arr.max() >= len(NAMES)):
            raise ValueError(f"{name}: unknown law code (0 = poisson, "
                             f"1 = periodic)")
        return arr.astype(np.int8)
    return np.array([_code(x, name) for x in arr.tolist()], dtype=np.int8)


def _code(law, name):
    if isinstance(law, str):
        if law in NAMES:
            return NAMES.index(law)
        raise ValueError(f"{name}: unknown law {law[:20]!r} (known: "
                         f"{', '.join(NAMES)})")
    if isinstance(law, (int, np.integer)) and not isinstance(law, bool) \
            and 0 <= law < len(NAMES):
        return int(law)
    raise ValueError(f"{name}: unknown law {str(law)[:20]!r} (known: "
                     f"{', '.join(NAMES)})")


def dirty_prob(d, rates, periodic=None):
    """P(a page is written at least once in ``d`` seconds), for every
    interval length in ``d`` (any shape) and every rate (writes/s, 1-D):
    shape d.shape + rates.shape.  ``periodic``: boolean per rate (None: all
    Poisson)."""
    x = np.multiply.outer(d, rates)
    p = -np.expm1(-x)
    if periodic is not None and periodic.any():
        p[..., periodic] = np.minimum(x[..., periodic], 1.0)
    return p


def mean_dirty_prob(rates, periodic, end, t0, t1):
    """Mean over send times s uniform in [t0, t1] of the probability that a
    page sent at s is written again before ``end`` (seconds; the arrays
    broadcast against ``rates`` on the last axis; t0 <= t1 <= end): the
    average of P(written in end - s).  Poisson: the average of
    1 - exp(-rate (end - s)); periodic: the exact integral of
    min(rate (end - s), 1)."""
    lam = rates
    a, b = end - t1, end - t0          # the shortest and longest wait
    width = b - a
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        g = 1.0 - (np.exp(-lam * a) - np.exp(-lam * b)) / (lam * width)
    g = np.where(width * lam > 1e-9, g, -np.expm1(-lam * a))
    if periodic is not None and periodic.any():
        shape = np.broadcast_shapes(np.shape(a), np.shape(b), lam.shape)
        lp = lam[periodic]
        ap = np.broadcast_to(a, shape)[..., periodic]
        wp = np.broadcast_to(width, shape)[..., periodic]
        # F(u) = int_0^u min(lam v, 1) dv: lam u^2/2 up to 1/lam, then
        # u - 1/(2 lam)
        with np.errstate(invalid="ignore", divide="ignore"):
            gp = (_ramp_integral(lp, ap + wp) - _ramp_integral(lp, ap)) / wp
        gp = np.where(wp * lp > 1e-9, gp, np.minimum(lp * ap, 1.0))
        g = np.array(np.broadcast_to(g, shape))
        g[..., periodic] = gp
    return g


def _ramp_integral(lam, u):
    """int_0^u min(lam v, 1) dv, u >= 0 seconds (lam > 0)."""
    return np.where(lam * u < 1.0, 0.5 * lam * u * u,
                    u - 0.5 / np.where(lam > 0, lam, 1.0))


# -- estimation -------------------------------------------------------------

# A page dirty in every probe interval is hotter than the probe resolves
# (its MLE is unbounded).  The model's finest time scale is QEMU's 100 ms
# pending-check window (precopy.CHECK_INTERVAL), so such a page is taken
# to be dirty in (nearly) every window: P >= 0.999 under the Poisson law,
# 1 under the periodic.  The lower bound the intervals give (k = m - 1/2)
# under-counts what a window dirties when the probe's intervals are long:
# the testbed's zipf guest (intervals of 0.6 s and more) had 136 pages at
# 5.5 writes/s, 195 pages predicted per 100 ms where QEMU 10's own trace
# shows 215-248, and at 8 MiB/s it was predicted to converge and never did.
# Erring this way makes plans ask for more bandwidth, not less.
SATURATED_WINDOW = 0.1                                        # s
SATURATED_POISSON_RATE = -math.log(1e-3) / SATURATED_WINDOW   # writes/s
SATURATED_PERIODIC_RATE = 1.0 / SATURATED_WINDOW              # writes/s


def poisson_fit(dirty, tau, raw=False):
    """Per-row Poisson MLE rate (writes/s) and the supremum of the
    log-likelihood (nats) for rows of a boolean matrix ``dirty`` (pages x
    intervals, each row dirty at least once) over interval lengths ``tau``
    (seconds), the intervals independent.

    Equal intervals: rate = -ln(1 - k/m) / tau.  Unequal: the score
    equation by Newton's method.  A row dirty in every interval has an
    unbounded MLE (log-likelihood supremum 0): its rate is the one for
    k = m - 1/2 (a continuity correction), at least
    :data:`SATURATED_POISSON_RATE`: "hotter than the intervals can
    resolve", dirty in every pending-check window.  ``raw``: (the rates
    before that floor, None).
    """
    dirty = np.asarray(dirty, dtype=bool)
    tau = np.asarray(tau, dtype=np.float64)
    m = tau.size
    k = dirty.sum(axis=1).astype(np.float64)
    kk = np.minimum(k, m - 0.5)
    full = k >= m
    if np.all(tau == tau[0]):
        lam = -np.log1p(-kk / m) / tau[0]
    else:
        # maximise sum_i d_i log(1-e^{-l t_i}) - (1-d_i) l t_i; score:
        # sum_{dirty i} t_i / expm1(l t_i) - sum_{clean i} t_i = 0
        clean_time = (~dirty) @ tau
        # dirty every time: continuity correction with the mean interval
        clean_time[full] = 0.5 * tau.mean()
        lam = -np.log1p(-kk / m) / tau.mean()
        for _ in range(60):
            # t/(e^x-1) and its derivative in e^-x: no overflow for hot
            # pages whose x is large
            x = lam[:, None] * tau
            emx = np.exp(-x)
            one_m = -np.expm1(-x)
            g = np.where(dirty, tau * emx / one_m, 0.0).sum(axis=1) - \
                clean_time
            dg = -np.where(dirty, tau * tau * emx / (one_m * one_m),
                           0.0).sum(axis=1)
            new = lam - g / dg
            # Newton on a convex-decreasing score: keep iterates positive
            new = np.where(new > 0, new, lam / 2)
            done = np.abs(new - lam) <= 1e-10 * lam
            lam = new
            if done.all():
                break
    if raw:
        return lam, None
    lam = np.where(full, np.maximum(lam, SATURATED_POISSON_RATE), lam)
    ll = np.where(full, 0.0, loglik(POISSON, lam, dirty, tau))
    return lam, ll


def saturated_bounds(tau):
    """(Poisson, periodic) rates, writes/s, that the probe's intervals
    ``tau`` (seconds) alone give a page dirty in every one of them: the
    bounds :func:`poisson_fit` and :func:`periodic_fit` raised to the
    SATURATED rates.  A profile estimated before that holds these (see
    :meth:`.profile.DirtyProfile.from_dict`)."""
    tau = np.asarray(tau, dtype=np.float64)
    lam, _ = poisson_fit(np.ones((1, tau.size), dtype=bool), tau, raw=True)
    return float(lam[0]), float(1.0 / tau.min())


def periodic_fit(dirty, tau):
    """Per-row periodic MLE rate (writes/s) and log-likelihood supremum
    (nats), as :func:`poisson_fit`, with P(dirty in interval i) =
    min(tau_i rate, 1).

    The log-likelihood sum_dirty log min(tau_i r, 1) + sum_clean
    log(1 - tau_i r) is concave in r on (0, 1 / longest clean interval), so
    its maximum is where the (left) derivative changes sign: found by
    bisection on log r.  Equal intervals give rate = k / (m tau).  A row
    dirty in every interval is certain at any rate >= 1 / shortest
    interval (supremum 0): it gets that least rate, at least
    :data:`SATURATED_PERIODIC_RATE` (see :func:`poisson_fit`).
    """
    dirty = np.asarray(dirty, dtype=bool)
    tau = np.asarray(tau, dtype=np.float64)
    clean = ~dirty
    full = ~clean.any(axis=1)
    longest_clean = np.where(clean, tau, 0.0).max(axis=1)
    hi = np.log(1.0 / np.where(full, 1.0, longest_clean))
    lo = hi - 60.0
    ctau = np.where(clean, tau, 0.0)
    for _ in range(46):   # 60 nats / 2**46: 1e-12 relative
        mid = 0.5 * (lo + hi)
        r = np.exp(mid)[:, None]
        unsat = (dirty & (tau * r < 1.0)).sum(axis=1)
        slope = unsat / r[:, 0] - (ctau / (1.0 - ctau * r)).sum(axis=1)
        up = slope > 0
        lo = np.where(up, mid, lo)
        hi = np.where(up, hi, mid)
    lam = np.exp(0.5 * (lo + hi))
    lam = np.where(full, max(1.0 / tau.min(), SATURATED_PERIODIC_RATE),
                   lam)
    ll = np.where(full, 0.0, loglik(PERIODIC, lam, dirty, tau))
    return lam, ll


def loglik(law, rates, dirty, tau):
    """Log-likelihood (nats) of each row of ``dirty`` (pages x intervals)
    at its rate (writes/s) under ``law``, the intervals (``tau``, seconds)
    independent."""
    x = np.asarray(rates, dtype=np.float64)[:, None] * tau
    with np.errstate(divide="ignore"):
        if law == POISSON:
            lp_dirty = np.log(-np.expm1(-x))
            lp_clean = -x
        else:
            lp_dirty = np.log(np.minimum(x, 1.0))
            lp_clean = np.log1p(-np.minimum(x, 1.0))
    return np.where(dirty, lp_dirty, lp_clean).sum(axis=1)


def group_of(rates):
    """Group id (log bin of 2**-GROUP_BITS octave) of Poisson rates > 0."""
    return np.asarray(rates, dtype=np.float64).view(np.int64) >> \
        (52 - GROUP_BITS)


# Intervals beyond which no law is chosen (all Poisson): see estimate().
MAX_LAW_INTERVALS = 256


def estimate(dirty, pages, tau, seed=NULL_SEED):
    """Rate and law of each distinct dirty pattern.

    :param dirty: boolean matrix, distinct patterns x intervals, each dirty
        at least once
    :param pages: pages with each pattern
    :param tau: interval lengths, seconds (independent intervals)
    :returns: (rates writes/s, law codes, report): per pattern the rate
        under its group's law, and a JSON-able report of the choice
        (pages per law, and per group its Poisson rate, pages, ratio,
        expected ratio under Poisson, standard error and law)

    Patterns are grouped by their Poisson rate (:func:`group_of`); the
    group's law is chosen by :func:`choose`.
    """
    dirty = np.asarray(dirty, dtype=bool)
    tau = np.asarray(tau, dtype=np.float64)
    pages = np.asarray(pages, dtype=np.float64)
    m = tau.size
    empty = {"poisson_pages": int(pages.sum()), "periodic_pages": 0,
             "groups": []}
    if dirty.shape[0] == 0 or np.all(tau == tau[0]):
        # equal intervals cannot tell the laws apart (see choose())
        return poisson_fit(dirty, tau)[0], \
            np.zeros(dirty.shape[0], dtype=np.int8), empty
    if m > MAX_LAW_INTERVALS:
        # The Poisson null is simulated over every interval: beyond this
        # it costs minutes (a probe of bursts has thousands of
        # millisecond intervals).  Poisson then, and said so.
        return poisson_fit(dirty, tau)[0], \
            np.zeros(dirty.shape[0], dtype=np.int8), \
            dict(empty, not_chosen=f"{m} intervals, more than "
                                   f"{MAX_LAW_INTERVALS}")
    r_poi, _ = poisson_fit(dirty, tau)
    group = group_of(r_poi)
    ids, inv = np.unique(group, return_inverse=True)
    n = np.bincount(inv, weights=pages)
    mean_rate = np.bincount(inv, weights=pages * r_poi) / n
    # Poisson pages with the rates the pages were fitted (drawn in
    # proportion to their pages), observed over the same intervals: the
    # ratio their own fits give in a group is what chance gives there.  Not
    # the group's own rate: a group in the tail of the rates holds pages
    # whose true rate is elsewhere, and their patterns are not those of
    # Poisson pages of the group's rate.
    rng = np.random.default_rng(seed)
    nsim = min(NULL_PAGES * ids.size, NULL_MAX)
    sim_rate = rng.choice(r_poi, size=nsim, p=pages / pages.sum())
    sim = np.empty((nsim, m), dtype=bool)
    for i in range(m):
        sim[:, i] = rng.random(nsim) < -np.expm1(-sim_rate * tau[i])
    sim = sim[sim.any(axis=1)]
    # One fit of every distinct pattern, observed or simulated.
    both = np.concatenate((_pack(dirty), _pack(sim)))
    uniq, where = np.unique(both, return_inverse=True)
    where = where.ravel()
    rows = _unpack(uniq, m)
    u_poi, l_poi = poisson_fit(rows, tau)
    u_per, l_per = periodic_fit(rows, tau)
    llr_u = l_per - l_poi
    obs_at, sim_at = where[:dirty.shape[0]], where[dirty.shape[0]:]
    # Simulated pages count for the group their own fit falls in.
    sim_group = np.searchsorted(ids, group_of(u_poi[sim_at]))
    keep = (sim_group < ids.size)
    keep[keep] = ids[sim_group[keep]] == group_of(u_poi[sim_at][keep])
    periodic, total, expect, se, n0 = choose(
        inv, pages, llr_u[obs_at], sim_group[keep], llr_u[sim_at][keep],
        ids.size)
    law = periodic[inv].astype(np.int8)
    rates = np.where(law == PERIODIC_CODE, u_per[obs_at], r_poi)
    report = {
        "poisson_pages": int(n[~periodic].sum()),
        "periodic_pages": int(n[periodic].sum()),
        "groups": [{"rate": float(r), "pages": int(c),
                    "llr": round(float(t), 3),
                    "llr_if_poisson": round(float(e), 3),
                    "se": round(float(s), 3), "null_pages": int(z),
                    "law": NAMES[int(p)]}
                   for r, c, t, e, s, z, p in zip(
                       mean_rate, n, total, expect, se, n0, periodic)]}
    return rates, law, report


def _pack(dirty):
    """Rows of a boolean matrix as one hashable value each (np.unique)."""
    packed = np.packbits(dirty, axis=1)
    return np.ascontiguousarray(packed).view(
        np.dtype((np.void, packed.shape[1]))).ravel()


def _unpack(packed, m):
    raw = np.frombuffer(packed.tobytes(), dtype=np.uint8).reshape(
        packed.size, -1)
    return np.unpackbits(raw, axis=1, count=m).astype(bool)


def choose(group, pages, llr, null_group, null_llr, ngroups):
    """Which groups of pages are periodic.

    :param group: group index (0..ngroups-1) of each row
    :param pages: pages with each row's dirty pattern
    :param llr: per-page log-likelihood ratio of each row, periodic over
        Poisson, each at its own MLE (nats)
    :param null_group, null_llr: the same for simulated Poisson pages
        (one each) with the pages' fitted rates, by the group their own fit
        falls in
    :returns: per group: periodic?, summed ratio, the sum expected of
        Poisson pages, the standard error of their difference, simulated
        pages used

    Each page at its own MLE overfits, and not alike under the two laws:
    a Poisson page dirty in every long interval and clean in a short one
    fits the periodic law (certain in the long ones) better than its own.
    Simulated, Poisson pages of some rates favour periodic by 0.05 to 0.2
    nats each, which over a million pages would be "decisive" evidence for
    a law that is not there.  So the observed sum is compared with what
    Poisson pages of the group's rate give: periodic iff the excess is
    above LLR_MIN nats (a likelihood ratio of e^10, about 22,000) and
    above LLR_Z standard errors (the spread of the observed per-page
    ratios and the simulation's own error).  Equal intervals cannot tell
    the laws apart at all (a page's likelihood then depends only on its
    dirty share, which either law fits exactly).
    """
    w = np.asarray(pages, dtype=np.float64)
    n = np.bincount(group, weights=w, minlength=ngroups)
    total = np.bincount(group, weights=w * llr, minlength=ngroups)
    mean = total / np.maximum(n, 1e-300)
    var = np.bincount(group, weights=w * (llr - mean[group]) ** 2,
                      minlength=ngroups)
    n0 = np.bincount(null_group, minlength=ngroups).astype(np.float64)
    ok = n0 >= NULL_MIN
    s0 = np.bincount(null_group, weights=null_llr, minlength=ngroups)
    m0 = s0 / np.maximum(n0, 1.0)
    v0 = np.bincount(null_group, weights=(null_llr - m0[null_group]) ** 2,
                     minlength=ngroups) / np.maximum(n0 - 1.0, 1.0)
    expect = n * m0
    se = np.sqrt(var + n * n * v0 / np.maximum(n0, 1.0))
    excess = total - expect
    periodic = ok & (excess > LLR_MIN) & (excess > LLR_Z * se) & \
        (excess > LLR_PER_PAGE * n)
    return periodic, total, expect, se, n0.astype(np.int64)
