# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""A host's real-time capacity and ledger, and the admission of one more
real-time VM (pure).

A compute host states its :class:`HostCapacity` (CPUs, the kernel's RT
bound, its link, and the link share and migration-thread CPU it keeps free
for live migrations); Placement inventories come from it
(:meth:`HostCapacity.inventories`).  The compute publishes a compact
:class:`HostLedger` of its real-time VMs; the scheduler filter decides with
:func:`admit_vm` on it.  Both use :mod:`rtmig_nova.model.admission` for the
per-CPU arithmetic, and :func:`migration_plan` (the model's plan) for the
migration headroom, so the compute and the scheduler agree.

The headroom guarantee: every real-time VM admitted to a host can be live
migrated away, one migration at a time, within its deadline and downtime at
its flavor's confidence, using at most the host's migration link share and
migration-thread CPU; the whole host's real-time VMs, migrated one after
the other, take the ledger's ``evacuation_time`` (the sum of the planned
migrations' quantile times), bounded by ``max_evacuation`` when that is set.
"""

import dataclasses
import json
import math

from rtmig_nova import bounds
from rtmig_nova import safeio
from rtmig_nova.model import admission
from rtmig_nova.model import flavor
from rtmig_nova.model.checks import non_negative, positive

LEDGER_VERSION = 1
MAX_LEDGER_BYTES = bounds.MAX_LEDGER_BYTES    # a compute's stats value
MAX_VMS = 4096
MAX_UUID = 255
_EPS = 1e-12


class LedgerError(ValueError):
    """A published ledger is malformed (the host is then refused)."""


@dataclasses.dataclass(frozen=True)
class HostCapacity:
    """What a compute host offers real-time VMs (SI units).

    :ivar cpus: physical CPUs available to real-time reservations
    :ivar bound: per-CPU utilisation bound (the kernel's RT limit)
    :ivar link: capacity of the link VMs and migrations share, bytes/s
    :ivar migration_link: part of ``link`` kept for live migrations, bytes/s
    :ivar migration_cpu: share of one CPU kept for the migration thread
    :ivar max_evacuation: bound on the time to migrate every RT VM away one
        after the other, s (0: no bound)
    """
    cpus: int
    bound: float
    link: float
    migration_link: float
    migration_cpu: float
    max_evacuation: float = 0.0

    def __post_init__(self):
        if not isinstance(self.cpus, int) or isinstance(self.cpus, bool) \
                or not 1 <= self.cpus <= 65536:
            raise ValueError(f"cpus must be a whole number in 1..65536, got "
                             f"{self.cpus!r}")
        if not (isinstance(self.bound, (int, float)) and 0 < self.bound <= 1):
            raise ValueError(f"bound must be in (0, 1], got {self.bound!r}")
        positive("link", self.link)
        positive("migration_link", self.migration_link)
        if self.migration_link > self.link * (1 + 1e-12):
            raise ValueError(f"migration_link {self.migration_link:.6g} "
                             f"bytes/s exceeds the link, {self.link:.6g}")
        positive("migration_cpu", self.migration_cpu)
        if self.migration_cpu > self.bound:
            raise ValueError(f"migration_cpu {self.migration_cpu:g} exceeds "
                             f"the per-CPU bound {self.bound:g}")
        non_negative("max_evacuation", self.max_evacuation)

    @property
    def cpu_units_per_cpu(self):
        return int(math.floor(self.bound * flavor.CPU_UNITS_PER_CPU + 1e-9))

    def inventories(self):
        """Placement inventories of the two rtmig resource classes.

        The migration's share is Placement's ``reserved``, so VMs can never
        claim it.  ``max_unit`` is the whole remaining capacity: Placement
        sees one allocation per VM, not per vCPU; that no vCPU reserves
        more than one CPU is the flavor contract's rule (runtime <= period)
        and the filter's per-CPU check.
        """
        per_cpu = self.cpu_units_per_cpu
        cpu_total = self.cpus * per_cpu
        cpu_reserved = min(flavor.cpu_units(self.migration_cpu), cpu_total)
        net_total = int(math.floor(self.link / flavor.NET_BYTES_PER_UNIT))
        net_reserved = min(flavor.net_units(self.migration_link), net_total)
        return {
            flavor.CPU_CLASS: {
                "total": cpu_total, "reserved": cpu_reserved, "min_unit": 1,
                "max_unit": max(cpu_total - cpu_reserved, 1),
                "step_size": 1, "allocation_ratio": 1.0},
            flavor.NET_CLASS: {
                "total": net_total, "reserved": net_reserved, "min_unit": 1,
                "max_unit": max(net_total - net_reserved, 1),
                "step_size": 1, "allocation_ratio": 1.0},
        }

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class EvacuationNeed:
    """One VM's planned live migration away from a host.

    :ivar feasible: the plan meets deadline and downtime at the confidence
    :ivar reason: why not (empty if feasible)
    :ivar time: the planned migration's total time at the confidence, s
    :ivar bandwidth: planned bandwidth, bytes/s
    :ivar cpu_share: migration-thread CPU it needs, share of one CPU
    """
    feasible: bool
    reason: str
    time: float
    bandwidth: float
    cpu_share: float


def migration_plan(profile, request, migration_link, plan_options):
    """The :class:`~rtmig_nova.model.sizing.Plan` of a live migration of a
    VM of ``profile`` under ``request`` (an
    :class:`~rtmig_nova.model.flavor.RTRequest`: deadline, downtime bound,
    confidence) over ``migration_link`` bytes/s.  ``plan_options``: further
    keyword arguments of :func:`rtmig_nova.model.plan` (model settings,
    CPU cost)."""
    from rtmig_nova.model import sizing
    return sizing.plan(profile, request.deadline, request.max_downtime,
                       request.confidence, link_capacity=migration_link,
                       **plan_options)


def need_of_plan(pl, request):
    """:class:`EvacuationNeed` of a :func:`migration_plan` ``pl``."""
    if not pl.feasible:
        return EvacuationNeed(False, pl.reason, math.inf, pl.bandwidth,
                              pl.cpu_share)
    time = pl.prediction.total_time.quantile(request.confidence)
    return EvacuationNeed(True, "", float(min(time, request.deadline)),
                          pl.bandwidth, pl.cpu_share)


@dataclasses.dataclass(frozen=True)
class VMEntry:
    """A real-time VM in a host's ledger.

    :ivar uuid: the instance
    :ivar vcpus: its vCPUs, each a server of ``utilisation``
    :ivar utilisation: share of one CPU per vCPU
    :ivar net_rate: its reserved network rate, bytes/s
    :ivar evacuation: its planned migration time away, s (inf: infeasible)
    """
    uuid: str
    vcpus: int
    utilisation: float
    net_rate: float
    evacuation: float

    def to_list(self):
        ev = self.evacuation if math.isfinite(self.evacuation) else None
        return [self.uuid, self.vcpus, self.utilisation, self.net_rate, ev]


class HostLedger:
    """A host's capacity and its real-time VMs, with the per-CPU loads of
    their placement (partitioned EDF, the migration thread's server
    included) computed once."""

    def __init__(self, capacity, vms=(), loads=None):
        """``loads``: the per-CPU loads of a placement the publisher
        computed (a parsed ledger); ``None`` packs the VMs here."""
        self.capacity = capacity
        self._vms = tuple(vms)
        self._rows = None
        self._settle(self._pack() if loads is None else loads,
                     sum(vm.evacuation for vm in self._vms),
                     sum(vm.net_rate for vm in self._vms))

    def _settle(self, loads, evacuation_time, net_reserved):
        #: None when the VMs recorded no longer fit (e.g. the host's
        #: options changed): nothing more is admitted then.
        self.loads = loads or None
        self.free_desc = [] if self.loads is None else \
            admission.free_desc(self.loads, self.capacity.bound)
        self.evacuation_time = evacuation_time
        self.net_reserved = net_reserved

    @property
    def vms(self):
        """The :class:`VMEntry` of each real-time VM (built on first use:
        the scheduler reads thousands of ledgers and needs only their
        sums)."""
        if self._vms is None:
            self._vms = tuple(
                VMEntry(str(u), n, float(x), float(r),
                        math.inf if ev is None else float(ev))
                for u, n, x, r, ev in self._rows)
        return self._vms

    def _pack(self):
        cap = self.capacity
        groups = [[admission.Server(cap.migration_cpu, 1.0)]]
        groups += [[admission.Server(vm.utilisation, 1.0)] * vm.vcpus
                   for vm in self.vms]
        placement = admission.fit_servers([0.0] * cap.cpus, groups,
                                          cap.bound)
        if placement is None:
            return None
        loads = [0.0] * cap.cpus
        for group, cpus in zip(groups, placement):
            for srv, c in zip(group, cpus):
                loads[c] += srv.utilisation
        return loads

    @property
    def cpu_free(self):
        """Real-time CPU still free, in CPUs."""
        return sum(self.free_desc)

    def to_json(self):
        # The loads go along, so a reader need not pack again (the
        # scheduler reads thousands of ledgers per request).
        doc = {"v": LEDGER_VERSION, "capacity": self.capacity.to_dict(),
               "vms": [vm.to_list() for vm in self.vms],
               "loads": self.loads or []}
        return json.dumps(doc, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text):
        """:raises LedgerError: not a ledger of this version (one line);
        no other exception, whatever ``text`` holds"""
        if not isinstance(text, str) or len(text) > MAX_LEDGER_BYTES:
            raise LedgerError("ledger missing or too large")
        try:
            # Strict JSON (no NaN), nested no deeper than bounds say.
            doc = safeio.loads_json(text, "ledger")
        except safeio.ReadError as e:
            raise LedgerError(f"malformed ledger ({e.reason})") from None
        try:
            return cls._from_doc(doc)
        except LedgerError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError,
                OverflowError) as e:
            raise LedgerError(f"malformed ledger ({type(e).__name__}: "
                              f"{_short(str(e))})") from None

    @classmethod
    def _from_doc(cls, doc):
        if not isinstance(doc, dict):
            raise LedgerError("malformed ledger (not a JSON object)")
        if doc.get("v") != LEDGER_VERSION:
            raise LedgerError(f"ledger version {_short(doc.get('v'))}, "
                              f"expected {LEDGER_VERSION}")
        if not isinstance(doc.get("capacity"), dict):
            raise LedgerError("malformed ledger (capacity is not an "
                              "object)")
        capacity = HostCapacity(**doc["capacity"])
        rows = doc.get("vms")
        if not isinstance(rows, list):
            raise LedgerError("malformed ledger (vms is not a list)")
        if len(rows) > MAX_VMS:
            raise LedgerError(f"more than {MAX_VMS} VMs in the ledger")
        cpu = net_total = evac = 0.0
        for row in rows:
            if not isinstance(row, list) or len(row) != 5:
                raise LedgerError(f"bad VM entry {_short(row)}")
            uuid, vcpus, util, net, ev = row
            if not (isinstance(uuid, str) and len(uuid) <= MAX_UUID and
                    type(vcpus) is int and 1 <= vcpus <= 65536 and
                    _finite(util) and 0 < util <= 1 and
                    _finite(net) and net >= 0 and
                    (ev is None or _finite(ev) and ev >= 0)):
                raise LedgerError(f"bad VM entry for {_short(uuid)}")
            cpu += vcpus * util
            net_total += net
            evac += math.inf if ev is None else ev
        loads = doc.get("loads")
        if not isinstance(loads, list) or not all(map(_finite, loads)):
            raise LedgerError("malformed ledger (loads is not a list of "
                              "numbers)")
        loads = [float(x) for x in loads]
        if loads and (len(loads) != capacity.cpus or not all(
                0 <= x <= capacity.bound + 1e-9 for x in loads)):
            raise LedgerError("loads do not match the host's CPUs")
        if loads and abs(sum(loads) - capacity.migration_cpu - cpu) > 1e-6:
            raise LedgerError("loads do not add up to the VMs")
        if not math.isfinite(net_total):
            raise LedgerError("the VMs' network rates add up to more than "
                              "a float holds")
        led = cls.__new__(cls)
        led.capacity = capacity
        led._vms, led._rows = None, rows
        led._settle(loads, evac, net_total)
        return led


def _finite(x):
    """A JSON number (not a boolean) a float holds, finite."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:       # an int beyond 1e308
        return False


def _short(value, n=60):
    """``value`` as one short line (a ledger's strings may be long)."""
    if isinstance(value, int) and not isinstance(value, bool) and \
            abs(value) >= 10 ** 30:
        return "a huge number"
    try:
        text = value if isinstance(value, str) else json.dumps(value)
    except (TypeError, ValueError):
        text = type(value).__name__
    text = " ".join(text.split())
    return repr(text[:n] + ("..." if len(text) > n else ""))


def cpu_reason(ledger, vcpus, utilisation):
    """Why ``vcpus`` servers of ``utilisation`` do not fit on the ledger's
    CPUs (one line), or ``""``."""
    cap = ledger.capacity
    if ledger.loads is None:
        return ("cpu: the host's recorded real-time VMs no longer fit its "
                "CPUs (its options changed?); nothing more is admitted")
    if admission.group_fits(ledger.free_desc, vcpus, utilisation):
        return ""
    if vcpus > cap.cpus:
        return (f"cpu: {vcpus} vCPU reservations need distinct CPUs, the "
                f"host has {cap.cpus}")
    room = sum(1 for f in ledger.free_desc if f + _EPS >= utilisation)
    return (f"cpu: {vcpus} vCPUs of {utilisation:.4g} CPU each need "
            f"{vcpus} CPUs with that much free under the bound "
            f"{cap.bound:g}; {room} have it (free per CPU: "
            + ", ".join(f"{f:.3g}" for f in ledger.free_desc[:8])
            + (", ..." if len(ledger.free_desc) > 8 else "") + ")")


def headroom_reason(ledger, need):
    """Why admitting a VM whose migration away needs ``need`` (an
    :class:`EvacuationNeed` at this host's migration link) would lose the
    host's migration headroom (one line), or ``""``."""
    cap = ledger.capacity
    if not need.feasible:
        return ("headroom: the VM could not be migrated away in time at "
                f"this host's migration link share "
                f"({cap.migration_link:.6g} bytes/s): {need.reason}")
    if need.cpu_share > cap.migration_cpu + _EPS:
        return (f"headroom: its migration needs {need.cpu_share:.3g} of a "
                f"CPU, the host keeps {cap.migration_cpu:.3g} for "
                "migrations")
    total = ledger.evacuation_time + need.time
    if cap.max_evacuation and total > cap.max_evacuation + _EPS:
        return (f"headroom: evacuating the host's real-time VMs would take "
                f"{total:.4g} s, over its bound {cap.max_evacuation:g} s")
    return ""


def admit_vm(ledger, vcpus, request, need):
    """Why the host of ``ledger`` must refuse a VM of ``vcpus`` vCPUs under
    ``request`` whose migration needs ``need``, or ``""`` to admit it.

    Totals (CPU units, network rate) are Placement's to refuse, race-free;
    this checks what Placement cannot see: the per-CPU fit and the
    migration headroom.
    """
    return cpu_reason(ledger, vcpus, request.utilisation) or \
        headroom_reason(ledger, need)
