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
``rtmig``
    the seed paper's answer, with the functions the Nova driver extension
    calls: a profile captured from the same workload (:func:`capture`), a
    plan for the deadline and downtime bound at the confidence
    (:func:`plan`), and, for the whole run, the RT guest's vCPU under
    SCHED_DEADLINE and A's end of the link reserved in HTB classes (the
    migration's, hard-capped at what QEMU sends under the planned
    bandwidth; the RT stream's; libvirt's RPC); for the migration, the
    planned bandwidth and downtime limit, SCHED_DEADLINE on QEMU's
    migration thread and on the incoming vCPU thread on B (and, with
    ``Setup.emulator_cap``, the emulator cgroup's CFS bandwidth).  No
    closed loop (the plan alone is tested).

The client's records give each frame's lateness and misses
(:mod:`playout`), the longest freeze, and the frames of the migration's
window; the hosts give the migration's time, downtime and bytes.

Units: bytes, seconds, bytes/s.
"""

import dataclasses
import json
import os
import time
import uuid

import numpy as np

from rtmig_nova import conf
from rtmig_nova import planning
from rtmig_nova.compute import vm_reservation
from rtmig_nova.enforce import deadline
from rtmig_nova.enforce import libvirt_controls
from rtmig_nova.enforce import netshape
from rtmig_nova.enforce import privileged
from rtmig_nova.enforce import reservation
from rtmig_nova.model import flavor
from rtmig_nova.model import ledger
from rtmig_nova.model import precopy
from rtmig_nova.testbed import cases
from rtmig_nova.testbed import guest as guest_mod
from rtmig_nova.testbed import guest_cpu
from rtmig_nova.testbed import hosts
from rtmig_nova.testbed import playout
from rtmig_nova.testbed import reserved
from rtmig_nova.testbed import traffic
from rtmig_nova.testbed import validation

MIB = 1 << 20
SCENARIOS = cases.ISOLATION_SCENARIOS
RPC_RATE = 100e3        # bytes/s reserved for libvirt's RPC on the link
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
    :ivar vcpu_reservation: the RT flavor's ``rtmig:vcpu_reservation``
        (the video guest's vCPU used 8.5% of a CPU alone, 6% beside the
        burn neighbour, on TCG here)
    :ivar vcpu_reclaim: the RT flavor's ``rtmig:vcpu_reclaim``: its vCPU
        may run on idle CPU time beyond its runtime.  On by default: under
        a hard 4ms/10ms CBS the TCG guest took 115-192 ms after B resumed
        it to send its next frame (it catches up on 100+ ms of timers and
        translated code at 40% of a CPU), with reclaiming 43-78 ms, in 3
        runs each (docs/results-isolation.md)
    :ivar confidence: the flavor's ``rtmig:confidence``
    :ivar stream_rate: the flavor's ``rtmig:net_rate``, bytes/s: the
        video stream's class (about 1.25 times the 424 kB/s it sends)
    :ivar stream_burst: the stream class's burst, bytes (a 16 KiB frame's
        datagram train and headers, three times)
    :ivar capture_s: s of probe migrations for the rtmig scenario's profile
    :ivar emulator_cap: rtmig: also cap the emulator cgroup's CFS
        bandwidth at the migration thread's planned CPU, as the Nova
        driver does.  Off by default: on this TCG testbed that cgroup also
        holds QEMU's main loop, the guest's virtio-net backend, and the
        1% cap (a 6-7 MiB/s plan) delayed the RT stream -- 10 misses in
        604 frames with it, 2-4 without; with the cap and no
        SCHED_DEADLINE on the migration thread, 73 and 125 and a
        migration 40% slower than planned.  SCHED_DEADLINE on the
        migration thread (a hard CBS) bounds its CPU without it.
    :ivar cpu_cost_per_page: the migration thread's CPU seconds per page
        sent on this testbed under the experiment's load, the plans'
        ``[rtmig] cpu_cost_per_page`` (None: the option's).  Under
        SCHED_DEADLINE sized from the option's 2.5 us QEMU sent 55-65% of
        the planned rate here (7 MiB/s plans: 4.3-4.6 MB/s; 4 MiB/s:
        2.1-3.6 MB/s) and the pre-copy stopped converging: about 5.5-6.3
        us a page (the veth's receive path and the bridge run in the
        sender's time); without the thread's reservation a 5 MiB/s plan
        took 16.2 s against 15.7 s predicted.
    :ivar send_queue_cap: the ``[rtmig] send_queue_cap`` of the plans and
        of QEMU's socket, bytes (0: none)
    :ivar migration_thread_reclaim: ``[rtmig] migration_thread_reclaim``:
        the migration thread's SCHED_DEADLINE with SCHED_FLAG_RECLAIM.  On
        by default: capped, its overrun in the stop phase left it 6-10 ms
        runnable but not running; QEMU's median downtime on two machines
        was 139 and 128 ms capped, 92 and 95 ms reclaiming, 3 runs a side
        each (docs/results-isolation.md)
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
    vcpu_reservation: str = "4ms/10ms"
    vcpu_reclaim: bool = True
    confidence: float = 0.95
    stream_rate: float = 530e3
    stream_burst: float = 54e3
    capture_s: float = 20.0
    emulator_cap: bool = False
    cpu_cost_per_page: float = 8e-6
    send_queue_cap: int = 65536
    migration_thread_reclaim: bool = True

    def request(self):
        """The RT guest's :class:`~rtmig_nova.model.flavor.RTRequest`: its
        flavor's extra specs, parsed as Nova's validators parse them."""
        return flavor.parse_specs({
            "rtmig:vcpu_reservation": self.vcpu_reservation,
            "rtmig:vcpu_reclaim": "true" if self.vcpu_reclaim else "false",
            "rtmig:migration_deadline": "%gs" % self.deadline_s,
            "rtmig:max_downtime": "%gms" % (self.max_downtime_s * 1e3),
            "rtmig:confidence": "%g" % self.confidence,
            "rtmig:net_rate": "%dB/s" % int(round(self.stream_rate))})


def _boot(bed, boot_files, cmdline, memory_mib, workload, address=None,
          timeout=guest_mod.BOOT_TIMEOUT):
    name = hosts.DOMAIN_PREFIX + uuid.uuid4().hex[:8]
    console = os.path.join(bed.workdir, name + ".console")
    bed.start_guest(*boot_files, cmdline, name=name, memory_mib=memory_mib,
                    console_log=console, address=address)
    try:
        guest_mod.wait_until_running(console, workload, timeout)
    except BaseException:
        bed.destroy_guest(name)
        raise
    return name


class PlanInfeasible(ValueError):
    """The rtmig scenario's request has no feasible plan on this link
    (one line: which limit)."""


def video_cmdline(setup):
    """The RT guest's kernel command line: the video workload streaming
    to the client."""
    return guest_mod.kernel_cmdline(
        "video", address=hosts.GUEST_IPS[0] + "/24", dest=hosts.IP_CLIENT,
        port=traffic.FRAME_PORT,
        period_us=int(round(setup.period_s * 1e6)),
        extra=["panic=0"], **dict(setup.video))


def capture(bed, boot_files, setup=Setup(), log=None):
    """The RT guest's :class:`~rtmig_nova.model.profile.DirtyProfile`, as
    an operator would capture it: a guest booted with the same workload on
    A (its stream goes to the client, where nothing listens yet), probed
    for ``setup.capture_s`` s of migrations (the testbed's defaults), then
    destroyed.  The probe runs on the unshaped link; the link is shaped to
    ``setup.link_rate`` again afterwards.  The probed guest is not the one
    migrated (see :func:`validation.capture_profile`)."""
    from rtmig_nova.capture import probe
    log = log or (lambda msg: None)
    bed.unshape()
    try:
        name = _boot(bed, boot_files, video_cmdline(setup), setup.memory_mib,
                     "video", address=hosts.GUEST_IPS[0])
        try:
            log("capturing the RT guest's profile (%gs of probe "
                "migrations)" % setup.capture_s)
            res = probe.capture_domain(
                name, hosts.URI_A, duration=setup.capture_s,
                bandwidth=validation.DEFAULT_PROBE_BANDWIDTH,
                first_pass_bandwidth=validation.PROBE_FIRST_PASS_BANDWIDTH)
        finally:
            bed.destroy_guest(name)
    finally:
        bed.shape(setup.link_rate)
    return res.profile


def migration_link(setup, qemu_version):
    """The highest QEMU bandwidth, in whole MiB/s as libvirt sets it
    (bytes/s), whose stream as QEMU ``qemu_version`` sends it
    (:func:`precopy.send_rate`: more than the cap, relatively more at low
    caps) in Ethernet frames fits the link beside the RT stream's and
    libvirt RPC's reserved classes: what the migration may be planned
    over.

    :raises PlanInfeasible: not even 1 MiB/s fits
    """
    free = setup.link_rate - setup.stream_rate - RPC_RATE
    best = None
    for mib in range(1, int(max(free, 0) // MIB) + 1):
        wire = netshape.frame_rate(precopy.send_rate(
            mib * MIB, validation.PAGE_SIZE, qemu_version=qemu_version))
        if wire > free:
            break
        best = mib * MIB
    if best is None:
        raise PlanInfeasible("the link (%g B/s) has not 1 MiB/s of "
                             "migration left beside the stream's and RPC's "
                             "classes" % setup.link_rate)
    return float(best)


def plan(profile, setup, qemu_version, calibration=None):
    """The :class:`~rtmig_nova.model.sizing.Plan` of the RT guest's
    migration: :func:`ledger.migration_plan` (what the Nova driver calls)
    for ``setup.request()`` over :func:`migration_link`, with the
    ``[rtmig]`` options (the CPU cost per page ``setup``'s), by QEMU
    ``qemu_version``, with the testbed's
    ``calibration`` (a calibration.json dict, or None) for the setup and
    switch-over times.  The calibrated link rate is the unshaped veth's,
    not this link's: left out.

    :raises PlanInfeasible: no plan meets the request
    """
    options = planning.plan_options(conf.CONF.rtmig, qemu_version)
    if setup.cpu_cost_per_page is not None:
        options["cpu_cost_per_page"] = setup.cpu_cost_per_page
    options["send_backlog"] = planning.send_backlog(setup.send_queue_cap)
    options.update(validation.model_settings(calibration))
    options.pop("link_rate", None)
    link = migration_link(setup, options["qemu_version"])
    pl = ledger.migration_plan(profile, setup.request(), link, options)
    if not pl.feasible:
        raise PlanInfeasible("no plan within %gs and %gms over %.4g B/s: %s"
                             % (setup.deadline_s, setup.max_downtime_s * 1e3,
                                link, pl.reason))
    return pl


def link_shaping(setup, pl, qemu_version):
    """The :class:`~netshape.ShapingPlan` of A's end of the link for the
    run: the migration's class as the Nova driver makes it
    (:func:`reservation.migration_shaping`: a hard cap at what QEMU sends
    under the planned bandwidth, to B's migration ports), the RT stream's
    (its ``rtmig:net_rate`` with a frame's burst, to the client's frame
    port) and libvirt RPC's; the bulk flow is best effort.  Classes other
    than the migration's borrow up to the link when it is idle."""
    shaping = reservation.migration_shaping(
        hosts.VETH_A, setup.link_rate, pl.bandwidth,
        netshape.MIGRATION_PORTS, peer=hosts.IP_B, qemu_version=qemu_version)
    shaping.reserved = [
        netshape.TrafficClass(
            "rt-stream", setup.stream_rate, ceil=setup.link_rate,
            burst=setup.stream_burst,
            match=netshape.Match(dst_ports=(traffic.FRAME_PORT,) * 2,
                                 peer=hosts.IP_CLIENT)),
        netshape.TrafficClass(
            "libvirt-rpc", RPC_RATE, ceil=setup.link_rate,
            match=netshape.Match(dst_ports=(hosts.LIBVIRTD_TCP_PORT,) * 2,
                                 peer=hosts.IP_B))]
    return shaping


class _WhenRunning:
    """``on_poll`` of the rtmig migration: SCHED_DEADLINE on QEMU's
    migration thread once it exists (the Nova driver's
    ``reserve_migration_thread``), with the cap on its socket's unsent
    bytes (``send_cap``, the setup's ``send_queue_cap``; 0: none) and its
    pacing at the migration class's rate (``pacing``, bytes/s), and on
    B's incoming vCPU threads once they exist (its arrival watcher)."""

    def __init__(self, reservations, name, pl, request, send_cap=None,
                 pacing=None, thread_flags=0):
        self.reservations = reservations
        self.name = name
        self.pl = pl
        self.request = request
        self.send_cap = send_cap
        self.pacing = pacing
        self.thread_flags = thread_flags
        self.thread_done = pl.cpu is None and not send_cap and not pacing
        self.incoming_done = False

    def __call__(self, dom, elapsed_s):
        if not self.thread_done:
            steps = reservation.running_migration_steps(
                dom, None if self.pl.cpu is None else
                reservation.migration_thread_deadline(self.pl.cpu),
                self.send_cap, hosts.IP_B, pacing=self.pacing,
                thread_flags=self.thread_flags)
            if steps:
                self.reservations.apply("migration thread", steps)
                self.thread_done = True
        if not self.incoming_done:
            tids = hosts.incoming_vcpu_threads(self.name)
            if tids:
                self.reservations.apply("vcpu on B", vm_reservation.vcpu_steps(
                    tids, self.request))
                self.incoming_done = True


def _domain_facts(name):
    """(the domain's migratable definition, its vCPU thread ids) on A,
    read before any reservation changes its tuning: the definition is
    what B gets (as the Nova driver passes it)."""
    import libvirt
    conn = libvirt_controls.connect(hosts.URI_A)
    try:
        dom = libvirt_controls.lookup(conn, name)
        return (dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE),
                libvirt_controls.vcpu_threads(dom))
    finally:
        conn.close()


def run(bed, boot_files, scenario, setup=Setup(), index=0, out_dir=None,
        log=None, profile=None, calibration=None):
    """One run of ``scenario`` on ``bed`` (a testbed made with
    ``lan=True`` and shaped to ``setup.link_rate``).  Returns a dict: the
    row of the experiment's CSV (see :data:`FIELDS`) plus ``timeline``
    (the migration's progress samples), ``playout``
    (:class:`playout.Playout`) and ``reserved`` (what the rtmig scenario
    reserved, in order: ``link``, ``vcpu on A``, ``migration``,
    ``migration thread``, ``vcpu on B``).  Every guest, flow, receiver and
    reservation it started is gone when it returns; the link is shaped
    as before.

    The rtmig scenario plans from ``profile`` (a
    :class:`~rtmig_nova.model.profile.DirtyProfile` of the same workload,
    from :func:`capture`) with ``calibration`` (see :func:`plan`); its
    reservations' state files are in ``OUT_DIR/reservations``.

    :raises PlanInfeasible: rtmig: the request has no plan (nothing was
        started)
    """
    if scenario not in SCENARIOS:
        raise ValueError("scenario %r: have %s" % (scenario,
                                                   ", ".join(SCENARIOS)))
    if scenario == "rtmig" and profile is None:
        raise ValueError("the rtmig scenario plans from a profile: "
                         "capture() one first")
    log = log or (lambda msg: None)
    out_dir = out_dir or bed.workdir
    pl = qemu = None
    if scenario == "rtmig":
        qemu = hosts.qemu_version()
        pl = plan(profile, setup, qemu, calibration)
        log("%s %d: plan %d MiB/s, downtime limit %d ms, %.1f s predicted"
            % (scenario, index, round(pl.bandwidth / MIB),
               round(pl.downtime_limit * 1e3),
               pl.prediction.total_time.quantile(0.5)))
    rx_path = os.path.join(out_dir, "%s-%d.frames" % (scenario, index))
    if os.path.exists(rx_path):
        os.unlink(rx_path)
    bound = setup.settle_s + setup.deadline_s * 3 + setup.after_s + 120
    held = reserved.Reservations(os.path.join(out_dir, "reservations"),
                                 "isolation %s-%d" % (scenario, index))
    with privileged.in_process_as_root():
        try:
            return _run(bed, boot_files, scenario, setup, index, log, pl,
                        qemu, rx_path, bound, held)
        finally:
            if pl is not None:
                bed.shape(setup.link_rate, ends=("a",))


def _run(bed, boot_files, scenario, setup, index, log, pl, qemu, rx_path,
         bound, held):
    names, flow, rx, sampler = [], None, None, None
    measured, error = None, None
    try:
        if pl is not None:
            bed.unshape(ends=("a",))
            shaping = link_shaping(setup, pl,
                                   pl.settings.get("qemu_version", qemu))
            held.apply("link", [reservation.ShapingStep(shaping)])
        rx = traffic.FrameReceiver(hosts.in_client(), rx_path, bound)
        if setup.noisy:
            names.append(_boot(bed, boot_files, guest_mod.kernel_cmdline(
                "burn", threads=1), 128, "burn"))
        rt = _boot(bed, boot_files, video_cmdline(setup), setup.memory_mib,
                   "video", address=hosts.GUEST_IPS[0])
        names.append(rt)
        migrate_args = {"downtime_steps":
                        nova_downtime_steps(setup.memory_mib),
                        "auto_converge": scenario == "auto-converge"}
        dest_xml, vcpus = _domain_facts(rt)
        if pl is not None:
            request = setup.request()
            held.apply("vcpu on A", vm_reservation.vcpu_steps(vcpus, request))
            migrate_args = {
                "bandwidth_bytes_per_s": pl.bandwidth,
                "downtime_limit_s": pl.downtime_limit,
                "destination_xml": dest_xml,
                "on_poll": _WhenRunning(
                    held, rt, pl, request, setup.send_queue_cap,
                    reservation.migration_pacing(shaping),
                    deadline.SCHED_FLAG_RECLAIM
                    if setup.migration_thread_reclaim else 0)}
        if setup.bulk:
            flow = traffic.BulkFlow(hosts.in_client(), hosts.IP_CLIENT,
                                    bound)
        time.sleep(setup.settle_s)
        if pl is not None:
            cpu = reservation.migration_thread_cpu(pl.cpu) \
                if pl.cpu and setup.emulator_cap else None
            held.apply("migration", reservation.migration_steps(
                hosts.URI_A, rt, pl.bandwidth, pl.downtime_limit, cpu=cpu))
        log("%s %d: migrating" % (scenario, index))
        sampler = guest_cpu.VcpuSampler(rt, vcpus).start()
        try:
            measured = bed.migrate(rt, timeout=setup.deadline_s * 3,
                                   **migrate_args)
        except hosts.MigrationTimeout as exc:
            error = "timed out: %s" % exc
            measured = dict(exc.stats, started_at=None)
        except guest_mod.GuestIntegrityError as exc:
            error = "integrity: %s" % exc
            measured = exc.stats
        time.sleep(setup.after_s)
        measured = dict(measured or {}, vcpu_cpu=sampler.stop())
    finally:
        if sampler is not None:
            sampler.stop()
        stream_end = time.monotonic()
        sent = _cleanup(flow, rx, names, bed, held)
    records = traffic.read_records(rx_path)
    row = score(scenario, index, setup, records, measured, error, sent, pl,
                stream_end)
    row["reserved"] = held.applied
    return row


def _cleanup(flow, rx, names, bed, held):
    """Stop the flow and the receiver, destroy the guests, release the
    reservations: each tried whatever the others do; the first failure
    is raised after all.  Returns the bulk flow's bytes."""
    first, sent = None, 0
    steps = [lambda: rx.stop() if rx is not None else None]
    steps += [lambda n=n: bed.destroy_guest(n) for n in names]
    steps.append(held.release)
    try:
        sent = flow.stop() if flow is not None else 0
    except Exception as exc:
        first = exc
    for step in steps:
        try:
            step()
        except Exception as exc:
            first = first or exc
    if first is not None:
        raise first
    return sent


FIELDS = ("scenario", "run", "frames", "misses", "lost_frames",
          "max_gap_ms", "total_time_s", "deadline_s", "predicted_total_s",
          "predicted_total_hi_s", "downtime_ms", "max_downtime_ms",
          "downtime_limit_ms", "bandwidth_limit_bytes_per_s",
          "transferred_bytes", "iterations", "bulk_bytes", "integrity_ok",
          "period_ms", "tolerance_ms", "paused_ms", "resume_to_frame_ms",
          "error")


def score(scenario, index, setup, records, measured, error, bulk_bytes,
          pl=None, stream_end_s=None):
    """The CSV row of a run from the client's ``records``, what the
    hosts ``measured`` (``Testbed.migrate``'s statistics, or a timed-out
    job's last sample) and, for rtmig, the plan ``pl``: its predicted
    median total time and the one at the confidence, its downtime limit
    and bandwidth.  ``stream_end_s`` (``time.monotonic()``): when the
    client stopped listening; the silence since the last complete frame
    counts as a freeze (a stream that never came back from B), and no
    frame at all as an endless one."""
    frames, done = playout.frame_completion(
        records["frame"], records["index"], records["count"],
        records["arrival_ns"] / 1e9)
    po = playout.playout(frames, done, setup.period_s, setup.tolerance_s)
    freeze_s = po.max_gap_s
    complete = done[np.isfinite(done)]
    if not complete.size:
        freeze_s = float("inf")
    elif stream_end_s is not None:
        freeze_s = max(freeze_s, stream_end_s - float(complete.max()))
    m = measured or {}
    check = m.get("guest_check")
    paused_ms = resume_to_frame_ms = None
    if m.get("paused_at") is not None and m.get("resumed_at") is not None:
        paused_ms = (m["resumed_at"] - m["paused_at"]) * 1e3
        after = complete[complete >= m["resumed_at"]]
        if after.size:
            resume_to_frame_ms = (float(after.min()) - m["resumed_at"]) * 1e3
    row = {
        "scenario": scenario, "run": index, "frames": po.count,
        "misses": po.misses, "lost_frames": po.lost,
        "max_gap_ms": freeze_s * 1e3,
        "total_time_s": m.get("total_time_s"),
        "deadline_s": setup.deadline_s,
        "downtime_ms": (None if m.get("downtime_s") is None
                        else m["downtime_s"] * 1e3),
        "max_downtime_ms": setup.max_downtime_s * 1e3,
        "transferred_bytes": m.get("transferred_bytes"),
        "iterations": m.get("iterations"),
        "bulk_bytes": bulk_bytes,
        "predicted_total_s": None if pl is None else float(
            pl.prediction.total_time.quantile(0.5)),
        "predicted_total_hi_s": None if pl is None else float(
            pl.prediction.total_time.quantile(pl.confidence)),
        "downtime_limit_ms": (None if m.get("downtime_limit_s") is None
                              else m["downtime_limit_s"] * 1e3),
        "bandwidth_limit_bytes_per_s": m.get("bandwidth_limit_bytes_per_s"),
        "period_ms": setup.period_s * 1e3,
        "tolerance_ms": setup.tolerance_s * 1e3,
        "integrity_ok": None if check is None else bool(check.ok),
        "paused_ms": paused_ms,
        "resume_to_frame_ms": resume_to_frame_ms,
        "error": error or "",
    }
    row["timeline"] = m.get("progress", [])
    row["started_at"] = m.get("started_at")
    row["paused_at"] = m.get("paused_at")
    row["resumed_at"] = m.get("resumed_at")
    row["vcpu_cpu"] = m.get("vcpu_cpu", [])
    row["playout"] = po
    row["lateness_s"] = np.asarray(po.lateness_s)
    return row


# -- the experiment ---------------------------------------------------------

CSV_NAME = "isolation.csv"
PROFILE_NAME = "profile.json"
RUNS_DIR = "runs"


def plan_runs(scenarios, repetitions):
    """(scenario, run) pairs, the scenarios interleaved so that a drift of
    the machine over the hour touches each alike."""
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown or not scenarios:
        raise ValueError("scenarios %s: have %s" % (
            ", ".join(unknown) or "(none)", ", ".join(SCENARIOS)))
    return [(s, i) for i in range(repetitions) for s in scenarios]


def frames_path(out_dir, scenario, index):
    """The client's records of a run in an experiment's ``out_dir``."""
    return os.path.join(out_dir, RUNS_DIR,
                        "%s-%d.frames" % (scenario, index))


def timeline_path(out_dir, scenario, index):
    """A run's migration progress (JSON) in an experiment's ``out_dir``."""
    return os.path.join(out_dir, RUNS_DIR, "%s-%d.json" % (scenario, index))


INT_FIELDS = ("run", "frames", "misses", "lost_frames", "iterations")
# what a measured row must hold to be scored; one without them is done again
NEEDED = ("frames", "misses", "max_gap_ms", "deadline_s", "max_downtime_ms",
          "period_ms", "tolerance_ms")


def _usable(row):
    """The CSV row with its counts as ints, or None if it is not one this
    module wrote (then its run is done again)."""
    if row.get("scenario") not in SCENARIOS:
        return None
    out = dict(row)
    for key in INT_FIELDS:
        value = out.get(key)
        if value is None:
            continue
        if not isinstance(value, float) or not value.is_integer() or \
                not 0 <= value < 1e9:
            return None
        out[key] = int(value)
    if out.get("run") is None:
        return None
    if out.get("frames") is not None and not all(
            isinstance(out.get(k), float) or isinstance(out.get(k), int)
            for k in NEEDED):
        return None
    out["error"] = out.get("error") if isinstance(out.get("error"),
                                                  str) else ""
    return out


def measured(row):
    """Whether a row is a run's result (a timed-out or integrity-failed
    migration included), not a run that failed before it could be scored
    (which a restart does again)."""
    return row.get("frames") is not None


def read_rows(out_dir):
    """The rows of ``OUT_DIR/isolation.csv`` by (scenario, run), counts as
    ints, other numbers as floats; none if there is no CSV yet.  Rows this
    module did not write are left out (their runs are done again).

    :raises ValueError: the CSV cannot be read (one line)
    """
    import csv
    from rtmig_nova.testbed import report
    path = os.path.join(out_dir, CSV_NAME)
    if not os.path.exists(path):
        return {}
    try:
        raw = report.read_csv(path)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError("%s: %s" % (path, " ".join(str(exc).split())))
    rows = {}
    for r in raw:
        r = _usable(r)
        if r is not None:
            rows[(r["scenario"], r["run"])] = r
    return rows


def _write_rows(out_dir, rows):
    from rtmig_nova.testbed import report
    order = {s: i for i, s in enumerate(SCENARIOS)}
    report.write_csv([{k: r.get(k) for k in FIELDS} for _, r in sorted(
        rows.items(), key=lambda kv: (order[kv[0][0]], kv[0][1]))],
        os.path.join(out_dir, CSV_NAME))


def _failed_row(scenario, index, setup, error):
    row = dict.fromkeys(FIELDS)
    row.update(scenario=scenario, run=index, deadline_s=setup.deadline_s,
               max_downtime_ms=setup.max_downtime_s * 1e3,
               period_ms=setup.period_s * 1e3,
               tolerance_ms=setup.tolerance_s * 1e3,
               error=" ".join(str(error).split())[:300])
    return row


def run_experiment(out_dir, workdir, boot_files, runs, setup=Setup(),
                   calibration=None, progress=None, log=None):
    """Do the ``runs`` (from :func:`plan_runs`) that ``out_dir`` does not
    hold yet (a row without an error in its CSV), on a testbed brought up
    in ``workdir`` and torn down at the end (also on error or Ctrl-C).
    The CSV is rewritten after every run, so a restarted experiment
    resumes where it stopped.  The rtmig scenario plans from
    ``OUT_DIR/profile.json``, captured first when it is not there.  A run
    that fails is recorded with its ``error`` and the experiment goes on.
    ``progress(done, total, row)`` after each run.  Returns the rows by
    (scenario, run)."""
    from rtmig_nova.model import profile as profile_mod
    log = log or (lambda msg: None)
    runs_dir = os.path.join(out_dir, RUNS_DIR)
    os.makedirs(runs_dir, exist_ok=True)
    rows = read_rows(out_dir)
    todo = [(s, i) for s, i in runs
            if (s, i) not in rows or not measured(rows[(s, i)])]
    if len(todo) < len(runs):
        log("resuming: %d of %d runs done already" % (len(runs) - len(todo),
                                                      len(runs)))
    if not todo:
        return rows
    profile = None
    path = os.path.join(out_dir, PROFILE_NAME)
    if any(s == "rtmig" for s, _ in todo) and os.path.exists(path):
        profile = profile_mod.DirtyProfile.load(path)  # ProfileError
    with privileged.in_process_as_root():
        # what a killed run of this experiment left reserved
        reservation.recover(os.path.join(runs_dir, "reservations"),
                            label_prefix="isolation ")
    bed = hosts.up(workdir, rate_bytes_per_s=setup.link_rate, lan=True)
    try:
        if any(s == "rtmig" for s, _ in todo) and profile is None:
            try:
                profile = capture(bed, boot_files, setup, log)
            except Exception as exc:
                raise hosts.TestbedError(
                    "capturing the RT guest's profile: %s"
                    % " ".join(str(exc).split())) from exc
            profile.save(path)
        for k, (scenario, index) in enumerate(todo):
            try:
                row = run(bed, boot_files, scenario, setup, index, runs_dir,
                          log, profile, calibration)
                with open(timeline_path(out_dir, scenario, index), "w") as f:
                    json.dump({"started_at": row["started_at"],
                               "progress": row["timeline"],
                               "paused_at": row["paused_at"],
                               "resumed_at": row["resumed_at"],
                               "vcpu_cpu": row["vcpu_cpu"]}, f)
            except Exception as exc:
                # a run that failed (a guest that did not boot, a helper
                # that did not start, libvirt, a refused reservation) is
                # recorded; the experiment goes on
                row = _failed_row(scenario, index, setup, "%s: %s" % (
                    type(exc).__name__, exc))
            rows[(scenario, index)] = {k2: row.get(k2) for k2 in FIELDS}
            _write_rows(out_dir, rows)
            if progress is not None:
                progress(k + 1, len(todo), row)
    finally:
        bed.down()
    return rows
