"""Sizing a migration's reservations: the inverse of the model.

Given a deadline T, a downtime bound D and a confidence p, find the least
bandwidth B and the downtime-limit setting d such that
P(total time <= T and downtime <= D) >= p, and the CPU the migration thread
needs to push B.

The downtime-limit bounds the downtime by construction: QEMU stops only when
the pending pages times the page size are below R x d (R: QEMU's measured
bandwidth, its send rate, a little above the limit B), so the stop-and-copy
sends fewer than R d / page_size pages of page_size + 8 bytes and, at B,
lasts less than d (R / B) (page_size + 8) / page_size plus the switch-over
time.  The largest d that keeps that within D is the best choice (a higher
threshold converges sooner), rounded down to whole milliseconds because QEMU
and libvirt take the limit in ms; it depends on B only through R / B.  Then
P(downtime <= D) = P(converged), and B is the least bandwidth with
P(total <= T) >= p, found on the bandwidth grid by a search that the
model's mean path guides and the model decides (docs/model.md).
"""

import dataclasses
import math

import numpy as np
from scipy import special

from rtmig_nova import bounds
from rtmig_nova.model import analytic
from rtmig_nova.model import laws
from rtmig_nova.model import uncertainty
from rtmig_nova.model import variants
from rtmig_nova.model.baselines import first_pass_bytes
from rtmig_nova.model.checks import positive
from rtmig_nova.model.precopy import CHECK_INTERVAL, \
    DEFAULT_QEMU_VERSION, MigrationSettings, PAGE_HEADER_BYTES, \
    ZERO_PAGE_BYTES, send_rate, stop_overhead

MIB = 2 ** 20
# Default CPU time the migration thread spends per page sent, seconds (zero
# check, copy into the socket, TCP): 2.5 us, about 1.6 GB/s of 4 KiB pages
# on one core.  Calibrated per host by the testbed (rtmig experiment).
DEFAULT_CPU_COST_PER_PAGE = 2.5e-6
DEFAULT_CPU_MARGIN = 1.25
DEFAULT_DEADLINE_PERIOD = 0.01          # seconds (SCHED_DEADLINE period)
DEFAULT_CGROUP_PERIOD_US = 100000       # microseconds (CFS default period)
SCHED_DEADLINE_MIN_RUNTIME_NS = 1024    # kernel: runtime >= 1 << DL_SCALE


@dataclasses.dataclass
class CpuReservation:
    """CPU for the migration thread, as a share of one CPU and in the two
    forms the enforcement layer applies."""
    share: float                 # fraction of one CPU
    runtime_ns: int              # SCHED_DEADLINE runtime, ns
    deadline_ns: int             # SCHED_DEADLINE deadline, ns
    period_ns: int               # SCHED_DEADLINE period, ns
    quota_us: int                # cgroup CPU quota, us
    cgroup_period_us: int        # cgroup CPU period, us


@dataclasses.dataclass
class Plan:
    """The reservations a migration needs.

    :ivar feasible: whether the request can be met
    :ivar reason: why not (empty if feasible)
    :ivar bandwidth: migration bandwidth, bytes/s (whole MiB/s, libvirt's
        unit); for an infeasible plan, the link capacity (the best there is)
    :ivar downtime_limit: QEMU downtime-limit to set, seconds (whole ms);
        ``None`` when the request fails before one can be chosen
    :ivar cpu: :class:`CpuReservation` for ``bandwidth``
    :ivar probability: P(total <= deadline and downtime <= max_downtime)
        at ``bandwidth``
    :ivar prediction: the model's prediction at ``bandwidth``
    """
    feasible: bool
    reason: str
    bandwidth: float
    downtime_limit: float
    cpu: CpuReservation
    probability: float
    prediction: object
    deadline: float
    max_downtime: float
    confidence: float
    link_capacity: float
    model: str = "precopy"
    settings: dict = dataclasses.field(default_factory=dict)
    cpu_cost_per_page: float = DEFAULT_CPU_COST_PER_PAGE
    cpu_margin: float = DEFAULT_CPU_MARGIN

    @property
    def cpu_share(self):
        """Share of one CPU the migration thread needs."""
        return self.cpu.share

    def to_dict(self):
        return {
            "feasible": self.feasible,
            "reason": self.reason,
            "bandwidth_bytes_per_s": self.bandwidth,
            "downtime_limit_s": self.downtime_limit,
            "probability": self.probability,
            "cpu": dataclasses.asdict(self.cpu),
            "request": {"deadline_s": self.deadline,
                        "max_downtime_s": self.max_downtime,
                        "confidence": self.confidence,
                        "link_capacity_bytes_per_s": self.link_capacity,
                        "cpu_cost_per_page_s": self.cpu_cost_per_page,
                        "cpu_margin": self.cpu_margin,
                        "model": self.model,
                        "settings": dict(self.settings)},
            "prediction": self.prediction.to_dict()
            if self.prediction is not None else None,
        }


