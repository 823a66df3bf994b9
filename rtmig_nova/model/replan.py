"""Closed-loop re-planning of a running pre-copy migration.

Stock Nova only steps the downtime limit up while a migration runs.  Here
the plan's prediction is held against what the migration's job reports
(libvirt's job stats: bytes remaining in the epoch under way, bytes sent,
bitmap syncs, QEMU's dirty rate) and, when the migration's projected total
leaves the plan's band, the rest of the migration is re-planned from what
is observed:

- the write rates are rescaled so that the profile shows the dirty rate
  QEMU measured (:func:`write_scale`), and the send rate is what the job
  achieved (a slower link or a starved migration thread: ``efficiency``);
- the rest of the pre-copy is the model's mean path (the planner's guide,
  :class:`~rtmig_nova.model.sizing._MeanPrecopy`) started where the job is,
  stretched to the plan's confidence by the ratio the plan itself showed
  between the model's quantile and its mean path;
- the least bandwidth (whole MiB/s, never below the current one, never
  above the ``ceiling``: the host's reserved migration link share and
  what its admitted migration CPU can push, :func:`bandwidth_ceiling`)
  that meets the deadline is chosen; if none, the ceiling if the deadline
  still holds in expectation, else the migration should be aborted now
  rather than at its deadline.

The downtime limit stays the plan's: it bounds the downtime whatever the
bandwidth (:mod:`~rtmig_nova.model.sizing`).  Pure: numbers in, a
:class:`Replan` out.
"""

import dataclasses
import math

from rtmig_nova.model import sizing
from rtmig_nova.model.precopy import DEFAULT_QEMU_VERSION, \
    PAGE_HEADER_BYTES, send_rate
from rtmig_nova.model.profile import DirtyProfile

MIB = sizing.MIB
KEEP, RAISE, ABORT = "keep", "raise", "abort"
# Below this share of its send rate the job is taken as stalled (no
# bandwidth can make up for it).
STALLED = 0.02
# The band's upper edge: the plan's mean path plus this share (restarted
# mid-way, it reproduces itself to about 0.1%; a real job's readings wobble
# more).
BAND_TOLERANCE = 0.01
# Send rates this close to the plan's are the plan's (QEMU's pacing and its
# bitmap syncs vary a job's rate by that much), and write rates this close
# to the profile's are the profile's (QEMU measures its dirty rate over
# one epoch).
SEND_TOLERANCE = 0.1
WRITE_TOLERANCE = 0.2
# A write-rate scale search's range (rates x 1e-6 .. x 1e6).
_SCALE_RANGE = (1e-6, 1e6)
# A dirty rate this many times what the profile shows over the same epoch
# (or writes beyond its working set) refutes it: a mean path from the
# profile rescaled that far, fitted to one epoch's reading, is no basis for
# the least bandwidth, and a raise takes the ceiling.  Seen on a real job:
# a guest's writes jumped x100 mid-way, the least bandwidth of each reading
# (12, then 19 MiB/s) fell behind the next, and the loop aborted past the
# deadline.
REFUTED_DIRTY = 4.0


@dataclasses.dataclass(frozen=True)
class Observation:
    """What a running migration's job says.

    :ivar elapsed: seconds since the job started (libvirt's time_elapsed)
    :ivar remaining: bytes still to send in the epoch under way
        (memory_remaining)
    :ivar processed: bytes sent so far (memory_processed)
    :ivar iteration: bitmap syncs so far (memory_iteration; 1: first pass)
    :ivar dirty_rate: bytes/s QEMU measured at its last syncs, None before
        it has measured one (memory_dirty_rate x memory_page_size)
    :ivar send_rate: bytes/s sent over the last interval, None unknown
    :ivar epoch_elapsed: seconds since the epoch under way began
    :ivar epoch_time: seconds an epoch lasted lately (QEMU's dirty-rate
        window), None unknown
    """
    elapsed: float
    remaining: float
    processed: float
    iteration: int
    dirty_rate: float = None
    send_rate: float = None
    epoch_elapsed: float = 0.0
    epoch_time: float = None

    def to_dict(self):
        return {"elapsed_s": self.elapsed,
                "remaining_bytes": self.remaining,
                "processed_bytes": self.processed,
                "iteration": self.iteration,
                "dirty_rate_bytes_per_s": self.dirty_rate,
                "send_rate_bytes_per_s": self.send_rate,
                "epoch_elapsed_s": self.epoch_elapsed,
                "epoch_time_s": self.epoch_time}


