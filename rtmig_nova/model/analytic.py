"""Analytic stochastic model of QEMU pre-copy (the ``precopy`` model).

How the randomness is propagated
--------------------------------
Pages are independent writers, each Poisson or periodic (:mod:`.laws`), so
given an epoch's length T the pages dirtied in it are independent Bernoulli
variables and their count is
Poisson-binomial.  Under the ``sync`` dirty log the next pending count depends
on the past only through the current pending count n (the epoch length is a
function of n), so the pending counts form a Markov chain on n.  The model
propagates the *distribution* of n round by round:

* the survivors (paths that have not yet converged) are held as a few cells,
  each with its probability mass, the mean and variance of n in it, and the
  mean and variance of the time elapsed so far; cell edges sit on the
  pending counts where the next epoch's schedule breaks (one check more:
  the next count jumps by about a window of pages), so near a convergence
  cliff the answer does not move with the number of cells;
* from each cell the epoch is computed exactly as QEMU runs it (pending check
  every 100 ms window, sync when fewer than threshold pages remain, remaining
  pages carried over); the new pending count is Poisson-binomial, taken as
  normal with the exact mean and variance (continuity-corrected at the
  threshold); within-cell spread is carried through the local slope;
* the mass that falls below the threshold converges this round: it gives
  mixture components of downtime and total time; the rest is re-binned into
  cells for the next round.

Which pages are pending is summarised by the expected share of each rate bin
(mean field).  That is exact in expectation for the ``sync`` log and an
approximation for the ``clear`` log and for the carried-over pages; both are
checked against the page-level simulator (:mod:`.montecarlo`) in the tests.
Page addresses are taken to be independent of rates, which is all a rate
histogram can say.  A periodic page's phase is taken afresh each epoch: the
mean field forgets that a periodic page written late in one epoch is not
written early in the next (the simulator keeps it).
"""

import math

import numpy as np
from scipy import special

from rtmig_nova.model import laws
from rtmig_nova.model.distribution import Distribution
from rtmig_nova.model.precopy import PAGE_HEADER_BYTES, ZERO_PAGE_BYTES
from rtmig_nova.model.prediction import Prediction

CELLS = 24          # cells for a survivor distribution that needs shape
SPAN = 7.0          # cells cover mean +- SPAN standard deviations
STOP_CELLS = 4      # cells for the converging part (downtime shape)
MASS_EPS = 1e-13    # survivor mass below this is dropped
TAIL_EPS = 1e-8     # survivors in all below this: not followed (defect)


# The model computes on rate bins of 2**-COMPUTE_BITS octave (at most
# 1/8 = 12.5% wide), each at the page-weighted mean rate of the profile bins
# it merges.  The bin keeps the exact total rate; P(written in T) =
# 1 - exp(-rate T) is smooth in the rate, so the spread inside a bin errs
# only to second order (checked against full resolution in the tests).
COMPUTE_BITS = 3


def merge_bins(rates, counts, bits=COMPUTE_BITS, law=None):
    """Merge rate bins (writes/s, ascending) into log bins of 2**-bits
    octave: (mean rates, counts).  With ``law`` (codes per bin) the bins of
    each law merge apart, and the law codes of the merged bins, in
    ascending rate order, come third."""
    rates = np.asarray(rates, dtype=np.float64)
    if law is not None and np.any(law):
        parts = [merge_bins(rates[law == c], counts[law == c], bits)
                 for c in range(len(laws.NAMES))]
        r = np.concatenate([p[0] for p in parts])
        n = np.concatenate([p[1] for p in parts])
        c = np.repeat(np.arange(len(parts), dtype=np.int8),
                      [p[0].size for p in parts])
        order = np.lexsort((c, r))
        return r[order], n[order], c[order]
    keys = rates.view(np.int64) >> (52 - bits)
    edges = np.flatnonzero(np.diff(keys)) + 1
    starts = np.concatenate(([0], edges))
    cnt = np.add.reduceat(counts, starts) if counts.size else counts
    tot = np.add.reduceat(rates * counts, starts) if counts.size else rates
    if law is None:
        return tot / np.maximum(cnt, 1), cnt
    return tot / np.maximum(cnt, 1), cnt, np.zeros(cnt.size, dtype=np.int8)


class _Bins:
    """Rate bins including the two rate-0 bins (zero pages, idle pages)."""

    def __init__(self, profile, bits=COMPUTE_BITS):
        ps = profile.page_size
        rates, counts, law = merge_bins(
            profile.rates, profile.counts.astype(np.float64), bits,
            law=profile.laws)
        self.rates = np.concatenate(([0.0, 0.0], rates))
        self.law = np.concatenate((np.zeros(2, dtype=np.int8), law))
        # None when every bin is Poisson: the law's fast path
        per = self.law == laws.PERIODIC_CODE
        self.periodic = per if per.any() else None
        self.counts = np.concatenate(
            ([profile.zero_pages, profile.idle_pages - profile.zero_pages],
             counts)).astype(np.float64)
        self.cost = np.concatenate(
            ([ZERO_PAGE_BYTES, ps + PAGE_HEADER_BYTES],
             np.full(rates.size, ps + PAGE_HEADER_BYTES))
        ).astype(np.float64)
        self.total = self.counts.sum()
        self.active = self.rates > 0
        self.neg_rates = -self.rates


LAYOUT_CHUNKS = 256  # address chunks of the per-page layout table