def cpu_reservation(bandwidth, page_size, cpu_cost_per_page,
                    margin=DEFAULT_CPU_MARGIN,
                    deadline_period=DEFAULT_DEADLINE_PERIOD,
                    cgroup_period_us=DEFAULT_CGROUP_PERIOD_US,
                    qemu_version=DEFAULT_QEMU_VERSION):
    """CPU share for sending ``bandwidth`` bytes/s of full pages.

    share = pages/s x CPU s/page x margin, the pages QEMU ``qemu_version``
    sends under the limit ``bandwidth`` (more than it: precopy.send_rate);
    zero pages cost the same CPU (the zero check) but fewer bytes, so full
    pages give the bound per byte.
    """
    pages_per_s = send_rate(bandwidth, page_size,
                            qemu_version=qemu_version) / \
        (page_size + PAGE_HEADER_BYTES)
    share = pages_per_s * cpu_cost_per_page * margin
    period_ns = int(round(deadline_period * 1e9))
    runtime_ns = max(int(math.ceil(min(share, 1.0) * period_ns)),
                     SCHED_DEADLINE_MIN_RUNTIME_NS)
    quota_us = max(int(math.ceil(min(share, 1.0) * cgroup_period_us)), 1000)
    return CpuReservation(share=share, runtime_ns=min(runtime_ns, period_ns),
                          deadline_ns=period_ns, period_ns=period_ns,
                          quota_us=min(quota_us, cgroup_period_us),
                          cgroup_period_us=int(cgroup_period_us))


