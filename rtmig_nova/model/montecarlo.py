"""Page-level Monte-Carlo simulation of QEMU's pre-copy migration.

Each run follows the algorithm of :mod:`rtmig_nova.model.precopy` page by page:
a pending bitmap, a cursor, the send order, a pending check every
``check_interval`` of sending, a bitmap sync when fewer than the threshold's
worth of pages are left, and the write process of every active page sampled
exactly: a Poisson page's first write after a given instant is exponential (the
process is memoryless); a periodic page is written at phase + k/rate seconds
since the migration started, its phase uniform in [0, 1/rate) once per run, so
the correlation between its epochs (written late in one, not early in the next)
is kept, which the analytic model's mean field drops. It is the reference the
analytic model is validated against, and slow where that one is fast."""

import numpy as np

from rtmig_nova import bounds
from rtmig_nova.model.analytic import run_out_time, window_left_over
from rtmig_nova.model.distribution import Distribution
from rtmig_nova.model.precopy import PAGE_HEADER_BYTES, ZERO_PAGE_BYTES
from rtmig_nova.model.prediction import Prediction


class _Guest:
    """Per-page data shared by all runs."""

    def __init__(self, profile, settings, rng):
        rates, periodic = profile.page_layout(rng)
        self.n = rates.size
        self.rates = rates
        zero = np.zeros(self.n, dtype=bool)
        if profile.zero_pages:
            # Which idle pages hold zeros is not recorded: draw them.
            idle = np.flatnonzero(rates == 0)
            zero[rng.choice(idle, profile.zero_pages, replace=False)] = True
        self.cost = np.where(zero, ZERO_PAGE_BYTES,
                             profile.page_size + PAGE_HEADER_BYTES)
        # Poisson pages in ``active``, periodic ones in ``ring``.
        if periodic is None:
            periodic = np.zeros(self.n, dtype=bool)
        self.active = np.flatnonzero((rates > 0) & ~periodic)
        self.active_rates = rates[self.active]
        self.ring = np.flatnonzero((rates > 0) & periodic)
        self.period = 1.0 / rates[self.ring]            # seconds
        if settings.order == "rate":
            # Rank of each page in increasing-rate order (ties by address).
            self.rank = np.empty(self.n, dtype=np.int64)
            self.rank[np.argsort(rates, kind="stable")] = np.arange(self.n)
        self.threshold = settings.threshold_pages(profile.page_size)
        self.send_rate = settings.send_rate(profile.page_size)     # bytes/s


def _send_order(guest, settings, pending_idx, cursor):
    """Pending page ids (ascending address) in the order they are sent."""
    if settings.order == "rate":
        return pending_idx[np.argsort(guest.rank[pending_idx])]
    split = np.searchsorted(pending_idx, cursor)
    return np.concatenate((pending_idx[split:], pending_idx[:split]))


def _epoch(guest, settings, seq, used=0.0):
    """Send pages in order ``seq`` until the pending check says sync.

    ``used``: bytes of the current rate-limit window's budget spent when
    the epoch starts.  QEMU's window runs on across a sync: after a pending
    set runs out mid-window the next epoch has only the window's rest
    before it sleeps to the window's end (``migration_rate_limit``), and
    the check that follows opens a fresh window.  Where the budget goes
    in bursts (``burst_rate``), the window's time spent is ``used`` at the
    burst rate; an evenly paced link (no ``burst_rate``) is taken to start
    every epoch on a fresh window.

    Returns (pages sent, epoch length seconds, bytes sent, start time of each
    sent page within the epoch in seconds, window budget spent at its end).
    """
    bw = guest.send_rate
    dt = settings.check_interval
    burst = settings.burst_rate
    carry = burst is not None and burst > bw
    used = float(used) if carry else 0.0
    cost = guest.cost[seq]
    cum = np.cumsum(cost)
    total = float(cum[-1])
    window = bw * dt
    n_checks = max(int(np.ceil((total + used) / window)), 1)
    # Check j comes at the end of window j (window 0: the current one's
    # rest), when budget[j] bytes may have gone.
    budget = window * np.arange(1, n_checks + 1) - used
    sent_at = np.searchsorted(cum, budget, side="right")
    hit = np.flatnonzero(seq.size - sent_at < guest.threshold)
    # The last check always finds every page sent, so hit is never empty
    # unless the threshold is 0 pages; then QEMU syncs when none is left.
    k = hit[0] if hit.size else n_checks - 1
    sent = int(sent_at[k])
    tau0 = used / burst if carry else 0.0
    if sent >= seq.size:
        sent, nbytes = seq.size, total
        length = float(run_out_time(total, bw, dt, burst, used))
        used = float(window_left_over(total, bw, dt, burst, used))
    else:
        length = (dt - tau0) + k * dt
        nbytes = float(cum[sent - 1]) if sent else 0.0
        used = 0.0
    starts = (cum[:sent] - cost[:sent]) / bw
    return sent, length, nbytes, starts, used


