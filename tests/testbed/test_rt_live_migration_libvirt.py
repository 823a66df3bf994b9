"""The code the Nova driver shim runs for a real-time live migration, on
real libvirt: the two-host testbed, Nova's own ``Guest`` around a real
domain, rtmig's plan, source reservation and ``RTGuest``.  What Nova adds
around it (RPC, database, Placement) is tested on its fake libvirt in
tests/functional/test_rt_live_migration.py."""

import os
import threading
import time
import types

import pytest

from rtmig_nova import conf
from rtmig_nova import planning
from rtmig_nova.enforce import deadline
from rtmig_nova.enforce import libvirt_controls
from rtmig_nova.enforce import netshape
from rtmig_nova.enforce import privileged
from rtmig_nova.model import DirtyProfile
from rtmig_nova.model import flavor
from rtmig_nova.model import precopy
from rtmig_nova.testbed import guest as testbed_guest
from rtmig_nova.testbed import hosts
from tests.testbed.test_hosts import _why_skip

libvirt = pytest.importorskip("libvirt", reason="needs libvirt-python")

pytestmark = [pytest.mark.skipif(_why_skip() is not None,
                                 reason=_why_skip() or ""),
              pytest.mark.timeout(240)]

CONF = conf.CONF
MIB = 2 ** 20
SPECS = {'rtmig:vcpu_reservation': '2ms/10ms',
         'rtmig:migration_deadline': '60s', 'rtmig:max_downtime': '500ms'}


@pytest.fixture
def workdir(tmp_path):
    yield tmp_path
    hosts.down(tmp_path)


@pytest.fixture
def bed(workdir):
    bed = hosts.up(workdir)
    try:
        yield bed
    finally:
        bed.down()


@pytest.fixture(autouse=True)
def privsep_in_process():
    # privileged calls in this (root) process, as Nova's tests do
    ctx = privileged.sys_admin_pctxt
    previous = ctx.client_mode
    ctx.set_client_mode(False)
    yield
    ctx.set_client_mode(previous)


class _Notifications:
    """Stands in for the oslo.messaging notifier (no Nova transport
    here)."""

    def __init__(self):
        self.sent = []

    def info(self, context, event_type, payload):
        self.sent.append((event_type, payload))


@pytest.fixture
def state_dir(workdir):
    path = workdir / "reservations"
    CONF.set_override("reservation_state_dir", str(path), "rtmig")
    try:
        yield path
    finally:
        CONF.clear_override("reservation_state_dir", "rtmig")


def _extension(monkeypatch):
    from rtmig_nova.compute import live_migration as lm
    monkeypatch.setattr(lm, "_notifier", lambda host: _Notifications())
    admission = types.SimpleNamespace(capacity=types.SimpleNamespace(
        migration_link=64 * MIB, migration_cpu=0.5))
    return lm, lm.RTLiveMigration(admission, "host-a")


def _console(workdir, rate):
    return os.path.join(str(workdir), "console-%d.log" % rate)


def _boot(bed, boot_files, workdir, rate):
    console = _console(workdir, rate)
    # panic=0: a guest whose migration corrupted it (QEMU 7.2 under TCG,
    # docs/testbed.md) hangs with its oops on the console, for the
    # integrity check to report, instead of rebooting away
    name = bed.start_guest(*boot_files, testbed_guest.kernel_cmdline(
        "uniform", "4M", rate=rate, extra=["panic=0"]), memory_mib=128,
        console_log=console)
    testbed_guest.wait_until_running(console, "uniform")
    return name


def _plan(lm, name, dom):
    """The MigrationPlan the shim's RTLiveMigration.plan makes, from a
    captured-like profile of this guest (128 MiB, 4 MB/s dirtied)."""
    request = flavor.parse_specs(SPECS)
    profile_path = os.path.join(
        os.path.dirname(CONF.rtmig.reservation_state_dir), name + ".json")
    DirtyProfile.from_aggregate_rate(128 * MIB, 4e6).save(profile_path)
    pl = planning.migration_plan(request, 64 * MIB, CONF.rtmig,
                                 profile_ref=os.path.abspath(profile_path),
                                 host_version=dom.connect().getVersion())
    assert pl.feasible, pl.reason
    assert pl.settings["qemu_version"] == hosts.qemu_version()
    return lm.MigrationPlan.of(dom.UUIDString(), request, "instance",
                               profile_path, pl)