class _Layout:
    """Where each rate bin's pages lie in the guest address space.

    ``cum[k, b]``: pages of bin b below address fraction k / K, for the
    chunk boundaries k = 0..K; linear in between.  A profile given as a
    histogram has no addresses: one chunk, every bin spread evenly.  With
    per-page rates the table is built from them (once per profile).
    """

    def __init__(self, cum):
        self.cum = cum
        self.k = cum.shape[0] - 1
        self.total = cum[-1]

    @classmethod
    def for_profile(cls, profile, bins, bits=COMPUTE_BITS):
        if profile.page_rates is None or profile.total_pages < 2:
            return cls(np.stack((np.zeros_like(bins.counts), bins.counts)))
        cache = profile.__dict__.setdefault("_layout_cache", {})
        key = (bits, LAYOUT_CHUNKS)
        if key not in cache:
            cache[key] = cls(_layout_table(profile.page_rates, bins, bits,
                                           page_laws=profile.page_laws))
        return cache[key]

    def at(self, x):
        """Cumulative pages per bin at address fractions ``x`` (any real;
        the address space repeats with period 1), shape x.shape + (bins,)."""
        x = np.asarray(x, dtype=np.float64)
        if self.k == 1:         # no layout: every bin spread evenly
            return x[..., None] * self.total
        turns = np.floor(x)
        pos = (x - turns) * self.k
        j = np.minimum(pos.astype(np.int64), self.k - 1)
        lo = self.cum[j]
        return lo + (pos - j)[..., None] * (self.cum[j + 1] - lo) + \
            turns[..., None] * self.total

    def pages(self, x0, length):
        """Pages per bin in [x0, x0 + length)."""
        if self.k == 1:
            return np.asarray(length, dtype=np.float64)[..., None] * \
                self.total
        return self.at(np.asarray(x0) + np.asarray(length)) - self.at(x0)

    def cut(self, x0, length, weight, target):
        """Address fraction in [x0, x0 + length] below which the pages,
        weighted per bin by ``weight`` (bytes per page of the bin), sum to
        ``target`` bytes."""
        k = self.k
        if k == 1:              # linear: pages spread evenly
            per_x = self.total @ weight
            return x0 + (min(max(target / per_x, 0.0), length)
                         if per_x > 0 else length)
        inner = np.arange(np.floor(x0 * k) + 1, np.ceil((x0 + length) * k))
        xs = np.concatenate(([x0], inner / k, [x0 + length]))
        xs = xs[(xs >= x0) & (xs <= x0 + length)]
        c = (self.at(xs) - self.at(x0)) @ weight
        i = int(np.clip(np.searchsorted(c, target), 1, xs.size - 1))
        span = c[i] - c[i - 1]
        f = (target - c[i - 1]) / span if span > 0 else 1.0
        return xs[i - 1] + np.clip(f, 0.0, 1.0) * (xs[i] - xs[i - 1])


LAYOUT_SAMPLE = 1 << 22    # pages read for the layout table at most


