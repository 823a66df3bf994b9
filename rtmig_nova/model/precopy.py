"""QEMU's pre-copy RAM migration algorithm, as the models see it.

Written from QEMU 7.2 (the version Debian 12 ships), ``migration/ram.c`` and
``migration/migration.c``, and checked against QEMU 10.0 (Debian's
bookworm-backports), which differs in one point the models see: how the
rate limit counts bytes (``MigrationSettings.qemu_version``, below).

* Setup (``ram_save_setup`` / ``ram_init_bitmaps``): every page is marked
  dirty and dirty logging starts.
* Sending (``ram_save_iterate`` -> ``ram_find_and_save_block``): pages whose
  bit is set in the migration bitmap are sent in address order from a cursor
  that carries on across syncs and wraps at the end of RAM.  A page costs an
  8-byte header (``save_page_header``) plus the page; a page that is all
  zero bytes costs the header plus one byte (``save_zero_page_to_file``).
* Rate limit: ``max-bandwidth / 10`` bytes per 100 ms window
  (``BUFFER_DELAY``), checked after each page (``qemu_file_rate_limit``:
  pages go out while ``rate_limit_used <= rate_limit_max``), so a window
  carries the quota plus up to one page more: :func:`send_rate`, 0.5% above
  the limit at 3 MiB/s, 0.05% at 32 MiB/s.  (The 8-byte
  ``RAM_SAVE_FLAG_EOS`` closing each ``ram_save_iterate`` is left out: 80
  bytes/s.)  The migration thread checks the pending size once per window
  (``migration_iteration_run``).
  From QEMU 8.2 on (``migration-stats.c``, ``migration_rate_exceeded``) a
  byte counts only once ``qemu_fflush`` has written it, and the stream is
  flushed every 64 iovecs, which are 32 pages (a header and a page each):
  the counter moves in steps of 32 pages, and a window carries the quota
  rounded up to the next such step, up to 25% more (at 4 MiB/s; 9.6% at
  8 MiB/s, 0.2% at 10 MiB/s): a sawtooth in the limit, measured on QEMU
  10.0.2 to the byte.
* Bitmap sync (``ram_save_pending``): only when the pages still to send,
  times the page size, fall below ``threshold_size`` = measured bandwidth x
  ``downtime-limit`` (``migration_update_counters``; the bandwidth measured
  over the last window, i.e. the send rate).  The sync ORs the pages
  dirtied since the previous sync into the bitmap; the pages not yet sent stay
  set.  So a "round" (an *epoch* here) ends early, with some pages still
  pending, not after a complete pass.
* Convergence (``migration_iteration_run``): if, after that sync, the pending
  size is still below the threshold, the guest is stopped and the rest is sent
  (``migration_completion`` -> ``ram_save_complete``): the downtime.
* There is no round limit in QEMU: a migration that never converges runs until
  cancelled.  The models stop at ``max_rounds`` and report the mass left as
  "does not converge".

Two dirty-log semantics are modelled (``dirty_log``):

``"sync"``
    A page is dirty at a sync if it was written at any time since the previous
    sync, whenever it was sent in between.  This is TCG's dirty tracking and
    KVM without manual dirty-log protection.
``"clear"``
    KVM_CLEAR_DIRTY_LOG (``migration_clear_memory_region_dirty_bitmap``): the
    dirty log of a page is cleared just before it is sent, so only writes
    after its send count.  Send order then matters.  QEMU clears in chunks of
    ``2**clear-bitmap-shift`` pages (1 GiB by default); the model clears per
    page, the limit of a small shift.

Two send orders are modelled (``order``): ``"address"`` (QEMU's) and
``"rate"``, the proposal of Checconi, Cucinotta and Stein (VHPC 2009): each
round sends pages in increasing order of write rate, hot pages last.
"""

import dataclasses
import re

from rtmig_nova import bounds
from rtmig_nova.model.checks import non_negative, positive