def _nova_migrate(rt_guest, dom, box):
    # What Nova's _live_migration_operation does, minus Nova: the
    # destination XML from the live, migratable XML, persisted on B.
    try:
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
        rt_guest.migrate(
            hosts.URI_B, migrate_uri=hosts.MIGRATE_URI,
            destination_xml=xml, bandwidth=0,
            flags=(libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
                   | libvirt.VIR_MIGRATE_PERSIST_DEST
                   | libvirt.VIR_MIGRATE_AUTO_CONVERGE))
    except libvirt.libvirtError as e:
        box["error"] = e


def _reserve(lm, ext, dom, mp, conn, opened=None):
    """What the shim's _live_migration does first: RTGuest around Nova's
    Guest (migrateToURI3 on a connection of its own, appended to
    ``opened``), then the source's reservation; returns (RTGuest, held)."""
    from nova.virt.libvirt import guest as nova_guest
    opened = [] if opened is None else opened

    def open_connection():
        opened.append(libvirt.open(hosts.URI_A))
        return opened[-1]
    rt_guest = lm.RTGuest(nova_guest.Guest(dom), mp, open_connection)
    held = ext.reserve_source(None, types.SimpleNamespace(
        uuid=dom.UUIDString()), mp, rt_guest, hosts.URI_A,
        lambda uri: conn, hosts.IP_B)
    assert held is not None
    return rt_guest, held


def _monitor(rt_guest, dom, worker, seen, htb):
    """What Nova's _live_migration_monitor does to the guest: job info
    every 0.5 s while the migration runs.  Records in ``seen`` the
    scheduling of QEMU's migration thread, in ``htb`` the classes on A's
    side of the veth, at each poll."""
    while worker.is_alive():
        rt_guest.get_job_info()
        htb.append(netshape.show(hosts.VETH_A))
        try:
            for tid, name in libvirt_controls.qemu_threads(dom):
                if libvirt_controls.is_migration_thread(name):
                    seen.append(deadline.get_attr(tid))
        except (libvirt_controls.LibvirtError, ValueError):
            pass                    # QEMU ended with the migration
        worker.join(0.5)


def _incoming_vcpu_threads(name):
    tids = hosts.incoming_vcpu_threads(name)
    if not tids:
        raise libvirt_controls.LibvirtError(f"no incoming QEMU of {name}")
    return tids


def _cpu(dom):
    return dom.schedulerParametersFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE)


@pytest.fixture
def shaped_veth():
    # A's side of the testbed's veth is its migration interface
    CONF.set_override("migration_interface", hosts.VETH_A, "rtmig")
    try:
        yield hosts.VETH_A
    finally:
        CONF.clear_override("migration_interface", "rtmig")


def _watch_arrival(name, dom, monkeypatch):
    """What the shim's pre_live_migration starts on B: the watcher of the
    incoming domain's vCPU threads; returns (RTVMReservations, instance,
    request, [monotonic time of the reservation], B's connection)."""
    from rtmig_nova.compute import vm_reservation
    monkeypatch.setattr(libvirt_controls, "vcpu_threads",
                        lambda d: _incoming_vcpu_threads(name))
    vms = vm_reservation.RTVMReservations("host-b")
    applied = []
    reserve = vms.reserve

    def timed_reserve(*args, **kwargs):
        res = reserve(*args, **kwargs)
        applied.append(time.monotonic())
        return res
    vms.reserve = timed_reserve
    instance = types.SimpleNamespace(
        uuid=dom.UUIDString(), flavor=types.SimpleNamespace(vcpus=1))
    request = flavor.parse_specs(SPECS)
    conn_b = libvirt.open(hosts.URI_B)

    def lookup():
        try:
            return conn_b.lookupByName(name)
        except libvirt.libvirtError:
            return None
    vms.watch_arrival(instance, request, lookup, timeout=120)
    return vms, instance, request, applied, conn_b


