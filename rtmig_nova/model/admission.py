"""Admission control of CPU and network reservations on a host (pure).

Shared by the host enforcement layer and the Nova scheduler filter, so both
say yes to exactly the same reservations.

CPU: partitioned EDF.  A reservation is a constant-bandwidth server
(runtime Q every period P, seconds) pinned to one physical CPU.  EDF with
implicit deadlines schedules the servers of one CPU iff their utilisations
Q/P sum to at most the CPU's bound; the bound is the share Linux lets
real-time and deadline tasks use, ``sched_rt_runtime_us /
sched_rt_period_us`` (0.95 by default, 1 when the runtime is -1).  Several
servers of one group (the vCPUs of a VM) go to distinct CPUs, so that they
can run in parallel.

Network: a link of capacity C bytes/s carries reserved rates; a new one fits
while the reserved total stays within C.
"""

import dataclasses
import math

from rtmig_nova.model.checks import non_negative, positive

DEFAULT_RT_RUNTIME_US = 950000
DEFAULT_RT_PERIOD_US = 1000000
_EPS = 1e-12
SEARCH_LIMIT = 200000   # placements fit_servers tries before saying no


@dataclasses.dataclass(frozen=True)
class Server:
    """A CPU reservation: ``runtime`` seconds every ``period`` seconds."""
    runtime: float
    period: float

    def __post_init__(self):
        positive("runtime", self.runtime)
        positive("period", self.period)
        if self.runtime > self.period:
            raise ValueError(f"runtime {self.runtime:g} s exceeds period "
                             f"{self.period:g} s: more than one CPU")

    @property
    def utilisation(self):
        return self.runtime / self.period


def rt_bound(rt_runtime_us=DEFAULT_RT_RUNTIME_US,
             rt_period_us=DEFAULT_RT_PERIOD_US):
    """Per-CPU utilisation bound from the kernel's RT settings
    (/proc/sys/kernel/sched_rt_runtime_us and sched_rt_period_us, in us)."""
    if rt_runtime_us == -1:
        return 1.0
    positive("sched_rt_period_us", rt_period_us)
    if not (isinstance(rt_runtime_us, (int, float)) and
            0 <= rt_runtime_us <= rt_period_us):
        raise ValueError("sched_rt_runtime_us must be -1 or between 0 and "
                         f"sched_rt_period_us, got {rt_runtime_us!r}")
    return rt_runtime_us / rt_period_us


def _check_loads(loads, bound):
    if not 0 < bound <= 1:
        raise ValueError(f"bound must be in (0, 1], got {bound!r}")
    loads = [float(x) for x in loads]
    if not loads:
        raise ValueError("the host has no CPUs")
    for i, x in enumerate(loads):
        if not (math.isfinite(x) and x >= 0):
            raise ValueError(f"load of CPU {i} must be a finite number >= 0, "
                             f"got {x!r}")
    return loads


def cpu_left(loads, bound):
    """Utilisation still free on each CPU (list, clipped at 0)."""
    loads = _check_loads(loads, bound)
    return [max(bound - x, 0.0) for x in loads]


def free_desc(loads, bound):
    """Free utilisation per CPU under ``bound``, largest first: what
    :func:`group_fits` takes."""
    return sorted(cpu_left(loads, bound), reverse=True)


def group_fits(free, count, utilisation):
    """Whether ``count`` servers of ``utilisation`` each, on distinct CPUs
    (one VM's vCPUs), fit CPUs whose free utilisations are ``free``
    (largest first, :func:`free_desc`).

    Exact for one group on fixed loads (the same answer as
    :func:`fit_servers` with that group alone), in O(1): the group fits iff
    the ``count``-th freest CPU has room for one server.
    """
    if count < 1:
        return True
    return count <= len(free) and free[count - 1] + _EPS >= utilisation