# Bytes on the wire (QEMU 7.2 migration/ram.c).
PAGE_HEADER_BYTES = 8        # save_page_header: be64 offset | flags
ZERO_PAGE_BYTES = 9          # header + the fill byte (RAM_SAVE_FLAG_ZERO)
# migration.c BUFFER_DELAY: the rate-limit window and pending-check period.
CHECK_INTERVAL = 0.1         # seconds
# migration.c defaults (QMP downtime-limit is in ms, max-bandwidth in bytes/s)
QEMU_DEFAULT_DOWNTIME_LIMIT = 0.3    # seconds
QEMU_DEFAULT_MAX_BANDWIDTH = 128 * 2**20  # bytes/s (MAX_THROTTLE)

DIRTY_LOGS = ("sync", "clear")
ORDERS = ("address", "rate")

# The QEMU whose algorithm the models follow when none is given: Debian
# 12's (KVM hosts run it).
DEFAULT_QEMU_VERSION = "7.2"
# From this release on the rate limit counts flushed bytes (see the module
# doc): read in QEMU 10.0's migration-stats.c, absent from 7.2's; 8.1 still
# flushed inside migration_transferred_bytes(), which the 8.2 migration
# pull (qemu-devel, 31 Oct 2023) removed.  No 8.x source was read here.
FLUSHED_COUNT_SINCE = (8, 2)
# Pages per flush there: MAX_IOV_SIZE (64) iovecs, two per page.
PAGES_PER_FLUSH = 32
_MAX_QEMU_MAJOR = 99
# [EPOCH:]MAJOR.MINOR, then the end or anything but a digit or letter
# (10.0.2, 10.0+ds, 7.2; not 10.0rc1)
_VERSION_RE = re.compile(r"\s*(?:\d{1,3}:)?(\d{1,3})\.(\d{1,3})(?:$|[.+~\s-])")


def qemu_version(value):
    """The QEMU release ``"MAJOR.MINOR"`` of ``value``: a version string
    (``"10.0.2"``, ``"7.2"``, Debian's ``"1:10.0.2+ds-2..."``, QMP
    query-version's ``"qemu"`` dict) or libvirt's ``getVersion()`` number
    (major * 1,000,000 + minor * 1,000 + micro).

    :raises ValueError: not a QEMU version from 2.0 to 99.x
    """
    shown = repr(value)[:60]
    if isinstance(value, dict):             # QMP {"major":, "minor":, ...}
        major, minor = value.get("major"), value.get("minor")
    elif isinstance(value, int) and not isinstance(value, bool):
        major, minor = value // 1_000_000, value // 1_000 % 1_000
    elif isinstance(value, str) and len(value) <= 200:
        m = _VERSION_RE.match(value)
        major, minor = (int(m.group(1)), int(m.group(2))) if m \
            else (None, None)
    else:
        major = minor = None
    if not all(isinstance(v, int) and not isinstance(v, bool)
               for v in (major, minor)):
        raise ValueError(f"not a QEMU version: {shown} (want MAJOR.MINOR, "
                         f"e.g. 10.0)")
    if not (2 <= major <= _MAX_QEMU_MAJOR and 0 <= minor <= 99):
        raise ValueError(f"QEMU version {major}.{minor} is out of range "
                         f"(2.0 to {_MAX_QEMU_MAJOR}.x)")
    return f"{major}.{minor}"


def pages_per_count(version=DEFAULT_QEMU_VERSION):
    """Pages by which QEMU ``version``'s rate-limit counter moves: 1 where
    bytes count as they are queued, :data:`PAGES_PER_FLUSH` where they
    count when flushed (8.2 on)."""
    major, minor = map(int, qemu_version(version).split("."))
    return PAGES_PER_FLUSH if (major, minor) >= FLUSHED_COUNT_SINCE else 1