def test_reserve_migrate_release_on_real_libvirt(bed, workdir, state_dir,
                                                 shaped_veth,
                                                 guest_boot_files,
                                                 monkeypatch):
    lm, ext = _extension(monkeypatch)
    name = _boot(bed, guest_boot_files, workdir, rate=1000)
    conn_a = libvirt.open(hosts.URI_A)
    try:
        dom = conn_a.lookupByName(name)
        mp = _plan(lm, name, dom)
        rt_guest, held = _reserve(lm, ext, dom, mp, conn_a)
        arrival, instance, request, applied, watch_conn = _watch_arrival(
            name, dom, monkeypatch)
        # held on A before the migration starts
        assert _cpu(dom)["emulator_quota"] == mp.cpu.quota_us
        assert dom.migrateGetMaxDowntime(0) == mp.downtime_limit_ms
        assert dom.migrateGetMaxSpeed(0) == mp.bandwidth_mib
        # ... and in the live XML Nova builds the destination's from
        assert "<emulator_quota>%d<" % mp.cpu.quota_us in dom.XMLDesc(
            libvirt.VIR_DOMAIN_XML_MIGRATABLE)
        assert len(os.listdir(state_dir)) == 1
        box = {}
        worker = threading.Thread(target=_nova_migrate,
                                  args=(rt_guest, dom, box))
        console_before = testbed_guest.console_mark(_console(workdir, 1000))
        worker.start()
        seen, htb = [], []
        _monitor(rt_guest, dom, worker, seen, htb)
        worker.join(120)
        ended = time.monotonic()
        assert not worker.is_alive(), "the migration did not end"
        mark = testbed_guest.console_mark(_console(workdir, 1000))
        # B's side: the VM's vCPU reservation was in place before the
        # migration ended, as the shim's pre_live_migration watcher puts it
        res = arrival.arrived(instance, request, None, timeout=5)
        assert applied and applied[0] < ended, (applied, ended)
        for tid in _incoming_vcpu_threads(name):
            attr = deadline.get_attr(tid)
            assert (attr.policy, attr.runtime_ns, attr.period_ns) == (
                deadline.SCHED_DEADLINE, 2_000_000, 10_000_000)
        assert res.label == "nova-vm host-b " + instance.uuid
        arrival.release(instance.uuid)
        watch_conn.close()
        assert "error" not in box, box
        # the migration's stream (to B, ports 49152-49215) went through
        # its HTB class, at the rate libvirt was given; libvirt's RPC
        # through the best-effort class
        assert htb and htb[-1], "no HTB classes seen during the migration"
        classes = {row["role"]: row for row in htb[-1]}
        assert classes["migration"]["bytes"] > 4 * MIB
        assert classes["migration"]["bytes"] > 10 * classes["default"][
            "bytes"]
        # (QEMU 10 sends up to 25% above its limit: precopy.send_rate)
        assert mp.bandwidth_mib * MIB <= classes["migration"]["rate"] <= \
            1.1 * precopy.send_rate(mp.bandwidth_mib * MIB, 4096,
                                    qemu_version=mp.qemu_version)
        # QEMU's migration thread ran under SCHED_DEADLINE with the plan's
        # CPU once the shim's monitor saw it
        assert seen, "the migration thread was never seen"
        want = (mp.cpu.runtime_ns, mp.cpu.deadline_ns, mp.cpu.period_ns)
        assert [(a.policy, a.runtime_ns, a.deadline_ns, a.period_ns)
                for a in seen][-1] == (deadline.SCHED_DEADLINE,) + want
        assert len(held) == 2       # the source's, then the thread's
        ext.release(held, lambda uri: conn_a)
        assert os.listdir(state_dir) == []
        assert netshape.show(shaped_veth) is None
    finally:
        conn_a.close()
    conn_b = libvirt.open(hosts.URI_B)
    try:
        dom_b = conn_b.lookupByName(name)
        assert dom_b.isActive()
        stats = dom_b.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        # auto-converge was asked for and left out: no throttling
        assert stats.get("auto_converge_throttle", 0) == 0
        # the source's temporary quota is neither in B's running domain nor
        # in its persistent definition
        for flags in (0, libvirt.VIR_DOMAIN_XML_INACTIVE):
            assert "emulator_quota" not in dom_b.XMLDesc(flags)
        assert _cpu(dom_b)["emulator_quota"] != mp.cpu.quota_us
    finally:
        conn_b.close()
    # the guest on B found every write it made (or this raises)
    assert testbed_guest.check_after_migration(
        _console(workdir, 1000), mark, since=console_before).ok