def plan(profile, deadline, max_downtime, confidence=0.95,
         link_capacity=None, cpu_cost_per_page=DEFAULT_CPU_COST_PER_PAGE,
         model="precopy", cpu_margin=DEFAULT_CPU_MARGIN,
         deadline_period=DEFAULT_DEADLINE_PERIOD,
         cgroup_period_us=DEFAULT_CGROUP_PERIOD_US,
         bandwidth_step=MIB, **settings):
    """Least reservations that meet a deadline and a downtime bound.

    :param deadline: seconds for the whole migration
    :param max_downtime: seconds the guest may be stopped
    :param confidence: required probability, in (0, 1)
    :param link_capacity: bytes/s the migration link can carry
    :param cpu_cost_per_page: migration-thread CPU seconds per page sent
    :param bandwidth_step: bandwidth granularity, bytes/s (libvirt sets
        migration speed in whole MiB/s)
    :param settings: further :class:`MigrationSettings` fields (dirty_log,
        order, check_interval, switchover_time, max_rounds, setup_time)
    :returns: a :class:`Plan`; an infeasible request is a plan with
        ``feasible=False`` and a ``reason``, not an exception
    """
    deadline = positive("deadline", deadline)
    max_downtime = positive("max_downtime", max_downtime)
    if link_capacity is None:
        raise ValueError("link_capacity is required (bytes/s)")
    link_capacity = positive("link_capacity", link_capacity)
    try:
        ok = 0 < confidence < 1
    except TypeError:
        ok = False
    if not ok or math.isnan(confidence):
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if not (isinstance(cpu_cost_per_page, (int, float))
            and math.isfinite(cpu_cost_per_page) and cpu_cost_per_page >= 0):
        raise ValueError("cpu_cost_per_page must be a finite number >= 0 "
                         "seconds")
    bandwidth_step = positive("bandwidth_step", bandwidth_step)
    predictor = variants.get(model)
    ps = profile.page_size
    switchover = float(settings.get("switchover_time", 0.0))
    backlog = float(settings.get("send_backlog", 0.0))
    setup = float(settings.get("setup_time", 0.0))
    # The time the pre-copy itself has: the deadline less the fixed setup.
    budget = deadline - setup

    qemu = settings.get("qemu_version", DEFAULT_QEMU_VERSION)

    def cpu(bw):
        return cpu_reservation(bw, ps, cpu_cost_per_page, cpu_margin,
                               deadline_period, cgroup_period_us, qemu)

    model_name = getattr(predictor, "name", type(predictor).__name__)

    def result(feasible, reason, bw, limit, pred, prob):
        return Plan(feasible, reason, bw, limit, cpu(bw), prob, pred,
                    deadline, max_downtime, confidence, link_capacity,
                    model_name, dict(settings), cpu_cost_per_page,
                    cpu_margin)

    def infeasible(reason, bw=link_capacity, limit=None, pred=None, prob=0.0):
        return result(False, reason, bw, limit, pred, prob)

    # Largest downtime-limit whose worst-case stop-and-copy fits in D.  QEMU
    # stops with fewer than R d / page_size pending pages (R: the send rate,
    # a little above the limit B, see precopy.send_rate) and sends them at
    # the stop rate (B, or the link's rate when given).
    check_interval = float(settings.get("check_interval", CHECK_INTERVAL))
    link_rate = settings.get("link_rate")

    def limit_ms_for(bw):
        """Whole ms (an int; an array for an array of bandwidths)."""
        # The threshold follows the bytes QEMU measured it sent (the send
        # rate times the host's efficiency); the stop-and-copy runs
        # unlimited, at the stop rate (MigrationSettings.stop_rate).
        stop = bw if link_rate is None else float(link_rate)
        ratio = stop / (send_rate(bw, ps, check_interval, qemu) *
                        float(settings.get("send_efficiency", 1.0)))
        left = max_downtime - stop_overhead(switchover, backlog, stop)
        ms = (left * ps / (ps + PAGE_HEADER_BYTES) * ratio * 1000 +
              1e-9) // 1
        # QEMU refuses a limit above its maximum (a stop rate far above
        # the bandwidth asks for more).
        ms = np.minimum(ms, bounds.QEMU_MAX_DOWNTIME_S * 1000)
        return int(ms) if np.ndim(ms) == 0 else ms

    limit_ms = limit_ms_for(link_capacity)
    if limit_ms < 1:
        backlog_s = backlog / (link_capacity if link_rate is None
                               else float(link_rate))
        return infeasible(
            f"max_downtime {max_downtime:g} s leaves no room for a QEMU "
            f"downtime-limit of at least 1 ms after the switch-over time "
            f"{switchover:g} s" + (f" and the send backlog's {backlog_s:g} s"
                                   if backlog else ""))
    limit = limit_ms / 1000.0

    def settings_for(bw):
        # At least 1 ms: below it (tiny bandwidths only) the prediction
        # says how far off the request is.
        return MigrationSettings(
            bandwidth=bw, downtime_limit=max(limit_ms_for(bw), 1) / 1000.0,
            **settings)

    def success(pred):
        # Downtime is within D whenever the migration converges (see module
        # doc), so the joint probability is P(total <= T).
        return float(pred.total_time.cdf(deadline))

    if budget <= 0:
        return infeasible(f"the setup time {setup:g} s leaves nothing of the "
                          f"deadline {deadline:g} s", limit=limit)
    first_pass = first_pass_bytes(profile)
    if first_pass / link_capacity > budget:
        return infeasible(
            f"the first pass alone ({first_pass / MIB:.1f} MiB) takes "
            f"{first_pass / link_capacity:.3g} s at the link capacity, more "
            f"than the deadline {deadline:g} s"
            + (f" less the setup time {setup:g} s" if setup else ""),
            limit=limit)

    def at_link_capacity(best):
        """The plan when even the link capacity fails, from its
        prediction ``best``."""
        p_best = success(best)
        if best.converges < confidence:
            hot = profile.dirty_pages(max(limit, settings_for(
                link_capacity).check_interval)) * ps
            reason = (f"at the link capacity ({link_capacity / MIB:.1f} "
                      f"MiB/s) the migration converges with probability "
                      f"{best.converges:.3f} < {confidence:g}: about "
                      f"{hot / MIB:.2f} MiB are re-dirtied per round, more "
                      f"than {link_capacity * limit / MIB:.2f} MiB "
                      f"(link x downtime-limit {limit_ms} ms) can be sent "
                      f"within the downtime bound")
        else:
            reason = (f"at the link capacity ({link_capacity / MIB:.1f} "
                      f"MiB/s) P(total <= {deadline:g} s) is only "
                      f"{p_best:.3f} < {confidence:g} (p"
                      f"{round(confidence * 100)} total time "
                      f"{best.total_time.quantile(confidence):.3g} s)")
        return infeasible(reason, limit=limit, pred=best, prob=p_best)

    # Search the least bandwidth on the enforcement grid (k steps) between
    # a failing k (lo) and a succeeding one (hi).  The guesses come from a
    # cheap mean recursion of the pre-copy (_MeanPrecopy) whose time is
    # scaled to match the model's p-quantile at the last evaluation: it
    # lands on or next to the least step, so the search usually needs two
    # model evaluations (the answer and the step below it), the second one
    # the guess's neighbour, tried before rescaling.  A guess off
    # the bracket, or a run of three results on one side, falls back to the
    # bracket's log-midpoint.  Below first_pass / budget nothing succeeds;
    # the link capacity is presumed to succeed until it is evaluated.
    step = bandwidth_step
    top = math.ceil(link_capacity / step - 1e-9)     # k of the link capacity
    lo = max(math.floor(first_pass / budget / step - 1e-9), 0)
    hi = top
    known = {}

    # With the write intensity or the send rate uncertain, a prediction
    # mixes model runs at three send efficiencies (model.uncertainty);
    # away from the convergence cliff the outer two are the middle one
    # rescaled by the mean recursion's times there.
    sd_s = settings.get("write_scale_sd")
    spread = (uncertainty.write_scale_sd(profile) if sd_s is None
              else float(sd_s), float(settings.get("send_rate_sd", 0.0)))
    outer = {}

    def surrogate_at(k):
        def times(effs):
            out = []
            for e in effs:
                g = _outer_guide(e)
                if k not in g.cache:
                    # The search's next steps are k's neighbours: one
                    # vectorised pass for the three.
                    g._compute(np.array([max(k - 1, 1), k, k + 1]))
                out.append(g.time(k))
            return out
        return times

    def _outer_guide(eff):
        if eff == 1.0:
            return guide
        key = round(eff, 12)
        if key not in outer:
            outer[key] = _MeanPrecopy(profile, settings, step,
                                      link_capacity, limit_ms_for, lo, top,
                                      efficiency=eff, coarse=False)
        return outer[key]

    def evaluate(k):
        bw = min(k * step, link_capacity)
        pred = variants.run(
            predictor, profile, settings_for(bw),
            surrogate=surrogate_at(k) if max(spread) > 0 else None)
        # A limit raised to 1 ms does not bound the downtime: a failure.
        prob = success(pred)
        ok = limit_ms_for(bw) >= 1 and prob >= confidence
        known[k] = (pred, ok, prob)
        return ok

    def far_from_budget(k, nk):
        """True when the model's quantile at k is more than two steps'
        worth of time (the mean recursion's, k to nk) from the budget:
        the step next to k is then not the answer, a rescaled guess is
        (a spread's wider quantile lands the first guess off)."""
        if nk < 1:                      # no bandwidth below one step
            return False
        q = known[k][0].total_time.quantile(confidence) - setup
        tk, tn = guide.time(k), guide.time(nk)
        if not (math.isfinite(q) and q > 0 and math.isfinite(tk) and
                math.isfinite(tn) and tk > 0 and tn > 0 and tn != tk):
            return False
        return abs(math.log(q / budget)) > 2 * abs(math.log(tn / tk))

    guide = _MeanPrecopy(profile, settings, step, link_capacity,
                         limit_ms_for, lo, top)
    # log(model's p-quantile / mean recursion's time) at the last
    # evaluation with both finite.
    scale = 0.0
    if max(spread) > 0:
        # The spread moves the quantile the search aims at: from the mean
        # recursion at the nodes, before the first model run.
        first = guide.least_k(budget, lo, hi)
        if first is not None:
            times = surrogate_at(first)(uncertainty.node_efficiencies(
                *spread, settings.get("send_efficiency", 1.0)))
            if all(math.isfinite(t) and t > 0 for t in times):
                scale = uncertainty.quantile_shift(times, *spread,
                                                   confidence)
    last = neighbour = None
    side, run_len = None, 0
    while hi - lo > 1 or hi not in known:
        guided = False
        if hi - lo <= 1:
            k = hi                          # the link capacity, unevaluated
        elif neighbour is not None and lo < neighbour < hi:
            # The step next to a guided guess, towards the answer: usually
            # the other end of the final bracket, so no rescaling needed.
            k = neighbour
        else:
            if last is not None:
                q = known[last][0].total_time.quantile(confidence) - setup
                t = guide.time(last)
                if math.isfinite(q) and q > 0 and math.isfinite(t):
                    scale = math.log(q / t)
            guess = guide.least_k(budget * math.exp(-scale), lo, hi)
            k = None if guess is None else max(guess, lo + 1)
            if guess is None and hi not in known:
                k = hi          # hopeless by the guide: try the link first
            elif k is None or k > hi or run_len >= 2:
                k = round(math.sqrt(max(lo, 1) * hi))
            else:
                guided = True
            k = min(max(k, lo + 1), hi if hi not in known else hi - 1)
        ok = evaluate(k)
        if not ok and k == top:
            return at_link_capacity(known[top][0])
        if ok:
            hi = k
        else:
            lo = k
        run_len = run_len + 1 if ok == side else 0
        side, last = ok, k
        neighbour = (k - 1 if ok else k + 1) if guided else None
        if neighbour is not None and far_from_budget(k, neighbour):
            neighbour = None
    pred, _, prob = known[hi]
    bw = min(hi * step, link_capacity)
    limit = max(limit_ms_for(bw), 1) / 1000.0
    res = cpu(bw)
    if res.share > 1.0:
        return infeasible(
            f"the migration thread needs {res.share:.2f} CPUs to send "
            f"{bw / MIB:.1f} MiB/s at {cpu_cost_per_page:g} s/page (margin "
            f"{cpu_margin:g}); one thread has one CPU", bw, limit, pred, prob)
    return result(True, "", bw, limit, pred, prob)