# Fields of MigrationSettings and their bounds (rtmig_nova.bounds).  The
# downtime limit is only bounded above: the planner tries limits below
# QEMU's least one, 1 ms, to say how far off a request is.
_BOUNDS = (("bandwidth", bounds.BANDWIDTH),
           ("link_rate", bounds.LINK_RATE),
           ("downtime_limit", dataclasses.replace(
               bounds.DOWNTIME_LIMIT, low=0.0, low_open=True)),
           ("check_interval", bounds.CHECK_INTERVAL),
           ("switchover_time", bounds.SWITCHOVER_TIME),
           ("send_backlog", bounds.SEND_BACKLOG),
           ("setup_time", bounds.SETUP_TIME),
           ("setup_time_sd", bounds.SETUP_TIME),
           ("max_rounds", bounds.MAX_ROUNDS),
           ("send_efficiency", bounds.SEND_EFFICIENCY),
           ("write_scale_sd", bounds.LOG_SPREAD),
           ("send_rate_sd", bounds.LOG_SPREAD))


@dataclasses.dataclass(frozen=True)
class MigrationSettings:
    """What a migration is run with.

    :ivar bandwidth: migration rate limit (QEMU's max-bandwidth), bytes/s
    :ivar downtime_limit: QEMU's downtime-limit, seconds
    :ivar dirty_log: ``"sync"`` or ``"clear"`` (see module doc)
    :ivar order: ``"address"`` or ``"rate"``
    :ivar check_interval: pending-size check period, seconds (QEMU: 0.1)
    :ivar switchover_time: fixed extra downtime for device state and the
        switch to the destination, seconds
    :ivar send_backlog: whole bytes queued ahead of the stop-and-copy, in the
        migration socket's send buffer and the link's queue: QEMU counts
        them as sent (its switch-over test does not see them), and they
        cross at the stop rate while the guest is stopped.  On a link
        slower than QEMU's burst the socket fills; rtmig caps its unsent
        bytes (:mod:`rtmig_nova.enforce.send_queue`) and plans with the
        cap's bound
    :ivar setup_time_sd: standard deviation of the setup time, seconds
        (it varies from migration to migration: calibrate both together)
    :ivar link_rate: bytes/s of the stop-and-copy, which QEMU runs without
        its rate limit (``migration_completion`` sets it to INT64_MAX); None:
        ``bandwidth``, a link shaped to the migration's rate (the
        conservative case the planner assumes)
    :ivar setup_time: fixed time before QEMU sends the first page, seconds,
        added to the total time: libvirt's job starts with the prepare
        phase, which starts the destination QEMU (see docs/testbed.md)
    :ivar max_rounds: rounds after which a migration counts as not converging
    :ivar qemu_version: the QEMU release that migrates, ``"MAJOR.MINOR"``
        (see :func:`qemu_version`): how its rate limit counts bytes
    :ivar send_efficiency: bytes the host sends per second over
        :func:`send_rate`'s (1: as QEMU's rate limiter counts)
    :ivar write_scale_sd: standard deviation of log(write intensity during
        the migration / the profile's), one factor on every write rate for
        the whole migration; None: the profile's own
        (:func:`~rtmig_nova.model.uncertainty.write_scale_sd`)
    :ivar send_rate_sd: standard deviation of log(send efficiency), from
        migration to migration (a host calibration)
    """
    bandwidth: float
    downtime_limit: float
    dirty_log: str = "sync"
    order: str = "address"
    check_interval: float = CHECK_INTERVAL
    switchover_time: float = 0.0
    max_rounds: int = 200
    setup_time: float = 0.0
    link_rate: float = None
    setup_time_sd: float = 0.0
    qemu_version: str = DEFAULT_QEMU_VERSION
    send_efficiency: float = 1.0
    write_scale_sd: float = None
    send_rate_sd: float = 0.0
    send_backlog: int = 0

    def __post_init__(self):
        object.__setattr__(self, "qemu_version",
                           qemu_version(self.qemu_version))
        object.__setattr__(self, "bandwidth",
                           positive("bandwidth", self.bandwidth))
        object.__setattr__(self, "downtime_limit",
                           positive("downtime_limit", self.downtime_limit))
        object.__setattr__(self, "check_interval",
                           positive("check_interval", self.check_interval))
        object.__setattr__(self, "switchover_time", non_negative(
            "switchover_time", self.switchover_time))
        object.__setattr__(self, "setup_time", non_negative(
            "setup_time", self.setup_time))
        object.__setattr__(self, "setup_time_sd", non_negative(
            "setup_time_sd", self.setup_time_sd))
        object.__setattr__(self, "send_efficiency", positive(
            "send_efficiency", self.send_efficiency))
        object.__setattr__(self, "send_rate_sd", non_negative(
            "send_rate_sd", self.send_rate_sd))
        if self.write_scale_sd is not None:
            object.__setattr__(self, "write_scale_sd", non_negative(
                "write_scale_sd", self.write_scale_sd))
        if self.link_rate is not None:
            object.__setattr__(self, "link_rate",
                               positive("link_rate", self.link_rate))
            if self.link_rate < self.bandwidth:
                raise ValueError(f"link_rate ({self.link_rate:g} bytes/s) "
                                 f"is below the bandwidth limit "
                                 f"({self.bandwidth:g} bytes/s)")
        if self.dirty_log not in DIRTY_LOGS:
            raise ValueError(f"dirty_log must be one of {DIRTY_LOGS}, "
                             f"got {self.dirty_log!r}")
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, "
                             f"got {self.order!r}")
        if isinstance(self.max_rounds, bool) or \
                not isinstance(self.max_rounds, int) or self.max_rounds < 1:
            raise ValueError(f"max_rounds must be an integer >= 1, "
                             f"got {self.max_rounds!r}")
        # The bounds every entry point checks, also for callers of the
        # Python API: beyond them the arithmetic overflows or runs away.
        for name, bound in _BOUNDS:
            value = getattr(self, name)
            if value is not None:
                bound.check(value, name)

    def threshold_pages(self, page_size):
        """QEMU converges when pending pages x page size < measured
        bandwidth (the send rate) x downtime-limit; this is that bound in
        pages (not necessarily whole)."""
        return self.send_rate(page_size) * self.downtime_limit / page_size

    def send_rate(self, page_size):
        """bytes/s QEMU sends under this rate limit: see :func:`send_rate`,
        times ``send_efficiency``."""
        return send_rate(self.bandwidth, page_size, self.check_interval,
                         self.qemu_version) * self.send_efficiency

    @property
    def burst_rate(self):
        """bytes/s at which QEMU sends the rest of a rate-limit window's
        budget: the link's (``link_rate``), or None for a link shaped to
        the send rate (then sending is even)."""
        return self.link_rate

    @property
    def stop_rate(self):
        """bytes/s of the stop-and-copy (see ``link_rate``)."""
        return self.bandwidth if self.link_rate is None else self.link_rate

    @property
    def stop_overhead(self):
        """Seconds of the downtime besides the pending pages: the
        switch-over time and the send backlog at the stop rate."""
        return stop_overhead(self.switchover_time, self.send_backlog,
                             self.stop_rate)


def stop_overhead(switchover_time, send_backlog, stop_rate):
    """Seconds of a downtime besides its pending pages:
    ``switchover_time`` (s) plus ``send_backlog`` bytes at ``stop_rate``
    bytes/s (arrays broadcast)."""
    return switchover_time + send_backlog / stop_rate


def send_rate(bandwidth, page_size, check_interval=CHECK_INTERVAL,
              qemu_version=DEFAULT_QEMU_VERSION):
    """bytes/s that QEMU ``qemu_version`` sends with max-bandwidth
    ``bandwidth`` (bytes/s) and pages of ``page_size`` bytes.

    Each ``check_interval`` window has a quota of bandwidth x interval
    bytes (max-bandwidth / 10, integer); pages are sent while the bytes
    counted stay within it, so the step of the counter that crosses it
    still goes: one page on 7.2, the 32 pages of a flush from 8.2 on (see
    the module doc).  Full pages (page + 8-byte header) are assumed: a
    window of zero pages (9 bytes each) overshoots less, and only the first
    pass has them.
    """
    step = (page_size + PAGE_HEADER_BYTES) * pages_per_count(qemu_version)
    quota = (bandwidth * check_interval) // 1   # floor; arrays work too
    return (quota // step + 1) * step / check_interval
