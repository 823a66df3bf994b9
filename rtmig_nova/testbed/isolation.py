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

"""One migration of a real-time guest among neighbours, as its viewers see
it (issue 11's experiment, on the testbed's LAN).

Host A runs the RT guest (``rtmig-video`` streaming its frames to the
client namespace across the shaped veth, :mod:`traffic`), a noisy
neighbour (``rtmig-burn``) and a TCP bulk flow from A to the client over
the same veth.  The RT guest is live-migrated to B under a scenario:

``stock``
    Nova's defaults: no bandwidth limit (``live_migration_bandwidth`` 0)
    and Nova's downtime steps (``live_migration_downtime`` 500 ms in 10
    steps, the first 50 ms, one every 75 s per GiB of RAM, at least 2).
``auto-converge``
    the same with ``VIR_MIGRATE_AUTO_CONVERGE`` (QEMU throttles the
    guest's vCPUs while the pre-copy does not converge).

The client's records give each frame's lateness and misses
(:mod:`playout`), the longest freeze, and the frames of the migration's
window; the hosts give the migration's time, downtime and bytes.

Units: bytes, seconds, bytes/s.
"""

import dataclasses
import os
import time
import uuid

import numpy as np

from rtmig_nova.testbed import guest as guest_mod
from rtmig_nova.testbed import hosts
from rtmig_nova.testbed import playout
from rtmig_nova.testbed import traffic
from rtmig_nova.testbed import validation

MIB = 1 << 20
SCENARIOS = ("stock", "auto-converge")
# Nova's [libvirt] defaults (nova/conf/libvirt.py, 34.0.0), used when Nova
# is not importable
NOVA_DOWNTIME_MS = 500
NOVA_DOWNTIME_STEPS = 10
NOVA_DOWNTIME_DELAY_S = 75