@dataclasses.dataclass(frozen=True)
class MeanStart:
    """Where a running pre-copy is, for :class:`_MeanPrecopy`.

    :ivar pending: bytes of RAM still to send in the epoch under way (as
        libvirt counts them: pages x page size, zero pages included)
    :ivar epoch_elapsed: seconds since that epoch's bitmap sync (its
        writes so far count in the next epoch's pending pages)
    :ivar first_pass: the epoch is the first pass (its pending pages are
        an even share of all of RAM, not dirtied ones)
    """
    pending: float
    epoch_elapsed: float
    first_pass: bool


class _MeanPrecopy:
    """Pre-copy time (s, without the setup) of the model's mean path, on
    the bandwidth grid k x step: expected pending pages per rate bin, each
    epoch sending until the first check with fewer than the threshold left
    and carrying the rest over (an even share of every bin, as address
    order does on average), until the pending pages at a sync are below
    the threshold.  It has no spread and no address layout, so it only
    guides the planner's search (scaled to the model's p-quantile); it
    never decides it.  Vectorised over bandwidths, cached per k.

    The closed loop (:mod:`~rtmig_nova.model.replan`) runs it from a
    running migration's observed ``start`` (:class:`MeanStart`) instead of
    the first page, with every write rate times ``scale`` and QEMU sending
    ``efficiency`` times its send rate.
    """

    COARSE = 17             # log-spaced bandwidths over the whole bracket
    BATCH = 16              # bandwidths per refining call
    STALL = 1e-3            # relative drop per round below which it stalls

    def __init__(self, profile, settings, step, link_capacity, limit_ms_for,
                 lo, top, start=None, scale=1.0, efficiency=1.0,
                 coarse=True):
        # The model's rate bins (cached on the profile) without its two
        # rate-0 bins.
        bins = analytic.rate_bins(profile)
        self.neg_rates = -bins.rates[2:] * float(scale)
        self.counts = bins.counts[2:]
        # None when every bin is Poisson: exp() directly, as before
        self.periodic = None if bins.periodic is None else \
            bins.periodic[2:]
        self.start = start
        self.efficiency = float(efficiency)
        self.first_pass = first_pass_bytes(profile)
        self.idle = float(profile.idle_pages)
        self.total_pages = float(profile.total_pages)
        self.zero = float(profile.zero_pages)
        self.ps = profile.page_size
        self.page = self.ps + PAGE_HEADER_BYTES
        self.dt = float(settings.get("check_interval", CHECK_INTERVAL))
        self.qemu = settings.get("qemu_version", DEFAULT_QEMU_VERSION)
        self.switchover = float(settings.get("switchover_time", 0.0))
        self.backlog = float(settings.get("send_backlog", 0.0))
        self.link_rate = settings.get("link_rate")
        self.max_rounds = int(settings.get("max_rounds", 200))
        self.step, self.link = step, link_capacity
        self.limit_ms_for = limit_ms_for
        self.cache = {}
        a, b = max(lo, 1), max(top, 2)
        self.coarse = np.array(sorted({
            round(a * (b / a) ** (i / (self.COARSE - 1)))
            for i in range(self.COARSE)}), dtype=np.int64)
        if coarse:
            self._compute(self.coarse)

    def time(self, k):
        """Pre-copy time at k x step, seconds (inf: no convergence)."""
        if k not in self.cache:
            self._compute(np.array([k]))
        return self.cache[k]

    def least_k(self, target, lo, hi):
        """Least k in (lo, hi] whose time is <= target seconds, by the
        coarse grid and refining batches; None if there is none."""
        ks = self.coarse[(self.coarse > lo) & (self.coarse <= hi)]
        if ks.size == 0 or ks[-1] < hi:
            ks = np.append(ks, hi)
        self._compute(ks)
        ok = np.array([self.cache[k] <= target for k in ks.tolist()])
        if not ok.any():
            return None
        i = int(np.argmax(ok))
        a, b = (int(ks[i - 1]) if i > 0 else lo), int(ks[i])
        while b - a > 1:
            # Next to where log time crosses log target between a and b,
            # if a's time is known; else spread over (a, b).
            ta, tb = self.cache.get(a, math.inf), self.cache[b]
            inner = np.zeros(0, dtype=np.int64)
            if math.isfinite(ta) and ta > tb > 0 and b - a > self.BATCH // 2:
                c = a + round((b - a) * math.log(ta / target) /
                              math.log(ta / tb))
                inner = np.arange(c - self.BATCH // 4, c + self.BATCH // 4)
                inner = inner[(inner > a) & (inner < b)]
            if inner.size == 0:
                inner = np.array(sorted({
                    a + round((b - a) * (j + 1) / (self.BATCH + 1))
                    for j in range(self.BATCH)} - {a, b}), dtype=np.int64)
            self._compute(inner)
            ok = [self.cache[k] <= target for k in inner.tolist()]
            good = [k for k, g in zip(inner.tolist(), ok) if g]
            bad = [k for k, g in zip(inner.tolist(), ok) if not g]
            b = min(good) if good else b
            a = max([k for k in bad if k < b], default=a)
        return b

    def _compute(self, ks):
        ks = np.asarray([k for k in ks.tolist() if k not in self.cache],
                        dtype=np.int64)
        if ks.size == 0:
            return
        bw = np.minimum(ks * self.step, self.link)
        send = send_rate(bw, self.ps, self.dt, self.qemu) * self.efficiency
        limit = np.maximum(self.limit_ms_for(bw), 1) / 1000.0
        h = send * limit / self.ps
        stop = bw if self.link_rate is None else float(self.link_rate)
        # Unlimited, so not scaled by the send efficiency (as
        # MigrationSettings.stop_rate).
        stop = np.broadcast_to(stop, bw.shape)
        over = stop_overhead(self.switchover, self.backlog, stop)
        out = np.full(bw.shape, np.inf)
        window = send * self.dt                             # bytes
        # The epoch under way: the first pass (every page) unless started
        # from an observation.  QEMU syncs at the first check with fewer
        # than h pages left (or none), the unsent share carried over.
        st = self.start
        if st is None:
            left, share = self.first_pass, 1.0
        elif st.first_pass:
            # libvirt counts RAM bytes; the wire carries zero pages in 9 B
            share = min(max(float(st.pending), 0.0) /
                        max(self.ps * self.total_pages, 1.0), 1.0)
            left = share * self.first_pass
        else:
            left = max(float(st.pending), 0.0) / self.ps * self.page
        st = st or MeanStart(0.0, 0.0, True)
        checks = np.floor(np.maximum(left - h * self.page, 0) /
                          window) + 1
        sent_t = np.where(checks * window >= left,
                          analytic.run_out_time(left, send, self.dt,
                                                self.link_rate),
                          checks * self.dt)
        T = sent_t + st.epoch_elapsed         # the epoch's writes count
        if st.first_pass:
            kept = share * (1 - np.minimum(checks * window / max(left, 1e-300),
                                           1))
            rem = np.multiply.outer(kept, self.counts)      # (K, bins)
            idle = kept * self.idle            # never written, still unsent
            zero = kept * self.zero            # of which zero pages (9 B)
        else:
            # Dirtied pages pending, spread over the bins as an epoch as
            # long as this one dirties them.
            w = self.counts * laws.dirty_prob(
                max(st.epoch_elapsed, self.dt), -self.neg_rates,
                self.periodic)
            pages = left / self.page
            w = np.minimum(w / max(w.sum(), 1e-300) * pages, self.counts)
            kept = 1 - np.minimum(checks * window / max(left, 1e-300), 1)
            rem = np.multiply.outer(kept, w)
            # what the bins cannot hold: pages the profile has no writes for
            idle = kept * max(pages - float(w.sum()), 0.0)
            zero = np.zeros(bw.shape)
        total = sent_t.copy()
        # The window budget spent when the next epoch starts (QEMU's window
        # runs on across a sync: analytic.window_left_over).
        used = np.where(checks * window >= left, analytic.window_left_over(
            np.broadcast_to(left, bw.shape), send, self.dt, self.link_rate),
            0.0)
        prev = np.full(bw.shape, np.inf)
        active = np.ones(bw.shape, dtype=bool)
        for _ in range(self.max_rounds):
            # Pending at the sync: unsent, or written in the epoch (all but
            # the share e = 1 - P(written in T) of the others).
            if self.periodic is None:
                e = np.exp(np.multiply.outer(T, self.neg_rates))
            else:
                e = 1.0 - laws.dirty_prob(T, -self.neg_rates, self.periodic)
            fresh_e = (self.counts - rem) * e
            pend = self.counts - fresh_e
            n = pend.sum(axis=1) + idle
            nbytes = n * self.page - zero * (self.page - ZERO_PAGE_BYTES)
            conv = active & (n < h)
            out[conv] = total[conv] + nbytes[conv] / stop[conv] + \
                over[conv]
            # At a fixed point above the threshold only a low draw of the
            # written pages (Poisson-binomial, taken as normal) lets it
            # converge: a geometric number of further epochs.
            stall = active & ~conv & (n >= prev * (1 - self.STALL))
            if stall.any():
                sd = np.sqrt(np.maximum((fresh_e - fresh_e * e).sum(axis=1),
                                        1e-12))
                hit = special.ndtr((np.ceil(h) - 0.5 - n) / sd)
                go = stall & (hit > 1e-9)
                out[go] = total[go] + (1 / hit[go] - 1) * T[go] + \
                    h[go] * self.page / stop[go] + over[go]
            active &= ~conv & ~stall
            if not active.any():
                break
            # Sync at the first check with fewer than h pages left, or when
            # every page is sent; the rest (an even share) is carried over.
            need = np.maximum(n - h, 0) * nbytes / np.maximum(n, 1e-300)
            checks = np.floor((need + used) / window) + 1
            sent = checks * window - used
            out_of_work = sent >= nbytes
            lead = 0.0 if self.link_rate is None else \
                used / np.maximum(self.link_rate, send)
            T = np.where(out_of_work,
                         analytic.run_out_time(nbytes, send, self.dt,
                                               self.link_rate, used),
                         checks * self.dt - lead)
            used = np.where(out_of_work, analytic.window_left_over(
                nbytes, send, self.dt, self.link_rate, used), 0.0)
            # The unsent share; none when every byte went (nbytes can be 0:
            # dividing by a floor of 1e-300 overflowed to inf there).
            kept = np.where(nbytes > sent,
                            1 - sent / np.where(nbytes > sent, nbytes, 1.0),
                            0.0)
            rem = pend * kept[:, None]
            idle = idle * kept
            zero = zero * kept
            total += T
            prev = n
        self.cache.update(zip(ks.tolist(), out.tolist()))