class _OutOfWork(Exception):
    """A run needed more rounds than the work bound left it."""


def _run(guest, settings, rng, first, rounds):
    """One migration, of at most ``rounds`` (<= max_rounds) rounds: beyond
    them :class:`_OutOfWork` if ``rounds`` < max_rounds.  Returns (total
    s, downtime s, bytes, rounds)."""
    elapsed, nbytes = 0.0, 0.0
    seq, sent, length, ebytes, starts, used = first
    # Periodic pages: one phase per run (seconds after the start).
    phase = rng.random(guest.ring.size) * guest.period if guest.ring.size \
        else None
    for rnd in range(1, settings.max_rounds + 1):
        if rnd > rounds:
            raise _OutOfWork()
        t0 = elapsed                        # the epoch's start, seconds
        elapsed += length
        nbytes += ebytes
        # Pages written during the epoch: first write after the epoch start
        # (sync) or, with a cleared log, after the page's own send.
        first_write = rng.standard_exponential(guest.active.size) \
            / guest.active_rates
        clear = settings.dirty_log == "clear" and sent
        if clear:
            window = np.full(guest.n, length)
            window[seq[:sent]] = length - starts
            written = guest.active[first_write < window[guest.active]]
        else:
            written = guest.active[first_write < length]
        mask = np.zeros(guest.n, dtype=bool)
        mask[seq[sent:]] = True
        mask[written] = True
        if phase is not None:
            # Written in [t0 + offset, t0 + length) iff its next write
            # after t0 + offset comes within the rest of the epoch.
            win = window[guest.ring] if clear else length
            since = t0 + length - win
            nxt = np.mod(phase - since, guest.period)
            mask[guest.ring[(nxt < win) | (win >= guest.period)]] = True
        pending_idx = np.flatnonzero(mask)
        if pending_idx.size < guest.threshold:
            stop_bytes = float(guest.cost[pending_idx].sum())
            downtime = stop_bytes / settings.stop_rate + \
                settings.stop_overhead
            return elapsed + downtime, downtime, nbytes + stop_bytes, rnd
        cursor = seq[sent - 1] + 1 if sent else (seq[0] if seq.size else 0)
        seq = _send_order(guest, settings, pending_idx, cursor)
        sent, length, ebytes, starts, used = _epoch(guest, settings, seq,
                                                    used)
    return np.inf, np.inf, np.inf, np.inf


def simulate(profile, settings, runs=1000, seed=None, progress=None,
             model_name="montecarlo"):
    """Simulate ``runs`` migrations of ``profile`` under ``settings``.

    :param progress: optional callable ``progress(done, total)``
    :returns: a :class:`Prediction` of empirical distributions
    """
    if isinstance(runs, bool) or not isinstance(runs, (int, np.integer)) \
            or runs < 1:
        raise ValueError(f"runs must be an integer >= 1, got {runs!r}")
    # Refused before the per-page arrays exist (a 1 TiB guest would need
    # about 16 GiB of them).
    bounds.SIMULATED_PAGES.check(profile.total_pages, "simulate: profile "
                                 "pages")
    rng = np.random.default_rng(seed)
    guest = _Guest(profile, settings, rng)
    # The first pass is the same in every run: all pages from address 0.
    seq = np.arange(guest.n) if settings.order == "address" else \
        np.argsort(guest.rank)
    first = (seq,) + _epoch(guest, settings, seq)
    out = np.empty((runs, 4))
    # Rounds simulated, counted against bounds.SIMULATION_WORK (each goes
    # over every page): the results of a simulation within it are the same.
    budget = bounds.SIMULATION_WORK.high // max(guest.n, 1)
    for i in range(runs):
        try:
            out[i] = _run(guest, settings, rng, first,
                          min(settings.max_rounds, budget))
        except _OutOfWork:
            raise bounds.BoundError(
                f"simulate: more than {bounds.SIMULATION_WORK.high} "
                f"page-rounds after {i} of {runs} runs of {guest.n} pages: "
                f"outside the {bounds.SIMULATION_WORK.what} range, "
                f"{bounds.SIMULATION_WORK.range_text} "
                f"({bounds.SIMULATION_WORK.why}); take fewer runs, fewer "
                f"rounds or a coarser profile") from None
        rounds = settings.max_rounds if not np.isfinite(out[i, 3]) \
            else int(out[i, 3])
        budget -= rounds
        if progress is not None:
            progress(i + 1, runs)
    return Prediction(
        total_time=Distribution.empirical(out[:, 0]),
        downtime=Distribution.empirical(out[:, 1]),
        bytes_sent=Distribution.empirical(out[:, 2]),
        rounds=Distribution.empirical(out[:, 3]),
        settings=settings, model=model_name, coarse=profile.coarse)
