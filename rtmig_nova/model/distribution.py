"""Probability distributions of migration outcomes.

One representation serves every model: a mixture of normal components (a
component with zero spread is a point mass) plus a *defect*, the probability
that the quantity is infinite (the migration did not converge).  An empirical
sample is a mixture of equally weighted point masses.
"""

import numpy as np
from scipy import optimize, special

# Below this, non-converged probability mass is treated as residue: the mean
# and std are those of the converged part instead of infinite.
DEFECT_TOLERANCE = 1e-6


def _normalised(weights, defect):
    """Components to keep (weight > 0), their weights scaled to sum to
    1 - defect (absorbs rounding drift), and the defect (1 if no weight)."""
    w = np.atleast_1d(np.asarray(weights, dtype=np.float64))
    keep = w > 0
    w = w[keep]
    defect = float(min(max(defect, 0.0), 1.0))
    total = w.sum()
    if total > 0:
        return keep, w * ((1.0 - defect) / total), defect
    return keep, w, 1.0


class Distribution:
    """A possibly defective distribution on the real line.

    :param means, sds, weights: the normal components (sds may be 0)
    :param defect: probability of +inf (not converged)
    :param support: (lo, hi) the quantity cannot leave; component tails
        beyond it are clipped onto it (e.g. a downtime that the algorithm
        bounds, approximated by normals)
    """

    def __init__(self, means, sds, weights, defect=0.0,
                 support=(-np.inf, np.inf)):
        means = np.atleast_1d(np.asarray(means, dtype=np.float64))
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != means.shape:
            w = np.broadcast_to(w, means.shape)
        keep, self.weights, self.defect = _normalised(w, defect)
        self._set(means, sds, keep, support)

    @staticmethod
    def sharing_weights(weights, defect=0.0):
        """A maker of distributions that share component weights and a
        defect (the outcomes of one prediction): the weights are checked
        and normalised once.  ``make(means, sds, support=(lo, hi))``."""
        keep, w, defect = _normalised(weights, defect)

        def make(means, sds, support=(-np.inf, np.inf)):
            d = Distribution.__new__(Distribution)
            d.weights, d.defect = w, defect
            d._set(means, sds, keep, support)
            return d
        return make

    def _set(self, means, sds, keep, support):
        self.lo, self.hi = (float(v) for v in support)
        means = np.atleast_1d(np.asarray(means, dtype=np.float64))
        sds = np.asarray(sds, dtype=np.float64)
        if sds.shape != means.shape:
            sds = np.broadcast_to(sds, means.shape)
        # Boolean indexing copies: nothing is shared with the caller.
        self.means, self.sds = means[keep], sds[keep]

    @classmethod
    def empirical(cls, samples):
        """From samples; ``inf`` samples count as not converged."""
        s = np.asarray(samples, dtype=np.float64).ravel()
        if s.size == 0:
            raise ValueError("no samples")
        fin = np.isfinite(s)
        return cls(s[fin], 0.0, np.ones(fin.sum()),
                   defect=1.0 - fin.mean())

    def _clipped_moments(self):
        """Mean and second moment of each component clipped to the
        support."""
        m, sd = self.means, self.sds
        if not (np.isfinite(self.lo) or np.isfinite(self.hi)):
            return m, sd ** 2 + m ** 2
        pos = sd > 0
        s_ = np.where(pos, sd, 1.0)
        a = (self.lo - m) / s_
        b = (self.hi - m) / s_
        pa, pb = special.ndtr(a), special.ndtr(b)
        da = np.where(np.isfinite(a), np.exp(-0.5 * a * a), 0.0) / np.sqrt(
            2 * np.pi)
        db = np.where(np.isfinite(b), np.exp(-0.5 * b * b), 0.0) / np.sqrt(
            2 * np.pi)
        lo = self.lo if np.isfinite(self.lo) else 0.0
        hi = self.hi if np.isfinite(self.hi) else 0.0
        mid = pb - pa
        first = lo * pa + hi * (1 - pb) + m * mid + s_ * (da - db)
        # E[X^2; a < Z < b] for X = m + s Z.
        with np.errstate(invalid="ignore"):
            az = np.where(np.isfinite(a), a * da, 0.0)
            bz = np.where(np.isfinite(b), b * db, 0.0)
        inner2 = (m ** 2 + s_ ** 2) * mid + 2 * m * s_ * (da - db) + \
            s_ ** 2 * (az - bz)
        second = lo ** 2 * pa + hi ** 2 * (1 - pb) + inner2
        clip_m = np.clip(m, self.lo, self.hi)
        return (np.where(pos, first, clip_m),
                np.where(pos, second, clip_m ** 2))

    @classmethod
    def point(cls, value):
        if not np.isfinite(value):
            return cls([], [], [], defect=1.0)
        return cls([value], [0.0], [1.0])

    @property
    def converged(self):
        """Probability that the quantity is finite."""
        return 1.0 - self.defect

    @property
    def mean(self):
        if self.defect > DEFECT_TOLERANCE or self.means.size == 0:
            return float("inf")
        m, _ = self._clipped_moments()
        return float(np.dot(self.weights, m) / self.weights.sum())

    @property
    def std(self):
        if self.defect > DEFECT_TOLERANCE or self.means.size == 0:
            return float("inf")
        w = self.weights / self.weights.sum()
        m1, m2 = self._clipped_moments()
        mean = np.dot(w, m1)
        return float(np.sqrt(max(np.dot(w, m2) - mean ** 2, 0.0)))

    def cdf(self, x):
        """P(X <= x); vectorised over ``x``."""
        x = np.asarray(x, dtype=np.float64)
        below = x < self.lo
        above = x >= self.hi
        z = np.subtract.outer(x, self.means)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(self.sds > 0,
                         special.ndtr(z / np.where(self.sds > 0, self.sds, 1)),
                         (z >= 0).astype(np.float64))
        # Rounding can carry the weighted sum an ulp past the converged
        # mass (a probability printed above 1): clipped where it arises.
        out = np.clip(p @ self.weights, 0.0, self.converged)
        return np.where(below, 0.0, np.where(above, self.converged, out))

    def quantile(self, q):
        """Smallest x with P(X <= x) >= q (``inf`` beyond the converged
        mass); vectorised over ``q``."""
        qa = np.asarray(q, dtype=np.float64)
        if ((qa <= 0) | (qa >= 1) | ~np.isfinite(qa)).any():
            raise ValueError("quantile level must be in (0, 1)")
        flat = qa.ravel()
        out = np.full(flat.shape, np.inf)
        ok = flat <= self.converged * (1 - 1e-12)
        if ok.any() and self.means.size:
            out[ok] = self._finite_quantile(flat[ok])
        out = np.where(np.isfinite(out), np.clip(out, self.lo, self.hi),
                       out).reshape(qa.shape)
        return float(out) if out.ndim == 0 else out

    def _finite_quantile(self, q):
        if not (self.sds > 0).any():
            order = np.argsort(self.means, kind="stable")
            cum = np.cumsum(self.weights[order])
            i = np.searchsorted(cum, q * (1 - 1e-12), side="left")
            return self.means[order][np.minimum(i, order.size - 1)]
        # Brent's method on the cdf: about ten cdf evaluations per level
        # where bisection to the same tolerance took forty.  The unclipped
        # mixture's quantile, clipped to the support by the caller, is the
        # clipped distribution's.
        lo = float((self.means - 9 * self.sds).min())
        hi = float((self.means + 9 * self.sds).max())
        spread = self.sds > 0
        m, s, w = self.means[spread], self.sds[spread], self.weights[spread]
        m0, w0 = self.means[~spread], self.weights[~spread]
        out = np.empty(q.shape)
        for i, level in enumerate(q):
            def excess(x, level=level):
                return float(w @ special.ndtr((x - m) / s) +
                             w0 @ (x >= m0)) - level
            if excess(lo) >= 0:
                out[i] = lo
                continue
            if excess(hi) < 0:
                out[i] = hi
                continue
            x = optimize.brentq(excess, lo, hi, rtol=1e-12,
                                xtol=1e-15 * max(abs(lo), abs(hi), 1e-300))
            # Smallest x with P(X <= x) >= q: Brent may stop just below a
            # root or the jump of a point mass; step onto the right side.
            while excess(x) < 0:
                x = min(x + max(1e-12 * abs(x), 1e-300), hi)
            out[i] = x
        return out

    def scaled(self, a, b=0.0):
        """The distribution of a X + b (a > 0)."""
        return Distribution(a * self.means + b, a * self.sds, self.weights,
                            self.defect, (a * self.lo + b, a * self.hi + b))

    def plus_normal(self, mean, sd):
        """The distribution of X + Y, Y ~ Normal(mean, sd) independent of X
        (sd 0: a shift).  The support moves by the mean and, with a
        spread, is no longer bounded."""
        if sd <= 0:
            return self.scaled(1.0, mean)
        return Distribution(self.means + mean,
                            np.sqrt(self.sds ** 2 + sd ** 2), self.weights,
                            self.defect)

    def summary(self, quantiles=(0.5, 0.95, 0.99)):
        """Plain-dict summary: mean, std, quantiles, converged probability."""
        d = {"mean": self.mean, "std": self.std,
             "converged": self.converged}
        for q in quantiles:
            d[f"p{round(q * 100):d}"] = self.quantile(q)
        return d

    def __repr__(self):
        return (f"<Distribution mean={self.mean:.6g} "
                f"p95={self.quantile(0.95):.6g} "
                f"converged={self.converged:.4f}>")
