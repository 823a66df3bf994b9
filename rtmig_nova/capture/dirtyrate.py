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

"""Coarse capture: one aggregate dirty rate from libvirt's dirty-rate
calculation, for when a probe migration is not wanted.

``virDomainStartDirtyRateCalc`` makes QEMU run ``calc-dirty-rate`` for
``seconds`` (1-60): in its default page-sampling mode QEMU hashes 512
sampled pages per GiB of each RAM block of at least 128 MiB, waits, and
counts the samples whose hash changed (``migration/dirtyrate.c``); the
result, ``dirtyrate.megabytes_per_second`` in the domain's
``VIR_DOMAIN_STATS_DIRTYRATE`` statistics, is in MiB/s (QEMU shifts by 20
bits).  No migration runs and nothing on the guest changes; it works under
TCG and KVM alike.

The result is a :meth:`DirtyProfile.from_aggregate_rate` profile, flagged
``coarse``: one rate spread evenly over memory.  It says nothing about hot
and cold pages, so the model's predictions from it are no better than the
average-rate baselines'.
"""

import time

from rtmig_nova.capture.probe import DEFAULT_URI, ProbeError, _one_line

MIB = 1 << 20
MIN_SECONDS, MAX_SECONDS = 1, 60     # QEMU's calc-time range
STATUS_MEASURED = 2                  # dirtyrate.calc_status: measured
# libvirt's VIR_DOMAIN_STATS_DIRTYRATE and, for getAllDomainStats,
# VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE | _NOWAIT (skip a domain whose
# monitor is busy instead of waiting for its job); a fake libvirt may lack
# the names
_STATS_DIRTYRATE = 1 << 9
_ACTIVE_NOWAIT = 1 | 1 << 29


def check_seconds(seconds):
    """``seconds`` as an int if it is a valid calculation time (whole,
    1-60 s), else :class:`ProbeError`."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
            or int(seconds) != seconds or \
            not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise ProbeError(f"the dirty-rate calculation takes whole seconds "
                         f"from {MIN_SECONDS} to {MAX_SECONDS}, got "
                         f"{seconds!r}")
    return int(seconds)


def start(dom, seconds):
    """Start QEMU's dirty-rate calculation of ``seconds`` on the running
    libvirt domain ``dom`` and return at once.  QEMU resets the previous
    result before it returns, so a measured result read after a
    successful start is this calculation's.  libvirt's error (one that
    says a calculation is already running, too) propagates."""
    dom.startDirtyRateCalc(check_seconds(seconds), 0)


def read(dom):
    """The calculation's result on ``dom``: (dirty rate bytes/s, memory
    bytes) once measured, else None."""
    # getAllDomainStats, not domainListGetStats: the latter refuses the
    # tpool proxies Nova wraps domains in under eventlet.
    uuid = dom.UUIDString()
    values = {}
    conn = dom.connect()
    for other, stats in conn.getAllDomainStats(_STATS_DIRTYRATE,
                                               _ACTIVE_NOWAIT):
        if other.UUIDString() == uuid:
            values = stats
    if values.get("dirtyrate.calc_status") != STATUS_MEASURED or \
            "dirtyrate.megabytes_per_second" not in values:
        return None
    rate = float(values["dirtyrate.megabytes_per_second"]) * MIB
    return rate, int(dom.maxMemory()) * 1024


def wait(dom, until, poll=0.1, clock=time.monotonic, sleep=time.sleep):
    """:func:`read` ``dom`` every ``poll`` s until it has a result or
    ``clock()`` passes ``until`` (s); the result or None."""
    while True:
        found = read(dom)
        if found is not None or clock() >= until:
            return found
        sleep(max(0.0, min(poll, until - clock())))


def coarse_profile(rate, memory, seconds, domain, page_size=4096):
    """The coarse :class:`DirtyProfile` of one calculation's result:
    ``rate`` bytes/s over ``memory`` bytes, measured for ``seconds`` on
    ``domain`` (a name or UUID, for the record)."""
    from rtmig_nova.model.profile import DirtyProfile
    return DirtyProfile.from_aggregate_rate(
        memory, rate, page_size,
        metadata={"source": "libvirt-dirtyrate", "domain": domain,
                  "capture": "dirty-rate calculation",
                  "calc_seconds": int(seconds)})


def measure(name, uri=DEFAULT_URI, seconds=1, poll=0.1, timeout=None):
    """Run libvirt's dirty-rate calculation on the running domain ``name``
    for ``seconds`` (whole, 1-60) and return (dirty rate bytes/s, memory
    bytes).  Errors are :class:`ProbeError` with one line."""
    seconds = check_seconds(seconds)
    try:
        import libvirt
    except ImportError:
        raise ProbeError("libvirt-python is not installed "
                         "(pip install libvirt-python)") from None
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as e:
        raise ProbeError(f"cannot connect to libvirt at {uri}: "
                         f"{_one_line(e)}") from None
    try:
        try:
            dom = conn.lookupByName(name)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise ProbeError(f"unknown domain {name!r} at {uri}") \
                    from None
            raise ProbeError(f"domain {name!r}: {_one_line(e)}") from None
        if not dom.isActive():
            raise ProbeError(f"domain {name!r} is not running")
        try:
            start(dom, seconds)
        except libvirt.libvirtError as e:
            raise ProbeError(f"dirty-rate calculation of {name!r}: "
                             f"{_one_line(e)}") from None
        limit = timeout or seconds + 30
        found = wait(dom, time.monotonic() + limit, poll)
        if found is None:
            status = conn.domainListGetStats(
                [dom], libvirt.VIR_DOMAIN_STATS_DIRTYRATE)[0][1].get(
                    "dirtyrate.calc_status")
            raise ProbeError(f"dirty-rate calculation of {name!r} did "
                             f"not finish in {limit:g} s (status "
                             f"{status})")
        return found
    finally:
        conn.close()


def capture_domain_coarse(name, uri=DEFAULT_URI, seconds=1, page_size=4096):
    """A coarse :class:`DirtyProfile` of the running domain ``name`` from
    one dirty-rate calculation of ``seconds``."""
    rate, memory = measure(name, uri, seconds)
    return coarse_profile(rate, memory, seconds, name, page_size)