def job_numbers(stats):
    """``(elapsed s, remaining bytes, processed bytes, iteration,
    dirty rate bytes/s or None)`` of a libvirt job-stats dict (its typed
    parameter names; absent ones count as 0)."""
    def num(key):
        v = stats.get(key, 0)
        return float(v) if isinstance(v, (int, float)) and \
            math.isfinite(v) and v >= 0 else 0.0
    iteration = int(num("memory_iteration"))
    rate = num("memory_dirty_rate") * (num("memory_page_size") or 4096)
    # QEMU reports a dirty rate from its second sync on
    return (num("time_elapsed") / 1000.0, num("memory_remaining"),
            num("memory_processed"), iteration,
            rate if iteration >= 2 else None)


@dataclasses.dataclass(frozen=True)
class Replan:
    """A re-planning decision.

    :ivar decision: ``keep``, ``raise`` or ``abort``
    :ivar reason: why (one line)
    :ivar bandwidth: bytes/s to go on at (whole MiB/s)
    :ivar predicted_total: seconds from the job's start to its end at
        ``bandwidth``, at the plan's confidence (inf: it does not converge)
    :ivar expected_total: the same, in expectation
    :ivar band: the plan's total time at its confidence, s
    :ivar write_scale: observed / profiled write rates
    :ivar efficiency: achieved / planned send rate
    :ivar ceiling: the most bandwidth allowed, bytes/s
    """
    decision: str
    reason: str
    bandwidth: float
    predicted_total: float
    expected_total: float
    band: float
    write_scale: float
    efficiency: float
    ceiling: float

    def to_dict(self):
        def finite(x):
            return x if math.isfinite(x) else None
        return {"decision": self.decision, "reason": self.reason,
                "bandwidth_bytes_per_s": self.bandwidth,
                "predicted_total_time_s": finite(self.predicted_total),
                "expected_total_time_s": finite(self.expected_total),
                "band_total_time_s": self.band,
                "write_scale": self.write_scale,
                "efficiency": self.efficiency,
                "ceiling_bytes_per_s": self.ceiling}


def write_scale(profile, dirty_rate, window):
    """The factor on every write rate of ``profile`` that makes it show
    ``dirty_rate`` bytes/s to QEMU's measurement over epochs of ``window``
    seconds (distinct pages dirtied per epoch / epoch), by bisection; 1
    when ``dirty_rate`` is None (not measured), the search's top when even
    every active page per epoch is short of it."""
    if dirty_rate is None:
        return 1.0
    window = max(float(window), 1e-3)
    target = dirty_rate * window / profile.page_size      # pages per epoch
    if target <= 0:
        return _SCALE_RANGE[0]
    lo, hi = _SCALE_RANGE
    if profile.dirty_pages(hi * window) <= target:
        return hi
    if profile.dirty_pages(lo * window) >= target:
        return lo
    for _ in range(60):                     # to ~1e-5 relative in log
        mid = math.sqrt(lo * hi)
        if profile.dirty_pages(mid * window) < target:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


def _dirty_ratio(profile, obs):
    """The observed dirty rate over what ``profile`` shows over the same
    epoch (1 when not measured)."""
    if obs.dirty_rate is None:
        return 1.0
    window = max(float(obs.epoch_time or max(obs.epoch_elapsed, 1.0)), 1e-3)
    expected = profile.dirty_rate(window)
    return obs.dirty_rate / expected if expected > 0 else math.inf