def nova_downtime_steps(memory_mib):
    """Nova's downtime schedule for a guest of ``memory_mib`` MiB and no
    local disk: ``(delay_s, limit_ms)`` pairs, from Nova's own
    ``nova.virt.libvirt.migration.downtime_steps`` where Nova is
    installed.  Nova counts at least 2 GB of RAM
    (``LibvirtDriver._live_migration_data_gb``)."""
    data_gb = max(memory_mib / 1024.0, 2.0)
    try:
        from nova.virt.libvirt import migration
        return list(migration.downtime_steps(data_gb))
    except ImportError:
        delay = int(NOVA_DOWNTIME_DELAY_S * data_gb)
        base = NOVA_DOWNTIME_MS / NOVA_DOWNTIME_STEPS
        offset = (NOVA_DOWNTIME_MS - base) / NOVA_DOWNTIME_STEPS
        return [(int(delay * i), int(base + offset * i))
                for i in range(NOVA_DOWNTIME_STEPS + 1)]


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every run of the experiment shares.

    :ivar link_rate: the veth's capacity, bytes/s (each direction)
    :ivar deadline_s: the migration's deadline, s
    :ivar max_downtime_s: the downtime bound, s
    :ivar period_s: the video's frame period, s
    :ivar tolerance_s: the client's playout buffer, s: a frame later than
        its slot by more is a deadline miss
    :ivar settle_s: s of streaming before the migration starts
    :ivar after_s: s of streaming after it ends
    :ivar memory_mib: the RT guest's RAM, MiB
    :ivar video: the video workload's ``rtmig.*`` parameters
    :ivar noisy: run the noisy neighbour
    :ivar bulk: run the bulk flow
    """
    link_rate: float = 12.5e6
    deadline_s: float = 30.0
    max_downtime_s: float = 0.1
    period_s: float = 0.04
    tolerance_s: float = 0.01
    settle_s: float = 4.0
    after_s: float = 4.0
    memory_mib: int = 128
    video: tuple = (("width", 320), ("height", 240), ("ring", 8),
                    ("stream", "16K"))
    noisy: bool = True
    bulk: bool = True


def _boot(bed, boot_files, cmdline, memory_mib, workload, address=None,
          timeout=guest_mod.BOOT_TIMEOUT):
    name = hosts.DOMAIN_PREFIX + uuid.uuid4().hex[:8]
    console = os.path.join(bed.workdir, name + ".console")
    bed.start_guest(*boot_files, cmdline, name=name, memory_mib=memory_mib,
                    console_log=console, address=address)
    guest_mod.wait_until_running(console, workload, timeout)
    return name


def _destroy_everywhere(name):
    for uri in (hosts.URI_A, hosts.URI_B):
        validation.destroy_domain(uri, name)


def run(bed, boot_files, scenario, setup=Setup(), index=0, out_dir=None,
        log=None):
    """One run of ``scenario`` on ``bed`` (a testbed made with
    ``lan=True`` and shaped to ``setup.link_rate``).  Returns a dict: the
    row of the experiment's CSV (see :data:`FIELDS`) plus ``timeline``
    (the migration's progress samples) and ``playout``
    (:class:`playout.Playout`).  Every guest, flow and receiver it started
    is gone when it returns."""
    if scenario not in SCENARIOS:
        raise ValueError("scenario %r: have %s" % (scenario,
                                                   ", ".join(SCENARIOS)))
    log = log or (lambda msg: None)
    out_dir = out_dir or bed.workdir
    address = hosts.GUEST_IPS[0]
    rx_path = os.path.join(out_dir, "%s-%d.frames" % (scenario, index))
    if os.path.exists(rx_path):
        os.unlink(rx_path)
    bound = setup.settle_s + setup.deadline_s * 3 + setup.after_s + 120
    cmdline = guest_mod.kernel_cmdline(
        "video", address=address + "/24", dest=hosts.IP_CLIENT,
        port=traffic.FRAME_PORT,
        period_us=int(round(setup.period_s * 1e6)),
        extra=["panic=0"], **dict(setup.video))
    names, flow, rx = [], None, None
    measured, error = None, None
    try:
        rx = traffic.FrameReceiver(hosts.in_client(), rx_path, bound)
        if setup.noisy:
            names.append(_boot(bed, boot_files, guest_mod.kernel_cmdline(
                "burn", threads=1), 128, "burn"))
        rt = _boot(bed, boot_files, cmdline, setup.memory_mib, "video",
                   address=address)
        names.append(rt)
        if setup.bulk:
            flow = traffic.BulkFlow(hosts.in_client(), hosts.IP_CLIENT,
                                    bound)
        time.sleep(setup.settle_s)
        log("%s %d: migrating" % (scenario, index))
        try:
            measured = bed.migrate(
                rt, downtime_steps=nova_downtime_steps(setup.memory_mib),
                auto_converge=scenario == "auto-converge",
                timeout=setup.deadline_s * 3)
        except hosts.MigrationTimeout as exc:
            error = "timed out: %s" % exc
            measured = dict(exc.stats, started_at=None)
        except guest_mod.GuestIntegrityError as exc:
            error = "integrity: %s" % exc
            measured = exc.stats
        time.sleep(setup.after_s)
    finally:
        sent = flow.stop() if flow is not None else 0
        if rx is not None:
            rx.stop()
        for name in names:
            _destroy_everywhere(name)
    records = traffic.read_records(rx_path)
    return score(scenario, index, setup, records, measured, error, sent)


FIELDS = ("scenario", "run", "frames", "misses", "lost_frames",
          "max_gap_ms", "total_time_s", "deadline_s", "downtime_ms",
          "max_downtime_ms", "transferred_bytes", "iterations",
          "bulk_bytes", "integrity_ok", "error")


def score(scenario, index, setup, records, measured, error, bulk_bytes):
    """The CSV row of a run from the client's ``records`` and what the
    hosts ``measured`` (``Testbed.migrate``'s statistics, or a timed-out
    job's last sample)."""
    frames, done = playout.frame_completion(
        records["frame"], records["index"], records["count"],
        records["arrival_ns"] / 1e9)
    po = playout.playout(frames, done, setup.period_s, setup.tolerance_s)
    m = measured or {}
    check = m.get("guest_check")
    row = {
        "scenario": scenario, "run": index, "frames": po.count,
        "misses": po.misses, "lost_frames": po.lost,
        "max_gap_ms": po.max_gap_s * 1e3,
        "total_time_s": m.get("total_time_s"),
        "deadline_s": setup.deadline_s,
        "downtime_ms": (None if m.get("downtime_s") is None
                        else m["downtime_s"] * 1e3),
        "max_downtime_ms": setup.max_downtime_s * 1e3,
        "transferred_bytes": m.get("transferred_bytes"),
        "iterations": m.get("iterations"),
        "bulk_bytes": bulk_bytes,
        "integrity_ok": None if check is None else bool(check.ok),
        "error": error or "",
    }
    row["timeline"] = m.get("progress", [])
    row["started_at"] = m.get("started_at")
    row["playout"] = po
    row["lateness_s"] = np.asarray(po.lateness_s)
    return row