def fit_servers(loads, groups, bound):
    """Place servers on CPUs under the per-CPU bound.

    :param loads: utilisation already reserved on each CPU
    :param groups: lists of :class:`Server`; servers of one group go to
        distinct CPUs (a VM's vCPUs), servers of different groups may share
    :param bound: per-CPU utilisation bound (see :func:`rt_bound`)
    :returns: for each group, the CPU index of each of its servers, or
        ``None`` if no placement exists.  Exact (backtracking with symmetry
        pruning: CPUs of equal load are interchangeable), biggest servers
        first.  Bin packing is NP-hard: past SEARCH_LIMIT placements tried
        the answer is ``None`` (a safe "no" for admission control).
    """
    loads = _check_loads(loads, bound)
    items = []                       # (utilisation, group, index)
    for g, group in enumerate(groups):
        if len(group) > len(loads):
            return None
        for i, srv in enumerate(group):
            if not isinstance(srv, Server):
                raise ValueError("groups must hold Server reservations")
            items.append((srv.utilisation, g, i))
    items.sort(key=lambda t: -t[0])
    place = [[None] * len(group) for group in groups]
    on_cpu = [set() for _ in loads]  # groups with a server on each CPU
    load = list(loads)
    budget = [SEARCH_LIMIT]

    def search(k):
        if k == len(items):
            return True
        budget[0] -= 1
        if budget[0] < 0:
            return False
        u, g, i = items[k]
        tried = set()
        # Fullest CPU that still fits first (best fit), then the others.
        for c in sorted(range(len(load)), key=lambda c: -load[c]):
            if g in on_cpu[c] or load[c] + u > bound + _EPS:
                continue
            # CPUs with the same load and the same groups on them are
            # interchangeable: try one of them only.
            key = (round(load[c], 12), frozenset(on_cpu[c]))
            if key in tried:
                continue
            tried.add(key)
            load[c] += u
            on_cpu[c].add(g)
            place[g][i] = c
            if search(k + 1):
                return True
            load[c] -= u
            on_cpu[c].discard(g)
        return False

    return [list(p) for p in place] if search(0) else None


def link_left(capacity, reserved):
    """Bytes/s still free on a link of ``capacity`` bytes/s."""
    capacity = positive("link capacity", capacity)
    total = 0.0
    for r in reserved:
        total += non_negative("reserved rate", r)
    return max(capacity - total, 0.0)


def fits_link(capacity, reserved, rate):
    """Whether ``rate`` bytes/s more fits on the link."""
    rate = positive("rate", rate)
    return rate <= link_left(capacity, reserved) * (1 + 1e-12)


@dataclasses.dataclass
class Admission:
    """Answer to an admission request.

    :ivar admitted: whether everything fits
    :ivar reason: which limit is exceeded (empty when admitted)
    :ivar placement: CPU index of each server, per group (see
        :func:`fit_servers`), when admitted
    """
    admitted: bool
    reason: str
    placement: list = None


def admit(loads, bound, capacity, reserved_rates, groups, rate=0.0):
    """Admit CPU servers (``groups``, see :func:`fit_servers`) and ``rate``
    bytes/s of link bandwidth on one host, all or nothing."""
    loads = _check_loads(loads, bound)
    need = sum(s.utilisation for g in groups for s in g)
    free = sum(cpu_left(loads, bound))
    if rate:
        left = link_left(capacity, reserved_rates)
        if not fits_link(capacity, reserved_rates, rate):
            return Admission(False, f"network: {rate:.6g} bytes/s requested, "
                                    f"{left:.6g} of {capacity:.6g} bytes/s "
                                    "left on the link")
    placement = fit_servers(loads, groups, bound)
    if placement is None:
        widest = max((len(g) for g in groups), default=0)
        if widest > len(loads):
            why = (f"{widest} servers must be on distinct CPUs, the host has "
                   f"{len(loads)}")
        elif need > free + _EPS:
            why = (f"{need:.4g} CPUs of reservations requested, {free:.4g} "
                   f"left under the bound {bound:g} per CPU")
        else:
            why = ("the reservations do not fit on any CPU placement under "
                   f"the bound {bound:g} per CPU (fragmented)")
        return Admission(False, f"cpu: {why}")
    return Admission(True, "", placement)
