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

"""The bounds of every input, in one place.

Pure (the standard library and :mod:`rtmig_nova.units` only): the command
line, the ``[rtmig]`` options, the profile, plan and reservation-state
files, the flavor extra specs and the model's own argument checks all take
their limits from here, so a value one of them accepts the others accept
too.  ``docs/cli.md`` tabulates :data:`TABLE` (a unit test keeps the two
in step).

A bound is either QEMU's, libvirt's or the kernel's own limit (cited), or a
stated sanity limit where the hypervisor has none but the model or the
machine running it would fail or answer nonsense (the reason is given).

Units, as everywhere: bytes, seconds, bytes/s, writes/s.
"""

import dataclasses
import json
import math
import numbers

from rtmig_nova import units

KIB, MIB, GIB, TIB = 2 ** 10, 2 ** 20, 2 ** 30, 2 ** 40


class BoundError(ValueError):
    """A value outside its bound; the one-line message names the input,
    the value and the allowed range."""


_DURATION_UNITS = ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns"))
_SIZE_UNITS = ((TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB"))


def _exact(x, scale):
    q = x / scale
    return q >= 1 and abs(q - round(q)) <= 1e-9 * q


def fmt(kind, x):
    """``x`` as the docs write it: ``1 ms``, ``2000 s``, ``64 KiB``..."""
    if kind == "duration":
        if x == 0:
            return "0 s"
        for scale, unit in _DURATION_UNITS:
            if _exact(x, scale):
                return f"{round(x / scale)} {unit}"
        return f"{x:g} s"
    if kind == "size":
        for scale, unit in _SIZE_UNITS:
            if _exact(x, scale):
                return f"{round(x / scale)} {unit}"
        return f"{int(x)} byte" + ("" if x == 1 else "s")
    if kind == "rate":
        for scale, unit in ((1e12, "Tbit/s"), (1e9, "Gbit/s")):
            if _exact(x * 8, scale):
                return f"{x:g} bytes/s ({round(x * 8 / scale)} {unit})"
        return f"{x:g} byte/s" if x == 1 else f"{x:g} bytes/s"
    if kind == "writes":
        return f"{x:g} writes/s"
    if kind in ("count", "us", "ns"):
        suffix = {"count": "", "us": " us", "ns": " ns"}[kind]
        return f"{int(x)}{suffix}"
    return f"{x:g}"


@dataclasses.dataclass(frozen=True)
class Bound:
    """``low <= value <= high`` (``low < value`` if ``low_open``).

    :ivar what: the quantity, as a reader of the docs knows it
    :ivar kind: ``duration`` (s), ``rate`` (bytes/s), ``size`` (bytes),
        ``writes`` (writes/s), ``count``, ``us``, ``ns`` (whole numbers),
        ``probability`` or ``factor``
    :ivar why: where the limits come from
    """
    what: str
    kind: str
    low: float
    high: float
    why: str
    low_open: bool = False

    @property
    def range_text(self):
        lo = fmt(self.kind, self.low)
        hi = fmt(self.kind, self.high)
        return f"more than {lo} and at most {hi}" if self.low_open \
            else f"{lo} to {hi}"

    def contains(self, value):
        if isinstance(value, bool):
            return False
        if isinstance(value, numbers.Integral):
            # Exact: float() would round 2**128 - 1 up, and overflow
            # beyond 1e308.
            x = int(value)
        else:
            try:
                x = float(value)
            except (TypeError, ValueError, OverflowError):
                return False
            if not math.isfinite(x):
                return False
        above_low = x > self.low if self.low_open else x >= self.low
        return above_low and x <= self.high

    def check(self, value, name, text=None):
        """``value`` if it is inside the bound, else :class:`BoundError`
        naming ``name`` (an option, a file and field...).  ``text``: what
        the user wrote, shown instead of the number."""
        whole = self.kind in ("count", "us", "ns", "size")
        if isinstance(value, bool) or (whole and not _is_int(value)):
            raise BoundError(f"{name}: expected a whole number from "
                             f"{self.range_text}, got {_show(value, text)}")
        if not self.contains(value):
            shown = _show(value, text)
            if not isinstance(value, bool) and _is_number(value) and \
                    math.isnan(float(value)):
                shown += " (not a number)"
            raise BoundError(f"{name}: {shown} is outside the {self.what} "
                             f"range, {self.range_text} ({self.why})")
        return value

    def parse(self, text, name):
        """Parse ``text`` (as :mod:`rtmig_nova.units` reads its kind) and
        check it."""
        parser = _PARSERS[self.kind]
        value = parser(text, name)
        return self.check(value, name, text)


def _is_int(value):
    # numpy's integer types register as numbers.Integral too.
    return isinstance(value, numbers.Integral)


def _is_number(value):
    try:
        float(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def _show(value, text):
    if text is not None:
        shown = str(text)
    elif isinstance(value, float):
        shown = f"{value:.6g}"
    elif isinstance(value, int) and not isinstance(value, bool):
        # float() of a huge int overflows, str() refuses more than 4300
        # digits; its length says enough.
        shown = str(value) if abs(value) < 10 ** 30 else \
            f"a {int(abs(value).bit_length() * math.log10(2)) + 1}-digit " \
            f"number"
    else:
        # As the file had it (null, [1, 2]), not a Python repr.
        try:
            shown = json.dumps(value)
        except (TypeError, ValueError):
            shown = str(value)
    # A pasted megabyte stays one short line.
    return repr(shown[:60] + ("..." if len(shown) > 60 else "")) \
        if text is not None else shown[:60]


def _parse_count(text, name):
    return units.parse_int(text, name)


_PARSERS = {
    "duration": units.parse_duration,
    "rate": units.parse_rate,
    "size": units.parse_size,
    "probability": units.parse_probability,
    "count": _parse_count,
    "us": _parse_count,
    "ns": _parse_count,
    "writes": lambda t, n: _float(t, n),
    "factor": lambda t, n: _float(t, n),
}


def _float(text, name):
    try:
        return float(str(text).strip())
    except ValueError:
        raise BoundError(f"{name}: invalid value {str(text)[:60]!r}; "
                         f"expected a number") from None


# -- QEMU, libvirt and the kernel ---------------------------------------------

# QEMU migration/options.c (migration.c in 7.2): MAX_MIGRATE_DOWNTIME_SECONDS;
# downtime-limit is taken in whole milliseconds.
QEMU_MAX_DOWNTIME_S = 2000
DOWNTIME_LIMIT = Bound(
    "QEMU downtime-limit", "duration", 1e-3, float(QEMU_MAX_DOWNTIME_S),
    "QEMU takes whole milliseconds up to MAX_MIGRATE_DOWNTIME_SECONDS")
# The downtime a plan or a flavor allows: QEMU's downtime-limit has to be
# able to express it.
MAX_DOWNTIME = dataclasses.replace(DOWNTIME_LIMIT, what="maximum downtime")
# A switch-over longer than QEMU's largest downtime-limit could never fit.
SWITCHOVER_TIME = Bound(
    "switch-over time", "duration", 0.0, float(QEMU_MAX_DOWNTIME_S),
    "part of the downtime, which QEMU bounds by 2000 s")
# Bytes queued ahead of the stop-and-copy (a socket's send buffer and the
# link's queue): Linux's largest send buffer (net.core.wmem_max, an int)
# is below 2 GiB.
SEND_BACKLOG = Bound(
    "send backlog", "size", 0, 2 ** 31,
    "what a socket's send buffer and the link's queue hold ahead of the "
    "stop-and-copy; a Linux send buffer is under 2 GiB")
# TCP_NOTSENT_LOWAT on a migration socket (enforce/send_queue): a small
# cap costs wake-ups, not throughput; above 64 MiB it is no cap.
SEND_QUEUE_CAP = Bound(
    "send-queue cap", "size", 0, 64 * 2 ** 20,
    "0 is no cap; above 64 MiB a cap holds nothing back")
# QEMU's max-bandwidth is a uint64 of bytes/s checked against SIZE_MAX
# (INT64_MAX as libvirt passes it); far above any link, so the link bound
# below is the one that binds.  Below 1 byte/s QEMU has no value to take.
QEMU_MAX_BANDWIDTH = 2 ** 63 - 1
# 10 Tbit/s: ten times the fastest Ethernet port (800GbE); numbers beyond it
# are typing errors, and the model's arithmetic stays exact below it.
MAX_LINK_RATE = 1.25e12
BANDWIDTH = Bound(
    "migration bandwidth", "rate", 1.0, MAX_LINK_RATE,
    "QEMU's max-bandwidth is whole bytes/s; no migration link carries "
    "more than 10 Tbit/s")
LINK_RATE = dataclasses.replace(BANDWIDTH, what="link rate")
# QEMU 7.2 migration.c BUFFER_DELAY: the rate-limit window and the pending
# check are a fixed 100 ms; other values model other hypervisors, and a
# window below 1 ms is below what a migration thread can keep to.
CHECK_INTERVAL = Bound(
    "check interval", "duration", 1e-3, 1.0,
    "QEMU checks every 100 ms (BUFFER_DELAY); 1 ms to 1 s are modelled")
# QEMU's target page sizes: TARGET_PAGE_BITS 10 (some Arm) to 16 (64 KiB
# pages of ppc64 and arm64); dirty tracking is per target page.  Host huge
# pages (2 MiB, 1 GiB) are accepted too, for a guest modelled at huge-page
# granularity (postcopy and hugetlbfs-backed RAM send whole host pages).
PAGE_SIZE = Bound(
    "page size", "size", 1024, GIB,
    "a power of two: QEMU's target pages are 1 KiB to 64 KiB, host huge "
    "pages up to 1 GiB")
# Linux CFS bandwidth (cpu.max): period 1 ms..1 s, quota at least 1 ms;
# libvirt's largest quota is 17592186044415 us.
CGROUP_PERIOD_US = Bound(
    "CFS period", "us", 1000, 1000000,
    "the kernel's cpu.max period, 1 ms to 1 s")
CGROUP_QUOTA_US = Bound(
    "CFS quota", "us", 1000, 17592186044415,
    "the kernel's least quota, 1 ms; libvirt's largest")
CGROUP_PERIOD = Bound(
    "CFS period", "duration", 1e-3, 1.0,
    "the kernel's cpu.max period, 1 ms to 1 s")
# SCHED_DEADLINE (kernel/sched/deadline.c): runtime >= 1 << DL_SCALE ns;
# sched_deadline_period_max_us is an unsigned int of microseconds.
_DL_LEAST_RUNTIME_NS = 1024
_DL_LARGEST_PERIOD_NS = (2 ** 32 - 1) * 1000
_DL_WHY = "the kernel's least runtime, 1024 ns, and its largest period setting"
DEADLINE_TIME_NS = Bound(
    "SCHED_DEADLINE time", "ns", _DL_LEAST_RUNTIME_NS, _DL_LARGEST_PERIOD_NS,
    _DL_WHY)
DEADLINE_TIME = Bound(
    "SCHED_DEADLINE time", "duration", _DL_LEAST_RUNTIME_NS * 1e-9,
    _DL_LARGEST_PERIOD_NS * 1e-9, _DL_WHY)
# kernel.sched_deadline_period_min_us's default (100 us) below; above, the
# sysctls' own largest value: an administrator may raise
# sched_deadline_period_max_us past its 2**22 us default, and
# enforce/deadline.py checks a period against the host's own setting.
DEADLINE_PERIOD = Bound(
    "SCHED_DEADLINE period", "duration", 100e-6, DEADLINE_TIME.high,
    "the kernel's default sched_deadline_period_min_us, and the largest "
    "value its period sysctls take (the host's own are checked when "
    "applied)")
# Linux PID_MAX_LIMIT: thread ids are at most 2**22.
THREAD_ID = Bound("thread id", "count", 1, 2 ** 22,
                  "the kernel's PID_MAX_LIMIT")
# QEMU calc-dirty-rate takes whole seconds, 1 to 60.
DIRTY_RATE_SECONDS = Bound(
    "dirty-rate calculation", "duration", 1.0, 60.0,
    "QEMU's calc-dirty-rate takes whole seconds from 1 to 60")

# Nova's live-migration monitor reads the job every 0.5 s: the closed loop
# cannot look more often.
REPLAN_INTERVAL = Bound(
    "re-planning interval", "duration", 0.5, 60.0,
    "Nova's monitor reads the migration's job every 0.5 s")

# -- sanity limits (no hypervisor limit, but a limit of sense) ----------------

# 64 TiB: above the largest instances on offer (24-32 TiB), and 2**34
# pages of 4 KiB keep page counts exact in float arithmetic.
MAX_GUEST_MEMORY = 64 * TIB
GUEST_MEMORY = Bound(
    "guest memory", "size", 1, MAX_GUEST_MEMORY,
    "above the largest VMs on offer")
# A store takes at least about a nanosecond: no page is written more often.
PAGE_WRITE_RATE = Bound(
    "page write rate", "writes", 0.0, 1e9,
    "a page cannot be written more than about once per nanosecond")
DEADLINE = Bound(
    "migration deadline", "duration", 1e-3, 86400.0,
    "a live migration is planned within a day")
# libvirt's prepare phase takes seconds; an hour is no live migration.
SETUP_TIME = Bound(
    "setup time", "duration", 0.0, 3600.0,
    "libvirt's prepare phase takes seconds, never an hour")
# The planner's, whoever asks: the command line, [rtmig] confidence and a
# flavor's rtmig:confidence all plan with rtmig_nova.model.sizing.
CONFIDENCE = Bound(
    "confidence", "probability", 0.0, 0.999999,
    "the model follows the last 1e-8 of probability no further",
    low_open=True)
# The migration thread's CPU per page sent: measured 1.6 us; a millisecond
# would not sustain 4 MB/s on a whole CPU.
# Spreads of the write intensity and of the host's send rate (model.
# uncertainty): standard deviations of their logarithms.  Beyond 1 (a
# factor e either way at one sd) a prediction says nothing.
LOG_SPREAD = Bound(
    "relative spread", "factor", 0.0, 1.0,
    "a standard deviation of log(rate) above 1 is a factor e either way")
# The model's send rate times this: what a host sends per second of QEMU's
# rate-limited sending, measured (testbed calibration); far off 1 is no
# QEMU rate limiter this model describes.
SEND_EFFICIENCY = Bound(
    "send efficiency", "factor", 0.1, 10.0,
    "QEMU sends within a few percent of its rate limit")
CPU_COST_PER_PAGE = Bound(
    "CPU cost per page", "duration", 0.0, 1e-3,
    "the migration thread spends microseconds per page")
CPU_MARGIN = Bound(
    "CPU margin", "factor", 1.0, 10.0,
    "a safety factor of at least 1; beyond 10 it reserves nothing useful")
# The analytic model follows every round it is asked to unless the chain
# turns stationary; QEMU has no limit, but 10000 rounds of 100 ms are
# 17 minutes of pre-copy, beyond any deadline.
MAX_ROUNDS = Bound(
    "round limit", "count", 1, 10000,
    "10000 rounds of QEMU's 100 ms windows outlast any deadline")
RUNS = Bound("simulation runs", "count", 1, 1000000,
             "a million runs resolve the 1e-6 tail")
SEED = Bound("seed", "count", 0, 2 ** 128 - 1,
             "numpy's SeedSequence uses 128 bits")
# The page-level simulator holds about 60 bytes per page (per-page rates,
# costs, ranks, masks, draws): 2**25 pages keep it near 2 GiB.
SIMULATOR_BYTES_PER_PAGE = 64
MAX_SIMULATED_PAGES = 2 ** 25
SIMULATED_PAGES = Bound(
    "simulated guest", "count", 1, MAX_SIMULATED_PAGES,
    f"the page-level simulator holds about {SIMULATOR_BYTES_PER_PAGE} bytes "
    f"per page; the analytic models have no such limit")
# Its work: every simulated round of every run goes over the guest's pages
# (about 1e8 page-rounds a second on one core), so runs x rounds x pages
# within the bounds above could take centuries.  The rounds actually
# simulated are counted against this.
MAX_SIMULATION_WORK = 10 ** 12
SIMULATION_WORK = Bound(
    "simulation work", "count", 1, MAX_SIMULATION_WORK,
    "page-rounds (runs x rounds x pages) simulated, about 1e8 a second: "
    "hours of work")
VCPUS = Bound("vCPUs", "count", 1, 65536, "Nova's and libvirt's range")
# A VM's own reserved traffic: 1 Tbit/s (flavor rtmig:net_rate).
NET_RATE = Bound("VM network rate", "rate", 0.0, 125e9,
                 "a VM reserves at most 1 Tbit/s")
CAPTURE_BANDWIDTH = Bound(
    "probe bandwidth", "rate", 4096.0, MAX_LINK_RATE,
    "a probe must send at least one page per second")
CAPTURE_DURATION = Bound(
    "probe duration", "duration", 0.01, 3600.0,
    "a probe runs for at least one check and at most an hour")
CAPTURE_ROUNDS = Bound("probe rounds", "count", 1, 10000,
                       "as the model's round limit")
REPETITIONS = Bound("repetitions", "count", 1, 1000,
                    "each repetition is a real migration")
# experiment validate plans workloads x bandwidths x repetitions runs up
# front; a run takes 20-60 s.
EXPERIMENT_RUNS = Bound("experiment runs", "count", 1, 10000,
                        "each run is a real migration of 20-60 s: 10000 "
                        "take about a week")

# -- reads --------------------------------------------------------------------

# A profile is a histogram: a 64 GiB guest's is kilobytes, the finest
# possible one a few megabytes.
MAX_PROFILE_BYTES = 64 * MIB
# Per-page rates (.npy, 8 bytes a page): 1 GiB is a 512 GiB guest of
# 4 KiB pages; larger guests are captured as histograms.
MAX_NPY_BYTES = GIB
# A capture by probe migrations (a QEMU trace) holds per-page rates too,
# and a page bitmap: the same 2**27 pages as the .npy limit.
MAX_TRACED_PAGES = MAX_NPY_BYTES // 8
TRACED_PAGES = Bound(
    "per-page capture", "count", 1, MAX_TRACED_PAGES,
    "per-page rates take 8 bytes a page, as in a .npy file of at most "
    "1 GiB; a larger guest is captured with --coarse")
# Plans, reservation state files and config files are a few kilobytes.
MAX_DOCUMENT_BYTES = MIB
MAX_CONFIG_BYTES = MIB
# The ledger a compute publishes in its stats for the scheduler: a few
# kilobytes for a host of real-time VMs (at most 4096 of them).
MAX_LEDGER_BYTES = MIB
# Deeper JSON is no document of ours (profiles nest 3 levels, metadata a
# few more); the limit keeps recursive code from RecursionError.
MAX_JSON_DEPTH = 32

FILE_LIMITS = (
    ("profile file (.json, .json.gz, .csv; also after decompression)",
     MAX_PROFILE_BYTES),
    ("per-page rates (.npy)", MAX_NPY_BYTES),
    ("plan (--plan) and reservation state files", MAX_DOCUMENT_BYTES),
    ("config file (--config-file)", MAX_CONFIG_BYTES),
    ("scheduler ledger (a compute's published stats value, characters)",
     MAX_LEDGER_BYTES),
)


def check_page_size(value, name):
    """``value`` (bytes) if it is one of QEMU's target page sizes."""
    PAGE_SIZE.check(value, name)
    value = int(value)
    if value & (value - 1):
        raise BoundError(f"{name}: {value} bytes is not a power of two "
                         f"({PAGE_SIZE.why})")
    return value


# Every bound, in the order docs/cli.md lists them: (name in the docs,
# Bound, where it applies).
TABLE = (
    ("downtime-limit", DOWNTIME_LIMIT,
     "--downtime-limit, plan downtime_limit_s"),
    ("max-downtime", MAX_DOWNTIME,
     "--max-downtime, rtmig:max_downtime"),
    ("switch-over time", SWITCHOVER_TIME,
     "--switchover-time, [rtmig] switchover_time"),
    ("send backlog", SEND_BACKLOG, "--send-backlog"),
    ("send-queue cap", SEND_QUEUE_CAP, "[rtmig] send_queue_cap"),
    ("bandwidth", BANDWIDTH, "--bandwidth(s), plan bandwidth_bytes_per_s"),
    ("link rate", LINK_RATE,
     "--link-rate, --link-capacity, [rtmig] link_capacity"),
    ("check interval", CHECK_INTERVAL,
     "--check-interval, [rtmig] check_interval"),
    ("page size", PAGE_SIZE, "--page-size, profile page_size"),
    ("guest memory", GUEST_MEMORY, "profiles (all formats), --memory"),
    ("page write rate", PAGE_WRITE_RATE,
     "profile rates, CSV rate_per_s, .npy values"),
    ("deadline", DEADLINE, "--deadline, rtmig:migration_deadline"),
    ("setup time", SETUP_TIME,
     "--setup-time, --setup-time-sd, [rtmig] setup_time(_sd)"),
    ("confidence", CONFIDENCE,
     "--confidence, [rtmig] confidence, rtmig:confidence"),
    ("CPU cost per page", CPU_COST_PER_PAGE,
     "--cpu-cost-per-page, [rtmig] cpu_cost_per_page"),
    ("CPU margin", CPU_MARGIN, "[rtmig] cpu_margin"),
    ("round limit", MAX_ROUNDS, "--max-rounds, [rtmig] max_rounds"),
    ("simulation runs", RUNS, "--runs"),
    ("seed", SEED, "--seed"),
    ("simulated guest (pages)", SIMULATED_PAGES, "simulate --profile"),
    ("simulation work (page-rounds)", SIMULATION_WORK,
     "simulate, --model montecarlo: runs x rounds x pages"),
    ("per-page capture (pages)", TRACED_PAGES,
     "capture (the guest's pages), trace page offsets"),
    ("CFS period", CGROUP_PERIOD,
     "--emulator-period, --vcpu-period, [rtmig] cgroup_period, "
     "rtmig:vcpu_reservation period"),
    ("CFS quota (us)", CGROUP_QUOTA_US,
     "--emulator-quota, --vcpu-quota, plan cpu.quota_us"),
    ("SCHED_DEADLINE times", DEADLINE_TIME,
     "--deadline-runtime/-period/-deadline, plan cpu.*_ns"),
    ("SCHED_DEADLINE period", DEADLINE_PERIOD, "[rtmig] deadline_period"),
    ("thread id", THREAD_ID, "--deadline-thread"),
    ("vCPUs", VCPUS, "--vcpus"),
    ("VM network rate", NET_RATE, "--net-rate, rtmig:net_rate"),
    ("probe bandwidth", CAPTURE_BANDWIDTH,
     "capture --bandwidth, --first-pass-bandwidth"),
    ("probe duration", CAPTURE_DURATION, "capture --duration"),
    ("probe rounds", CAPTURE_ROUNDS, "capture --rounds"),
    ("dirty-rate calculation", DIRTY_RATE_SECONDS,
     "capture --coarse --duration, [rtmig] dirty_rate_seconds"),
    ("repetitions", REPETITIONS,
     "experiment --repetitions, --calibration-runs"),
    ("experiment runs", EXPERIMENT_RUNS,
     "experiment validate: workloads x bandwidths x --repetitions"),
    ("re-planning interval", REPLAN_INTERVAL, "[rtmig] replan_interval"),
)