def bandwidth_ceiling(link_share, cpu_share, page_size, cpu_cost_per_page,
                      cpu_margin, step=MIB, qemu_version=DEFAULT_QEMU_VERSION):
    """The most bandwidth, bytes/s on the ``step`` grid, within the
    reserved migration link ``link_share`` (bytes/s) whose migration
    thread's CPU (:func:`~rtmig_nova.model.sizing.cpu_reservation`) stays
    within ``cpu_share`` of a CPU (the host's admitted migration CPU), for
    QEMU ``qemu_version``'s send rate."""
    top = math.floor(link_share / step + 1e-9)
    if cpu_cost_per_page <= 0:
        return top * step
    page = page_size + PAGE_HEADER_BYTES
    lo, hi = 0, top
    while lo < hi:                          # largest k whose CPU fits
        k = (lo + hi + 1) // 2
        share = send_rate(k * step, page_size,
                          qemu_version=qemu_version) / page * \
            cpu_cost_per_page * cpu_margin
        if share <= cpu_share + 1e-12:
            lo = k
        else:
            hi = k - 1
    return lo * step


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The plan as its mean path has it, which :func:`replan` judges
    readings against.

    :ivar spread: the model's quantile at the confidence over the mean
        path (the planner's own calibration of its guide; below 1 near the
        convergence cliff, where the mean path is slower than the model)
    :ivar edge: the band's upper edge in the mean path's terms, s
    """
    spread: float
    edge: float


def _mean_options(settings, iteration=1):
    return {"check_interval": settings.check_interval,
            "switchover_time": settings.switchover_time,
            "send_backlog": settings.send_backlog,
            "link_rate": settings.link_rate,
            "qemu_version": settings.qemu_version,
            "max_rounds": max(settings.max_rounds - iteration + 1, 1)}


def _pinned(settings):
    limit_ms = round(settings.downtime_limit * 1000)
    return lambda bw: limit_ms + 0 * bw     # the plan's limit, any shape


def calibrate(profile, settings, band, step=MIB):
    """The :class:`Calibration` of the plan of ``profile`` with
    ``settings`` whose total at the confidence is ``band`` s: its mean path
    from the first page at the plan's bandwidth.  It depends on the plan
    alone: the loop computes it once."""
    k_plan = max(int(round(settings.bandwidth / step)), 1)
    whole = sizing._MeanPrecopy(profile, _mean_options(settings), step,
                                k_plan * step, _pinned(settings),
                                k_plan - 1, k_plan)
    t0 = whole.time(k_plan)
    if math.isfinite(t0) and t0 > 0:
        return Calibration(
            min(max((band - settings.setup_time) / t0, 0.05), 10.0),
            settings.setup_time + t0 * (1 + BAND_TOLERANCE))
    return Calibration(1.0, band * (1 + BAND_TOLERANCE))


def replan(profile, settings, deadline, band, observation, bandwidth,
           ceiling, step=MIB, margin=0.0, calibration=None):
    """Re-plan the migration of ``profile`` running with ``settings``
    (the plan's :class:`~rtmig_nova.model.precopy.MigrationSettings`;
    its downtime limit stays) at ``bandwidth`` bytes/s, from
    ``observation``, against ``deadline`` (s) and the plan's ``band`` (its
    total time at the confidence, s); never above ``ceiling`` bytes/s.
    Off the band, the new bandwidth aims at ``margin`` seconds before the
    deadline: the time the loop needs to correct once more.
    ``calibration``: :func:`calibrate` of the plan, if known.

    :returns: :class:`Replan`
    """
    obs = observation
    k_now = max(int(round(bandwidth / step)), 1)
    k_top = max(int(math.floor(ceiling / step + 1e-9)), k_now)
    planned = send_rate(bandwidth, profile.page_size,
                        settings.check_interval, settings.qemu_version)
    eff = 1.0 if obs.send_rate is None else \
        min(max(obs.send_rate / planned, 0.0), 1.0)
    if eff >= 1 - SEND_TOLERANCE:
        eff = 1.0
    scale = write_scale(profile, obs.dirty_rate,
                        obs.epoch_time or max(obs.epoch_elapsed, 1.0))
    beyond = scale >= _SCALE_RANGE[1]
    observed = profile
    if beyond:
        # More pages are written than the profile has active ones: the
        # writes reach pages it took for idle, spread over all of RAM.
        observed = DirtyProfile.from_aggregate_rate(
            profile.memory_bytes, obs.dirty_rate, profile.page_size)
        scale = 1.0
    options = _mean_options(settings, obs.iteration)
    pinned = _pinned(settings)
    cal = calibration or calibrate(profile, settings, band, step)
    spread, edge = cal.spread, cal.edge

    def result(decision, reason, k, rest):
        return Replan(decision, reason, k * step,
                      obs.elapsed + spread * rest, obs.elapsed + rest,
                      band, scale, eff, k_top * step)

    if eff < STALLED:
        return result(ABORT, f"the job sent {eff:.1%} of its planned rate: "
                      "stalled", k_now, math.inf)
    start = sizing.MeanStart(obs.remaining, obs.epoch_elapsed,
                             obs.iteration <= 1)
    rest = sizing._MeanPrecopy(observed, options, step, k_top * step,
                               pinned, k_now - 1, k_top, start=start,
                               scale=scale, efficiency=eff)
    now = rest.time(k_now)
    projected = obs.elapsed + spread * now
    # As planned: the plan's inputs observed (its send rate, its write
    # rates) and not past its time, or its mean path from here within the
    # band.  The first needs no mean path, which near the convergence
    # cliff (where the least bandwidth often is) swings far from the model.
    as_planned = eff == 1.0 and not beyond and \
        abs(math.log(max(scale, 1e-300))) <= math.log1p(WRITE_TOLERANCE) and \
        obs.elapsed <= band
    on_plan = as_planned or (obs.elapsed + now <= edge and
                             projected <= deadline)
    seen = ("writes beyond the profile's working set, "
            f"{obs.dirty_rate / MIB:.4g} MiB/s over all of RAM" if beyond
            else f"write rates x{scale:.3g} of the profile's") + \
        f", send rate {eff:.0%} of the plan's"
    if on_plan:
        return result(KEEP, f"within the plan's band ({seen})", k_now, now)
    left = deadline - obs.elapsed
    aim = max(deadline - margin, obs.elapsed + left / 2)
    k = rest.least_k((aim - obs.elapsed) / spread, k_now - 1, k_top)
    if k is None:       # the margin too: the deadline itself then
        k = rest.least_k(left / spread, k_now - 1, k_top)
    if k is not None:
        if k <= k_now:
            return result(KEEP, f"off the plan's band, the deadline still "
                          f"holds at {k_now} MiB/s ({seen})", k_now, now)
        if left <= 2 * margin:
            # Too late for another correction: the most there is.
            return result(RAISE, f"{seen}: {k} MiB/s would meet the "
                          f"deadline, {left:.3g} s away: the ceiling "
                          f"{k_top} MiB/s", k_top, rest.time(k_top))
        if beyond or _dirty_ratio(profile, obs) >= REFUTED_DIRTY:
            return result(RAISE, f"{seen}: the profile no longer holds "
                          f"({k} MiB/s would meet the deadline by it): the "
                          f"ceiling {k_top} MiB/s", k_top, rest.time(k_top))
        return result(RAISE, f"{seen}: {k} MiB/s meets the deadline", k,
                      rest.time(k))
    best = rest.time(k_top)
    if obs.elapsed + best <= deadline:
        return result(RAISE, f"{seen}: only the ceiling {k_top} MiB/s "
                      f"may meet the deadline (in expectation)", k_top,
                      best)
    why = "does not converge" if not math.isfinite(best) else \
        f"ends at {obs.elapsed + best:.3g} s in expectation"
    return result(ABORT, f"{seen}: even at the ceiling {k_top} MiB/s the "
                  f"migration {why}, past the deadline {deadline:g} s",
                  k_top, best)