def test_an_aborted_migration_releases_everything(bed, workdir, state_dir,
                                                  guest_boot_files,
                                                  monkeypatch):
    lm, ext = _extension(monkeypatch)
    # 20,000 writes/s over 4 MiB never converge at a few MiB/s
    name = _boot(bed, guest_boot_files, workdir, rate=20000)
    conn_a = libvirt.open(hosts.URI_A)
    try:
        dom = conn_a.lookupByName(name)
        before = _cpu(dom)
        speed_before = dom.migrateGetMaxSpeed(0)
        mp = _plan(lm, name, dom)
        mp.bandwidth = 2 * MIB
        opened = []
        rt_guest, held = _reserve(lm, ext, dom, mp, conn_a, opened)
        box = {}
        worker = threading.Thread(target=_nova_migrate,
                                  args=(rt_guest, dom, box))
        console_before = testbed_guest.console_mark(_console(workdir, 20000))
        worker.start()
        for _ in range(6):
            rt_guest.get_job_info()         # Nova's monitor
            time.sleep(0.5)
        assert worker.is_alive(), box
        assert len(held) == 2, "the migration thread was not reserved"
        tid, = [t for t, n in libvirt_controls.qemu_threads(dom)
                if libvirt_controls.is_migration_thread(n)]
        assert deadline.get_attr(tid).policy == deadline.SCHED_DEADLINE
        # Nova's live_migration_abort: on the driver's connection (the one
        # the monitor polls), from a native thread of its own; the
        # migration runs on another, so nothing is queued behind it
        aborted = time.monotonic()
        abort = threading.Thread(
            target=lambda: conn_a.lookupByName(name).abortJob())
        abort.start()
        abort.join(30)
        assert not abort.is_alive(), "abortJob is stuck"
        worker.join(30)
        assert not worker.is_alive()
        mark = testbed_guest.console_mark(_console(workdir, 20000))
        assert time.monotonic() - aborted < 15
        assert len(opened) == 1 and opened[0] is not conn_a
        assert "error" in box                   # migrateToURI3: aborted
        ext.release(held, lambda uri: conn_a)
        assert os.listdir(state_dir) == []
        assert dom.isActive()
        after = _cpu(dom)
        assert after["emulator_quota"] == before["emulator_quota"]
        assert dom.migrateGetMaxSpeed(0) == speed_before
        # the guest, still on A, lost nothing in the cancelled migration
        assert testbed_guest.check_after_migration(
            _console(workdir, 20000), mark, since=console_before).ok
    finally:
        conn_a.close()
    conn_b = libvirt.open(hosts.URI_B)
    try:
        assert name not in [d.name() for d in conn_b.listAllDomains()]
    finally:
        conn_b.close()


def test_the_dirty_rate_source_measures_a_real_guest(bed, workdir,
                                                     state_dir,
                                                     guest_boot_files,
                                                     monkeypatch):
    # The plan of the shim's RTLiveMigration with no captured profile:
    # libvirt's dirty-rate calculation, started at the source's check and
    # read as the migration starts
    from nova.virt.libvirt import guest as nova_guest
    lm, ext = _extension(monkeypatch)
    CONF.set_override("instance_profile_dir", str(workdir / "none"),
                      "rtmig")
    name = _boot(bed, guest_boot_files, workdir, rate=1000)
    conn_a = libvirt.open(hosts.URI_A)
    try:
        dom = conn_a.lookupByName(name)
        ext._get_guest = lambda instance: nova_guest.Guest(dom)
        instance = types.SimpleNamespace(
            uuid=dom.UUIDString(),
            flavor=types.SimpleNamespace(extra_specs=SPECS))
        at_check = ext.plan(None, instance)
        assert at_check.profile_source == "flavor"     # not measured yet
        time.sleep(0.8)         # for the conductor and pre_live_migration
        started = time.monotonic()
        mp = ext.plan(None, instance, starting=True)
        waited = time.monotonic() - started
    finally:
        conn_a.close()
        CONF.clear_override("instance_profile_dir", "rtmig")
    assert mp.profile_source == "dirty_rate", mp.profile
    assert "of %d bytes" % (128 * MIB) in mp.profile
    # what was left of the 1 s calculation, within the start's budget
    assert waited < lm.profile_sources.DIRTY_RATE_MAX_WAIT + 0.2
    (event, payload), = ext._notifier.sent
    assert (event, payload["profile_source"]) == (
        "rtmig.migration.plan", "dirty_rate")