def _layout_table(page_rates, bins, bits, block=1 << 18, page_laws=None):
    """Cumulative per-bin page counts over LAYOUT_CHUNKS address chunks from
    per-page rates, in blocks (bounded temporary memory).  Guests over
    LAYOUT_SAMPLE pages are read at a stride (every 4th page of 64 GiB);
    each bin's column is then scaled to its exact page count."""
    n = page_rates.size
    k = min(LAYOUT_CHUNKS, n)
    nb = bins.rates.size
    shift = 52 - bits
    stride = max(1, -(-n // LAYOUT_SAMPLE))
    # Compute bin of a page from its rate's bit pattern: a lookup table over
    # every key a non-negative double can have (key 0: rate 0, the idle
    # column, split below; -0.0's key wraps to index 0 too).
    nkeys = 1 << (63 - shift)
    lookup = np.zeros(nkeys * len(laws.NAMES), dtype=np.int64)
    bin_keys = (bins.rates[2:].view(np.int64) >> shift) + \
        bins.law[2:].astype(np.int64) * nkeys
    lookup[bin_keys] = np.arange(2, nb)
    lookup[0] = lookup[nkeys] = 1
    counts = np.zeros(k * nb, dtype=np.int64)
    sampled = page_rates[::stride]
    sampled_laws = None if page_laws is None else page_laws[::stride]
    m = sampled.size
    buf = np.empty(min(block, m), dtype=np.int64)
    for start in range(0, m, block):
        x = sampled[start:start + block]
        keys = np.right_shift(x.view(np.int64), shift, out=buf[:x.size])
        if sampled_laws is not None:
            keys += sampled_laws[start:start + block].astype(np.int64) * \
                nkeys
        idx = lookup[keys]
        idx += ((np.arange(start, start + x.size) * stride * k) // n) * nb
        counts += np.bincount(idx, minlength=k * nb)
    table = counts.reshape(k, nb).astype(np.float64)
    # Zero pages are some of the idle pages: spread them alike.
    table[:, 0] = 0.0
    col = table.sum(axis=0)
    idle = bins.counts[0] + bins.counts[1]
    want = bins.counts.copy()
    want[1] = idle
    table *= np.where(col > 0, want / np.where(col > 0, col, 1), 0.0)
    if idle > 0:
        table[:, 0] = table[:, 1] * (bins.counts[0] / idle)
        table[:, 1] -= table[:, 0]
    return np.concatenate((np.zeros((1, nb)), np.cumsum(table, axis=0)))


MAX_STRETCHES = 8   # address stretches tracked in address order


class _Pending:
    """Mean-field make-up of the pending set.

    Address order: the circle of guest addresses, from the cursor on, as
    stretches in sweep order.  Stretch i starts at address fraction
    ``x0[i]`` and covers ``length[i]`` of the address space; ``q[i, b]`` is
    the share of its rate-bin-b pages that are pending, ``pending[i, b]``
    their number, ``part[i, b]`` its part of bin b's pending pages and
    ``bin_share[b]`` bin b's part of all pending pages.
    QEMU's cursor carries on from where a sync found it, so the pages left
    unsent are swept first in the next epoch and the stretch just swept
    (holding only pages dirtied since) comes last.  Within a stretch the
    pending pages of a bin are spread like the bin's pages (see
    :class:`_Layout`).

    Rate order: one stretch; pages are sent by rate, not address.
    """

    def __init__(self, layout, x0, length, q):
        self.layout, self.x0, self.length, self.q = layout, x0, length, q
        self.pending = q * layout.pages(x0, length)
        per_bin = self.pending.sum(axis=0)
        self.total = total = float(per_bin.sum())
        # Pending pages of a bin per pending page, and each stretch's part
        # of a bin's pending pages (rows sum to 1 where a bin has any).
        self.bin_share = per_bin / total if total > 0 else per_bin
        self.part = self.pending / np.maximum(per_bin, 1e-300)
        self.part_t = self.part.T
        self._part_bytes_t = None
        self._curves = {}

    def part_bytes_t(self, cost):
        """``part`` weighted by the bytes per page of each bin (``cost``,
        the same for every call), transposed: pages per bin x this gives
        bytes per stretch."""
        if self._part_bytes_t is None:
            self._part_bytes_t = (self.part * cost).T
        return self._part_bytes_t

    def sent_pages(self, i, frac, cost):
        """Pending pages per bin of stretch i that an address sweep from its
        start has sent once ``frac`` (array) of its pending bytes are sent:
        shape frac.shape + (bins,).  Follows the layout, so a hot cluster at
        the start of a stretch is sent before the rest of it."""
        if i not in self._curves:
            k = self.layout.k
            x0, x1 = self.x0[i], self.x0[i] + self.length[i]
            inner = np.arange(np.floor(x0 * k) + 1, np.ceil(x1 * k)) / k
            xs = np.concatenate(([x0], inner[(inner > x0) & (inner < x1)],
                                 [x1]))
            pages = self.q[i] * (self.layout.at(xs) - self.layout.at(x0))
            self._curves[i] = (pages, pages @ cost)
        pages, c = self._curves[i]
        t = frac * c[-1]
        j = np.clip(np.searchsorted(c, t), 1, c.size - 1)
        span = c[j] - c[j - 1]
        f = np.where(span > 0, (t - c[j - 1]) / np.where(span > 0, span, 1),
                     1.0)
        return pages[j - 1] + np.clip(f, 0, 1)[..., None] * \
            (pages[j] - pages[j - 1])

    @classmethod
    def everything(cls, layout):
        return cls(layout, np.zeros(1), np.ones(1),
                   np.ones((1, layout.total.size)))


def _schedule(bins, st, n, pend):
    """How an epoch from pending counts ``n`` (shape (G,)) is sent.

    Send groups are address order's stretches, or in rate order one group
    per bin, coldest first.  Returns the pending pages per bin (G, bins),
    the bytes in each group, the bytes sent from it and the bytes sent
    before it (G, groups), the check (1, 2, ...) at which QEMU syncs,
    whether the pending set ran out first, and the epoch length T (s).
    """
    bw, dt = st["bandwidth"], st["check_interval"]
    window = bw * dt
    used = st.get("used", 0.0)
    a, g_bytes, cum_bytes, checks, exhausted, _ = _checks(bins, st, n,
                                                          pend)
    total_bytes = cum_bytes[:, -1]
    sent_bytes = np.minimum(checks * window - used, total_bytes)
    # The window's spent budget was sent at the burst rate (0 s on an even
    # link, whose epochs start on a fresh window).
    lead = used / max(st["burst"], bw) if st["burst"] is not None else 0.0
    T = np.where(exhausted, run_out_time(total_bytes, bw, dt, st["burst"],
                                         used),
                 checks * dt - lead)
    lo_b = cum_bytes - g_bytes
    g_sent = np.minimum(np.maximum(sent_bytes[:, None] - lo_b, 0.0), g_bytes)
    return a, g_bytes, g_sent, lo_b, checks, exhausted, T


def run_out_time(nbytes, send, dt, burst, used=0.0):
    """Seconds to send ``nbytes`` when the pending set runs out before a
    check: QEMU's rate limit is a budget of ``send`` x ``dt`` bytes per
    ``dt`` window, sent as fast as the link allows (``burst`` bytes/s;
    None: a link shaped to the send rate) and then waited out, so the
    full windows take ``dt`` each and the rest goes at the link's rate;
    the pending check follows at once (migration_thread iterates again
    while the window's budget lasts).  ``used``: bytes of the current
    window's budget already spent (see :func:`window_left_over`)."""
    if burst is None:
        return nbytes / send
    window = send * dt
    burst = np.maximum(burst, send)         # send: a scalar or an array
    # As if the epoch had begun at the window's start, ``used`` bytes
    # (sent at the burst rate) earlier.
    total = nbytes + used
    full = np.floor(total / window)
    return full * dt + (total - full * window) / burst - used / burst


def window_left_over(nbytes, send, dt, burst, used=0.0):
    """Bytes of the rate-limit window's budget spent when an epoch that
    sends ``nbytes`` from ``used`` runs out: QEMU's window runs on across
    the sync that follows (``migration_rate_limit`` sleeps to the end of
    the window whose budget is used, whatever epoch spent it), so the next
    epoch starts with that much of its first window gone.  0 on a link
    shaped to the send rate (``burst`` None: sending is even and the model
    starts each epoch on a fresh window)."""
    nbytes = np.asarray(nbytes, dtype=np.float64)
    if burst is None:
        return np.zeros_like(nbytes)
    window = send * dt
    total = nbytes + used
    # A link no faster than the send rate sends evenly: no burst to carry.
    return np.where(np.asarray(burst) > send,
                    total - np.floor(total / window) * window, 0.0)


def _checks(bins, st, n, pend):
    """Where an epoch from pending counts ``n`` (shape (G,)) syncs: the
    pending pages per bin (G, bins), the bytes per send group and their
    running sum (G, groups), the check (1, 2, ...) at which QEMU syncs
    and whether the pending set runs out before it."""
    window, h = st["bandwidth"] * st["check_interval"], st["threshold"]
    used = st.get("used", 0.0)
    n = np.maximum(n, 0.0)
    # Pending pages per bin; no bin can have more than it has pages.
    a = np.minimum(n[:, None] * pend.bin_share, bins.counts)
    if st["order"] == "rate":
        g_pages, g_bytes = a, a * bins.cost
    else:
        g_pages, g_bytes = a @ pend.part_t, a @ pend.part_bytes_t(bins.cost)
    cum_pages = np.cumsum(g_pages, axis=1)
    cum_bytes = np.cumsum(g_bytes, axis=1)
    # Bytes to send the first (n - h) pages: each group in turn, at its
    # bytes per page.
    x = np.maximum(cum_pages[:, -1] - h, 0.0)
    per_page = g_bytes / np.maximum(g_pages, 1e-300)
    need = (per_page * np.minimum(np.maximum(
        x[:, None] - (cum_pages - g_pages), 0.0), g_pages)).sum(axis=1)
    # The first check (at the end of every window of bytes; the first
    # window has ``used`` of its budget spent) at which fewer than h pages
    # remain; or every page is sent before it.
    checks = np.floor((need + used) / window) + 1.0
    exhausted = checks * window - used >= cum_bytes[:, -1]
    return a, g_bytes, cum_bytes, checks, exhausted, need


def _smooth(bins, st, lo, hi, pend):
    """True if the epoch schedule is the same (same check, same way of
    ending) for every pending count in [lo, hi]: the next pending count is
    then a smooth function of n there and one cell represents it."""
    _, _, _, checks, exhausted, _ = _checks(bins, st, np.array((lo, hi)),
                                            pend)
    return checks[0] == checks[1] and exhausted[0] == exhausted[1]


def _cell_edges(bins, st, lo, hi, pend, ncell):
    """Edges (pending pages, ascending) of about ``ncell`` cells over
    [lo, hi]: even, except that the edge nearest to each break of the next
    epoch's schedule is moved onto it.  Breaks: a pending count at which
    the epoch gains a check (it is 100 ms longer, and the next pending
    count falls by about a window of pages), or stops sending every page
    before its check (the next count's slope in n changes).  A cell across
    a break would be carried through one schedule (and a slope across it)
    instead of two; aligned, the next count is smooth in n within each
    cell.  With more breaks than half the cells they cannot be resolved:
    even cells."""
    edges = lo + (hi - lo) * _cell_fracs(ncell)
    window = st["bandwidth"] * st["check_interval"]
    _, _, cum_bytes, checks, exhausted, need = _checks(bins, st, edges,
                                                       pend)
    # Check j + 1 is reached where need (bytes, growing with n) gets to j
    # windows.  need is linear in n but for kinks where a send group fills
    # up: interpolated within a cell, a kink there puts a sliver of the
    # cell on the wrong side.
    used = st.get("used", 0.0)
    j0, j1 = (math.floor((need[0] + used) / window),
              math.floor((need[-1] + used) / window))
    # The pending set runs out first while its bytes are within the
    # check's windows.
    flips = np.flatnonzero((exhausted[1:] != exhausted[:-1]) &
                           (checks[1:] == checks[:-1])).tolist()
    if (j1 == j0 and not flips) or j1 - j0 + len(flips) > ncell // 2:
        return edges
    targets = np.arange(j0 + 1, j1 + 1) * window - used
    breaks = []
    for i, target in zip(np.searchsorted(need, targets).tolist(),
                         targets.tolist()):
        i = min(max(i, 1), ncell)
        breaks.append((i, (target - need[i - 1]) /
                       max(need[i] - need[i - 1], 1e-300)))
    for i in flips:
        r0, r1 = (checks[i:i + 2] * window - used - cum_bytes[i:i + 2, -1])
        breaks.append((i + 1, r0 / (r0 - r1)))
    xs, near = [], []
    for i, f in breaks:
        x = edges[i - 1] + f * (edges[i] - edges[i - 1])
        xs.append(x)
        near.append(min(max(round((x - lo) / (hi - lo) * ncell), 1),
                        ncell - 1))
    if len(set(near)) < len(near):      # two breaks by one edge: add them
        return np.unique(np.concatenate((edges, xs)))
    edges[near] = xs
    return edges


def _piece_slope(y, x, piece):
    """dy/dx at the points x (increasing, shape (G,), G >= 2) as
    :func:`_slope` computes it, but from neighbours in the same ``piece``
    (the same epoch schedule) only: across a change of schedule y jumps
    (or bends), and a difference over a jump, carried through a cell's
    spread, would smear its mass over a window of pages.  A point alone
    in its piece takes the nearest in-piece difference; with none, the
    trend across the pieces (:func:`_slope`)."""
    out = _slope(y, x)
    breaks = np.flatnonzero(piece[1:] != piece[:-1]).tolist()
    g = y.size - 1                      # pairs: k joins points k, k + 1
    if not breaks or len(breaks) == g:
        return out
    split = set(breaks)
    # The few points next to a break, one by one.
    for i in sorted(split | {k + 1 for k in breaks}):
        left = i >= 1 and i - 1 not in split
        right = i < g and i not in split
        if left and right:
            continue                    # _slope's, within its piece
        if left or right:
            k = i - 1 if left else i
        else:                           # alone: the nearest in-piece pair
            k = min((p for p in range(g) if p not in split),
                    key=lambda p: abs(p + 0.5 - i))
        out[i] = (y[k + 1] - y[k]) / (x[k + 1] - x[k])
    return out


def _epoch(bins, st, n, pend):
    """One epoch from pending counts ``n`` (shape (G,)).

    Returns (T seconds, mean and variance of the next pending count, bytes
    of the next pending set), each of shape (G,), and the schedule
    (:func:`_schedule`).
    """
    sched = _schedule(bins, st, n, pend)
    a, g_bytes, g_sent, lo_b, _, _, T = sched
    # A group without bytes has none sent.
    frac = g_sent / np.maximum(g_bytes, 1e-300)
    rate_order = st["order"] == "rate"
    # Pages sent per bin; the cleared log in address order also needs them
    # per stretch.
    sent_gb = None
    if st["dirty_log"] == "clear" and not rate_order:
        sent_gb = a[:, None, :] * pend.part[None] * frac[:, :, None]
    sent_b = a * frac if rate_order else a * (frac @ pend.part)
    if not rate_order and pend.layout.k > 1:
        # The stretch where the sync came is swept in address order.
        for i in range(frac.shape[1]):
            cells = (frac[:, i] > 0) & (frac[:, i] < 1)
            if cells.any():
                scale = a[cells] @ pend.part[i] / max(
                    pend.pending[i].sum(), 1e-300)
                swept = pend.sent_pages(i, frac[cells, i], bins.cost) * \
                    scale[:, None]
                even = a[cells] * pend.part[i] * frac[cells, i, None]
                sent_b[cells] += swept - even
                if sent_gb is not None:
                    sent_gb[cells, i] = swept
    # Pending at the next sync: the unsent pending pages, and the pages
    # written in the epoch among the others (not pending; a <= counts) and,
    # under the synced log, among those sent; under the cleared log a sent
    # page counts only if written after it was sent.
    rem = a - sent_b
    if st["dirty_log"] == "sync":
        # Written: each of counts - rem pages with p = P(written in T);
        # with em = -p the expressions save two array negations.
        if bins.periodic is None:
            em = np.expm1(np.multiply.outer(T, bins.neg_rates))
        else:
            em = -laws.dirty_prob(T, bins.rates, bins.periodic)
        xm = (bins.counts - rem) * em
        new_b = rem - xm
        var = -(xm + xm * em).sum(axis=1)
    else:
        p = laws.dirty_prob(T, bins.rates, bins.periodic)
        if sent_gb is not None:
            g = _resend_prob(bins, st, T, lo_b, g_sent)  # (G, groups, bins)
            dirty_sent = (sent_gb * g).sum(axis=1)
            var_sent = (sent_gb * g * (1 - g)).sum(axis=1)
        else:
            g = _resend_prob(bins, st, T, lo_b, g_sent,
                             rate_order=True)            # (G, bins)
            dirty_sent = sent_b * g
            var_sent = dirty_sent * (1 - g)
        others = (bins.counts - a) * p
        new_b = rem + others + dirty_sent
        var = (others - others * p + var_sent).sum(axis=1)
    new_bytes = new_b @ bins.cost
    return T, new_b.sum(axis=1), var, new_bytes, sched


def _advance(bins, st, n, pend, sched=None):
    """The make-up of the pending set after an epoch from ``n`` (a scalar,
    the survivors' mean pending count): a new :class:`_Pending`.  ``sched``:
    the epoch's schedule for n if already computed (one-row arrays)."""
    if sched is None:
        sched = _schedule(bins, st, np.array([n]), pend)
    a, g_bytes, g_sent, lo_b, _, exhausted, T = sched
    p = laws.dirty_prob(T[0], bins.rates, bins.periodic)
    if st["order"] == "rate":
        g = _resend_prob(bins, st, T[0], lo_b[0], g_sent[0],
                         rate_order=True)
        sent = g_sent[0] / np.maximum(g_bytes[0], 1e-300) * a[0]
        new = a[0] - sent + sent * g + np.maximum(bins.counts - a[0], 0) * p
        with np.errstate(invalid="ignore", divide="ignore"):
            q = np.where(bins.counts > 0, new / bins.counts, 0.0)
        return _Pending(pend.layout, np.zeros(1), np.ones(1),
                        np.minimum(q, 1.0)[None, :])
    # Each stretch is swept whole, in part (the one where the sync came) or
    # not at all.
    before = lo_b[0]                    # bytes of the stretches before
    sent_bytes = g_sent[0].sum()
    if exhausted[0]:
        partial = pend.x0.size
    else:
        ahead = np.flatnonzero((before + g_bytes[0] > sent_bytes) &
                               (g_bytes[0] > 0))
        partial = int(ahead[0]) if ahead.size else pend.x0.size
    # (groups, bins); under the synced log just p
    g = _resend_prob(bins, st, T[0], lo_b[0], g_sent[0]) \
        if st["dirty_log"] == "clear" else p
    # For groups scaled to n (not the stretch's own count), q scales too.
    scale = a[0].sum() / max(pend.total, 1e-300)
    q = np.minimum(pend.q * scale, 1.0)
    x0, length = pend.x0, pend.length
    fresh = (1 - q) * p                             # written, not pending
    after_unsent = q + fresh                        # pending, not sent
    after_swept = fresh + q * g                     # swept stretches
    # New stretch order: the unsent rest from the cursor on, then the
    # stretches swept, the one where the sync came last.
    i = partial
    if i < x0.size:
        cut = pend.layout.cut(x0[i], length[i], q[i] * bins.cost,
                              sent_bytes - before[i])
        nx0 = np.concatenate(([cut], x0[i + 1:], x0[:i + 1])) % 1.0
        nlen = np.concatenate(([x0[i] + length[i] - cut], length[i + 1:],
                               length[:i], [cut - x0[i]]))
        nq = np.concatenate((after_unsent[i:], after_swept[:i + 1]))
    else:
        nx0, nlen, nq = x0 % 1.0, length, after_swept
    nx0, nlen, nq = _merge_stretches(pend.layout, nx0, nlen, nq)
    new = _Pending(pend.layout, nx0, nlen, nq)
    return new if new.total > 0 else pend


def _resend_prob(bins, st, T, lo_b, g_sent, rate_order=False):
    """Probability that a page sent at a time uniform in [t0, t1] of an
    epoch of length T (s, shape (...)) is pending at the next sync, for
    the send groups that start after ``lo_b`` bytes and send ``g_sent``
    (shape (..., groups)): shape (..., groups, bins); in rate order, where
    group k holds bin k only, just those: shape (..., groups).  Under the
    cleared log only writes after its send count: the average of
    P(written in T - s) (:func:`.laws.mean_dirty_prob`)."""
    lam = bins.rates
    end = np.asarray(T)[..., None]
    t0 = lo_b / st["bandwidth"]
    t1 = (lo_b + g_sent) / st["bandwidth"]
    if not rate_order:
        end, t0, t1 = end[..., None], t0[..., None], t1[..., None]
    if st["dirty_log"] != "clear":
        shape = np.broadcast_shapes(t0.shape, lam.shape)
        return np.broadcast_to(laws.dirty_prob(end[..., 0], lam,
                                               bins.periodic), shape)
    # No page is sent after the epoch ends: the send times of the last
    # group can pass T by rounding, and exp(lam x (t1 - T)) then overflows
    # for a hot page (a RuntimeWarning on a valid request).
    t0, t1 = np.minimum(t0, end), np.minimum(t1, end)
    g = laws.mean_dirty_prob(lam, bins.periodic, end, t0, t1)
    return np.where(bins.active, g, 0.0)


def _merge_stretches(layout, x0, length, q):
    """Drop empty stretches and merge neighbours (the pair covering the
    least address space) down to MAX_STRETCHES; a merged stretch keeps the
    pending pages of both."""
    keep = length > 1e-12
    if not keep.all():
        x0, length, q = x0[keep], length[keep], q[keep]
    while x0.size > MAX_STRETCHES:
        i = int(np.argmin(length[:-1] + length[1:]))
        pages = layout.pages(x0[i:i + 2], length[i:i + 2])
        both = pages.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            qm = np.where(both > 0, (q[i:i + 2] * pages).sum(axis=0) / both,
                          q[i:i + 2].mean(axis=0))
        x0 = np.delete(x0, i + 1)
        length = np.concatenate((length[:i], [length[i] + length[i + 1]],
                                 length[i + 2:]))
        q = np.concatenate((q[:i], qm[None, :], q[i + 2:]))
    return x0, length, q


_STOP_FRACS = np.linspace(0.0, 1.0, STOP_CELLS + 1)
_CELL_FRACS = {}


def _cell_fracs(n):
    """Edges of n even cells as fractions of their span, 0 .. 1; cached,
    for any n: CELLS is read at each prediction (a test may change it)."""
    fracs = _CELL_FRACS.get(n)
    if fracs is None:
        fracs = _CELL_FRACS[n] = np.linspace(0.0, 1.0, n + 1)
    return fracs


def _slope(y, x):
    """dy/dx at the points x (increasing, shape (G,), G >= 2) as
    numpy.gradient computes it: second-order central differences inside,
    one-sided at the ends; zero if all x are equal."""
    if not x[-1] > x[0]:
        return np.zeros_like(y)
    dx = x[1:] - x[:-1]
    dy = y[1:] - y[:-1]
    out = np.empty_like(y)
    out[0], out[-1] = dy[0] / dx[0], dy[-1] / dx[-1]
    if y.size > 2:
        h1, h2 = dx[:-1], dx[1:]
        out[1:-1] = (h2 * h2 * (y[1:-1] - y[:-2]) +
                     h1 * h1 * (y[2:] - y[1:-1])) / (h1 * h2 * (h1 + h2))
    return out


def _normal_cells(mu, sd, edges):
    """Mass, mean and variance of N(mu, sd^2) (components along axis 0) in
    each interval between ``edges`` (along axis 1).  The edges are finite:
    for the open ends use :func:`_far_edges`."""
    sd = np.maximum(sd, 1e-12)[:, None]
    z = (edges[None, :] - mu[:, None]) / sd
    cdf = special.ndtr(z)
    pdf = np.exp(-0.5 * z * z) * _INV_SQRT_2PI
    zpdf = z * pdf
    mass = cdf[:, 1:] - cdf[:, :-1]
    dpdf = pdf[:, :-1] - pdf[:, 1:]         # pdf(a) - pdf(b)
    dzpdf = zpdf[:, :-1] - zpdf[:, 1:]      # a pdf(a) - b pdf(b)
    some = mass > 1e-300
    safe = np.where(some, mass, 1.0)
    r = np.where(some, dpdf / safe, 0.0)
    m = mu[:, None] + sd * r
    v = sd ** 2 * np.maximum(1 + np.where(some, dzpdf / safe, 0.0) - r * r,
                             0.0)
    # Tails far beyond the mean: fall back to the interval midpoint.
    bad = ~np.isfinite(m)
    if bad.any():
        mid = 0.5 * (edges[:-1] + edges[1:])
        m = np.where(bad, np.broadcast_to(mid, m.shape), m)
        v = np.where(bad, 0.0, v)
    return mass, m, v


_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)
FAR_Z = 40.0    # beyond this the normal cdf is 0 or 1 and the pdf 0 (doubles)


def _far_edges(mu, sd):
    """Finite stand-ins for -inf and +inf as cell edges of components
    N(mu, sd^2): FAR_Z standard deviations beyond all of them, where the
    cdf and pdf are exactly what they are at infinity (and z x pdf is 0,
    not the nan of inf x 0)."""
    return float((mu - FAR_Z * sd).min()), float((mu + FAR_Z * sd).max())


def _pool(mass, mean, var, s_mean, s_var):
    """Combine source components (axis 0) per destination cell (axis 1):
    total mass, and mixture mean/variance of n and of elapsed time."""
    w = mass.sum(axis=0)
    ok = w > 0
    ws = np.where(ok, w, 1.0)
    mm = mass * mean
    mn = mm.sum(axis=0) / ws
    vn = (mass * var + mm * mean).sum(axis=0) / ws - mn ** 2
    ms, vs = _pool_moments(mass, w, ok, s_mean, s_var)
    return w, mn, np.maximum(vn, 0.0), ms, vs, ok


def _pool_moments(mass, w, ok, mean, var):
    """Mixture mean and variance per destination cell (axis 1 of ``mass``,
    whose column sums are ``w``; ``ok``: w > 0) of a quantity whose mean
    and variance per source component (axis 0) are ``mean``, ``var``."""
    ws = np.where(ok, w, 1.0)
    m = mean @ mass / ws
    v = (var + mean ** 2) @ mass / ws - m ** 2
    return m, np.maximum(v, 0.0)


def predict(profile, settings, horizon=None, model_name="precopy"):
    """Distributions of total time, downtime, bytes and rounds.

    :param horizon: seconds; if given, stop following paths once they have
        all run longer than this (used by the planner: their exact time past
        the deadline does not matter).  The rest is reported as not
        converged.
    """
    bins, pend = _start(profile)
    bw = settings.send_rate(profile.page_size)
    st = {"bandwidth": bw, "check_interval": settings.check_interval,
          "threshold": settings.threshold_pages(profile.page_size),
          "order": settings.order, "dirty_log": settings.dirty_log,
          "burst": settings.burst_rate, "used": 0.0}
    # Converge iff the integer pending count < h, i.e. <= ceil(h) - 1; the
    # normal approximation is continuity-corrected at ceil(h) - 1/2.
    boundary = np.ceil(st["threshold"]) - 0.5

    # Survivor cells at the start of an epoch.
    w = np.array([1.0])
    n_mean = np.array([bins.total])
    n_var = np.array([0.0])
    s_mean = np.array([0.0])
    s_var = np.array([0.0])
    # Bytes sent so far (mean, variance): not the elapsed time x the rate
    # limit, since an epoch that runs out sends its last window in a burst.
    b_mean = np.array([0.0])
    b_var = np.array([0.0])

    comps = {"total_m": [], "total_v": [], "down_m": [], "down_v": [],
             "bytes_m": [], "bytes_v": [], "w": [], "round": []}
    prev = prev_elapsed = None
    rnd = 0
    while rnd < settings.max_rounds:
        rnd += 1
        mass_in = w.sum()
        # The epoch from every cell, and in the same call from the cells'
        # mean (the pending set's make-up advances from the survivors'
        # mean, which is that unless some cells may converge).
        n_w = float(np.dot(w, n_mean) / mass_in)
        if n_mean.size > 1:
            T, mu, var, new_bytes, sched = _epoch(
                bins, st, np.concatenate((n_mean, (n_w,))), pend)
            w_row = -1
            T, mu, var, new_bytes = T[:-1], mu[:-1], var[:-1], new_bytes[:-1]
            # Slopes within each schedule (the check each cell's epoch
            # syncs at, and whether its pages run out first), not across
            # its breaks.
            slope = _piece_slope(mu, n_mean,
                                 (2.0 * sched[4] + sched[5])[:-1])
        else:
            # One cell: its slope from a second point, in the same call.
            n0 = float(n_mean[0])
            eps = max(math.sqrt(n_var[0]), 1e-6 * n0, 1e-3)
            T, mu, var, new_bytes, sched = _epoch(
                bins, st, np.array((n0, n0 + eps)), pend)
            w_row = 0
            slope = (mu[1:] - mu[:1]) / eps
            T, mu, var, new_bytes = T[:1], mu[:1], var[:1], new_bytes[:1]
        # A floor of 1/1000 page keeps deterministic counts (all pages at
        # p = 0 or 1) inside the cell arithmetic.
        sd = np.maximum(np.sqrt(var + slope ** 2 * n_var), 1e-3)
        src_s_mean = s_mean + T
        src_s_var = s_var
        # sched[2]: bytes sent per send group, of each evaluated count
        src_b_mean = b_mean + sched[2].sum(axis=1)[:T.size]
        # The window budget each cell's epoch leaves spent (a run-out ends
        # mid-window; a sync at a check starts a fresh one).
        src_used = np.where(sched[5][:T.size], window_left_over(
            sched[1].sum(axis=1)[:T.size], bw, st["check_interval"],
            st["burst"], st["used"]), 0.0)
        src_b_var = b_var
        cost = new_bytes / np.maximum(mu, 1e-300)

        # Converging part: pending below the threshold (STOP_CELLS cells);
        # surviving part: re-binned into cells for the next epoch.
        low = float((mu - SPAN * sd).min())
        lo = min(low, boundary - 1e-9)
        stop_edges = lo + (boundary - lo) * _STOP_FRACS
        far_lo, far_hi = _far_edges(mu, sd)
        stop_edges[0], stop_edges[-1] = min(far_lo, lo), boundary
        hi = float((mu + SPAN * sd).max())
        surv_lo = max(boundary, low)
        if hi > surv_lo:
            # Mean-field make-up of the survivors' pending set, advanced
            # from their mean pending count.
            surv = 1.0 - special.ndtr((boundary - mu) / sd)
            ws = w * surv
            if surv.min() >= 1.0 - 1e-12:
                pend = _advance(bins, st, n_w, pend,
                                tuple(x[w_row:][:1] for x in sched))
            elif ws.sum() > 0:
                pend = _advance(bins, st,
                                float(np.dot(ws, n_mean) / ws.sum()), pend)
            # One cell while the survivors are one normal (they came from
            # one cell), all far above the threshold, and their next epoch
            # is the same schedule for all of them.  Otherwise cells that
            # resolve the threshold and the 100 ms steps: survivors from
            # several cells have a shape (two schedules' worth of peaks,
            # say) that one cell's mean and variance would lose for every
            # later round, and the rounds where they reach the threshold
            # depend on it.
            if w.size == 1 and low > boundary + 0.5 and \
                    _smooth(bins, st, surv_lo, hi, pend):
                edges = surv_lo + (hi - surv_lo) * _cell_fracs(1)
            else:
                edges = _cell_edges(bins, st, surv_lo, hi, pend, CELLS)
            edges[-1] = max(far_hi, hi)
            # One call for both parts: the stop cells end at the boundary
            # where the survivor cells start.
            mass, cn, cv = _normal_cells(
                mu, sd, np.concatenate((stop_edges, edges[1:])))
        else:
            mass, cn, cv = _normal_cells(mu, sd, stop_edges)
        sm, sn, sv = (x[:, :STOP_CELLS] for x in (mass, cn, cv))
        sm = sm * w[:, None]
        keep = sm > MASS_EPS * 1e-3
        stop = None
        if keep.any():
            pages = np.maximum(sn, 0.0)
            stop_bw = settings.stop_rate
            down_m = pages * cost[:, None] / stop_bw + \
                settings.stop_overhead
            down_v = sv * (cost[:, None] / stop_bw) ** 2
            stop_b = pages * cost[:, None]
            stop = (sm[keep], (src_s_mean[:, None] + down_m)[keep],
                    (src_s_var[:, None] + down_v)[keep], down_m[keep],
                    down_v[keep], (src_b_mean[:, None] + stop_b)[keep],
                    (src_b_var[:, None] + sv * cost[:, None] ** 2)[keep])
            _add(comps, stop, rnd)
        if hi <= surv_lo:
            w = np.zeros(0)
            break
        cm, cn, cv = (x[:, STOP_CELLS:] for x in (mass, cn, cv))
        cm = cm * w[:, None]
        w, n_mean, n_var, s_mean, s_var, ok = _pool(
            cm, cn, cv, src_s_mean, src_s_var)
        b_mean, b_var = _pool_moments(cm, w, ok, src_b_mean, src_b_var)
        # One spent budget for every survivor: their mean (mean field).
        to_surv = cm.sum(axis=1)
        st["used"] = float(to_surv @ src_used / to_surv.sum()) \
            if to_surv.sum() > 0 else 0.0
        big = ok & (w > MASS_EPS)
        w, n_mean, n_var, s_mean, s_var, b_mean, b_var = \
            w[big], n_mean[big], n_var[big], s_mean[big], s_var[big], \
            b_mean[big], b_var[big]
        if w.size == 0 or w.sum() < TAIL_EPS:
            break
        if horizon is not None and \
                (s_mean - SPAN * np.sqrt(s_var)).min() > horizon:
            break
        # Quasi-stationary regime: the survivors' shape, the per-round stop
        # probability (hazard) and the time per round no longer change, so
        # every later round repeats this one, scaled by (1 - hazard)^j and
        # shifted by j rounds' time: add them in closed form.
        mass_out = w.sum()
        wn = w / mass_out
        elapsed = np.array([np.dot(wn, s_mean), np.dot(wn, s_var),
                            np.dot(wn, b_mean), np.dot(wn, b_var)])
        mean_n = np.dot(wn, n_mean)
        state = np.array([mean_n,
                          np.dot(wn, n_var + (n_mean - mean_n) ** 2),
                          1.0 - mass_out / mass_in, np.nan, np.nan])
        if prev is not None:
            # time (and bytes) added by this round
            added_now = elapsed - prev_elapsed
            state[3:] = added_now[:2]
            if _stationary(prev, state):
                added = _extrapolate(comps, stop, state, mass_out, rnd,
                                     settings.max_rounds, horizon,
                                     elapsed[0], added_now[2:])
                hazard = state[2] if state[2] > HAZARD_FLOOR else 0.0
                w = np.array([mass_out * (1.0 - hazard) ** added])
                break
        prev, prev_elapsed = state, elapsed
    defect = float(w.sum()) if w.size else 0.0
    return _prediction(comps, defect, settings, profile, model_name)


def rate_bins(profile):
    """The model's rate bins of a profile (cached on it): ``rates``
    (writes/s) and ``counts`` (pages), the first two rate-0 bins holding
    the zero pages and the other idle pages."""
    return _start(profile)[0]


def _start(profile):
    """The profile's rate bins and its first epoch's pending set (every
    page), cached on the profile like its layout: a profile is not changed
    once built, and the planner predicts it many times."""
    cache = profile.__dict__.setdefault("_layout_cache", {})
    key = ("start", COMPUTE_BITS)
    if key not in cache:
        bins = _Bins(profile)
        cache[key] = (bins, _Pending.everything(
            _Layout.for_profile(profile, bins)))
    return cache[key]


def _add(comps, stop, rnd):
    w, tm, tv, dm, dv, bm, bv = stop
    comps["bytes_m"].append(bm)
    comps["bytes_v"].append(bv)
    comps["w"].append(w)
    comps["total_m"].append(tm)
    comps["total_v"].append(tv)
    comps["down_m"].append(dm)
    comps["down_v"].append(dv)
    comps["round"].append(np.full(w.size, float(rnd)))


# Relative tolerances of the stationarity test for: mean of n, variance of n
# (re-binning makes it wobble by a few per cent), hazard, time per round and
# its variance.  A hazard below HAZARD_FLOOR is rounding noise: zero.
_STATIONARY_RTOL = np.array([1e-4, 0.1, 1e-2, 1e-4, 0.1])
HAZARD_FLOOR = 1e-12


def _stationary(prev, state):
    """Same survivor shape (n mean and variance), hazard and time added per
    round as the round before."""
    if np.isnan(prev[3]):
        return False
    tol = _STATIONARY_RTOL * np.abs(prev)
    tol[2] = max(tol[2], HAZARD_FLOOR)
    tol[4] = max(tol[4], 1e-9)
    return bool((np.abs(state - prev) <= tol).all())


def _extrapolate(comps, stop, state, mass_out, rnd, max_rounds, horizon,
                 elapsed, bytes_per_round):
    """Append the stop components of rounds rnd+1, rnd+2, ... of a
    stationary chain (each adding ``bytes_per_round`` = (mean, variance)
    bytes); returns how many rounds were added."""
    hazard, tau, vtau = state[2], state[3], max(state[4], 0.0)
    if stop is None or hazard <= HAZARD_FLOOR:
        return max_rounds - rnd
    j_max = max_rounds - rnd
    if hazard < 1:
        # Beyond this the survivor mass is negligible.
        j_max = min(j_max, int(np.ceil(
            np.log(MASS_EPS / max(mass_out, 1e-300)) / np.log1p(-hazard))))
    if horizon is not None and tau > 0:
        j_max = min(j_max, int(np.ceil((horizon - elapsed) / tau)) + 1)
    j_max = max(j_max, 0)
    if j_max == 0:
        return 0
    j = np.arange(1, j_max + 1, dtype=np.float64)
    w, tm, tv, dm, dv, bm, bv = stop
    scale = (1.0 - hazard) ** j
    beta, vbeta = bytes_per_round[0], max(bytes_per_round[1], 0.0)
    comps["bytes_m"].append((bm[None, :] + beta * j[:, None]).ravel())
    comps["bytes_v"].append((bv[None, :] + vbeta * j[:, None]).ravel())
    comps["w"].append(np.outer(scale, w).ravel())
    comps["total_m"].append((tm[None, :] + tau * j[:, None]).ravel())
    comps["total_v"].append((tv[None, :] + vtau * j[:, None]).ravel())
    comps["down_m"].append(np.tile(dm, j.size))
    comps["down_v"].append(np.tile(dv, j.size))
    comps["round"].append(np.repeat(rnd + j, w.size))
    return j_max


def _prediction(comps, defect, settings, profile, model_name):
    if comps["w"]:
        cw = np.concatenate(comps["w"])
        tm, tv = np.concatenate(comps["total_m"]), np.concatenate(
            comps["total_v"])
        dm, dv = np.concatenate(comps["down_m"]), np.concatenate(
            comps["down_v"])
        rd = np.concatenate(comps["round"])
        bytes_m = np.concatenate(comps["bytes_m"])
        bytes_v = np.concatenate(comps["bytes_v"])
    else:
        cw = tm = tv = dm = dv = rd = bytes_m = bytes_v = np.zeros(0)
    # The four outcomes share their components' weights.
    dist = Distribution.sharing_weights(cw, max(defect, 1.0 - cw.sum()))
    total = dist(tm, np.sqrt(tv))
    so = settings.stop_overhead
    stop_bw = settings.stop_rate
    # The stop-and-copy sends at most ceil(threshold) - 1 full pages.
    most = (np.ceil(settings.threshold_pages(profile.page_size)) - 1) * \
        (profile.page_size + PAGE_HEADER_BYTES) / stop_bw
    return Prediction(
        total_time=total,
        downtime=dist(dm, np.sqrt(dv), (so, so + max(most, 0.0))),
        bytes_sent=dist(bytes_m, np.sqrt(bytes_v)),
        rounds=dist(rd, 0.0),
        settings=settings, model=model_name, coarse=profile.coarse)