def _wait_for_workload_time(console, seconds, timeout=120):
    """Until the guest's workload has run ``seconds`` by its own status
    lines (``t=``), read from its console log."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with open(console, errors="replace") as f:
            ts = [st[1].get("t", 0) for st in map(
                testbed_guest.parse_status, f.read().splitlines()) if st]
        if ts and ts[-1] >= seconds:
            return ts[-1]
        time.sleep(0.2)
    raise AssertionError(f"the workload did not reach t={seconds}")


def test_a_dirty_rate_jump_mid_migration_is_replanned(bed, workdir,
                                                      state_dir,
                                                      guest_boot_files,
                                                      monkeypatch):
    # The guest writes 200 words/s over 16 MiB until a timer switches it
    # to 20,000 (every page of the 16 MiB several times a second) about
    # 2 s into the migration: at the plan's few MiB/s it can no longer
    # converge.  The closed loop must see it (QEMU's dirty rate from its
    # second sync on) and raise the bandwidth within the 64 MiB/s share,
    # meeting the deadline, or abort before the deadline.
    lm, ext = _extension(monkeypatch)
    faults = []         # no Nova database here
    monkeypatch.setattr(lm.compute_utils, "add_instance_fault_from_exc",
                        lambda context, instance, e: faults.append(str(e)))
    specs = dict(SPECS, **{'rtmig:migration_deadline': '20s'})
    switch_s = 40
    console = os.path.join(str(workdir), "console-jump.log")
    name = bed.start_guest(*guest_boot_files, testbed_guest.kernel_cmdline(
        "uniform", "16M", rate=200, switch_s=switch_s, rate_after=20000,
        extra=["panic=0"]), memory_mib=128, console_log=console)
    testbed_guest.wait_until_running(console, "uniform")
    request = flavor.parse_specs(specs)
    # what a capture of the first phase gives: 4096 pages at 200/4096
    # writes/s each, the rest of RAM idle (half of it zero)
    profile = DirtyProfile.from_histogram([200 / 4096], [4096],
                                          idle_pages=32768 - 4096,
                                          zero_pages=16384)
    profile_path = os.path.join(str(workdir), name + ".json")
    profile.save(profile_path)
    pl = planning.migration_plan(request, 64 * MIB, CONF.rtmig,
                                 profile_ref=profile_path,
                                 host_version=hosts.qemu_version())
    assert pl.feasible, pl.reason
    conn_a = libvirt.open(hosts.URI_A)
    try:
        dom = conn_a.lookupByName(name)
        mp = lm.MigrationPlan.of(dom.UUIDString(), request, "instance",
                                 profile_path, pl, profile)
        _wait_for_workload_time(console, switch_s - 2)
        rt_guest, held = _reserve(lm, ext, dom, mp, conn_a)
        assert rt_guest.closed_loop is not None
        box, speeds = {}, []
        console_before = testbed_guest.console_mark(console)
        started = time.monotonic()
        worker = threading.Thread(target=_nova_migrate,
                                  args=(rt_guest, dom, box))
        worker.start()
        while worker.is_alive() and time.monotonic() - started < 90:
            rt_guest.get_job_info()             # Nova's monitor
            try:
                speeds.append(dom.migrateGetMaxSpeed(0))
            except libvirt.libvirtError:
                pass                            # the domain left A
            worker.join(0.5)
        wall = time.monotonic() - started
        assert not worker.is_alive(), "the migration did not end"
        mark = testbed_guest.console_mark(console)
        # the job's own time, from its prepare phase to the guest running
        # on B, as libvirt counts it: what the deadline bounds (the wall
        # time adds this thread's start and libvirt's finish phases)
        took = wall
        if "error" not in box:
            conn_b = libvirt.open(hosts.URI_B)
            try:
                took = conn_b.lookupByName(name).jobStats(
                    libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)[
                        "time_elapsed"] / 1000.0
            finally:
                conn_b.close()
        replans = [p for e, p in ext._notifier.sent
                   if e == "rtmig.migration.replan"]
        # shown with a failure: what the loop decided, when
        print("rtmig wall:", wall, "job:", took, "speeds:", speeds,
              "replans:", [(r["observed"]["elapsed_s"], r["decision"],
                            r["applied"], r["bandwidth_bytes_per_s"] // MIB,
                            r["reason"]) for r in replans])
        # the loop saw the migration fall behind its plan and acted
        assert replans, (speeds, box)
        for r in replans:
            assert mp.bandwidth <= r["bandwidth_bytes_per_s"] <= 64 * MIB
            assert r["ceiling_bytes_per_s"] <= 64 * MIB
        loop = rt_guest.closed_loop
        if "error" in box:
            # aborted by the loop, before the deadline
            assert any(r["decision"] == "abort" and r["applied"]
                       for r in replans), replans
            assert took < 20, took
            assert dom.isActive()
            assert "aborted early" in faults[0], faults
        else:
            # raised, within the share, and the deadline met
            assert any(r["decision"] == "raise" and r["applied"]
                       for r in replans), replans
            assert mp.bandwidth_mib < max(speeds) <= 64, speeds
            assert loop.bandwidth == max(speeds) * MIB
            # the loop acts on readings replan_interval apart and sees
            # the jump only from QEMU's second sync: its last correction,
            # to the ceiling, can come with under a reading left (jobs of
            # 19.1, 20.01 and, in CI, 20.13 s; see issue 10's note)
            assert took <= 20 + CONF.rtmig.replan_interval, (took, replans)
        # on B, or on A after the abort: every write found (or this raises)
        assert testbed_guest.check_after_migration(console, mark,
                                                   since=console_before).ok
        ext.release(held, lambda uri: conn_a)
        assert os.listdir(state_dir) == []
    finally:
        conn_a.close()
