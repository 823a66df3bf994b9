"""The two-host libvirt testbed: up, live migration A -> B, down.

Needs root, host A's libvirtd running and QEMU; takes ~30 s."""

import os
import shutil
import signal
import subprocess
import time
import uuid

import pytest

from rtmig_nova.testbed import hosts

libvirt = pytest.importorskip("libvirt", reason="needs libvirt-python")


def _why_skip():
    if os.geteuid() != 0:
        return ("needs root: creates a network namespace, a veth pair, "
                "cgroups and a second libvirtd")
    missing = [tool for tool in ("ip", "tc", "unshare", "libvirtd",
                                 "virtlogd", "qemu-system-x86_64")
               if shutil.which(tool) is None]
    if missing:
        return "needs %s on PATH" % ", ".join(missing)
    if subprocess.run(["pgrep", "-x", "libvirtd"],
                      capture_output=True).returncode != 0:
        return ("host A's libvirtd is not running in this namespace "
                "(virtlogd -d; libvirtd -d)")
    return None


pytestmark = [pytest.mark.skipif(_why_skip() is not None,
                                 reason=_why_skip() or ""),
              pytest.mark.timeout(90)]

MEMORY_MIB = 64
DOMAIN_XML = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>%d</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><serial type='pty'/></devices>
</domain>""" % MEMORY_MIB


def _bounded(fn):
    # A libvirt call can wait forever on a stuck QEMU monitor, out of reach
    # of pytest-timeout's signal: give up in time instead.
    return hosts._bounded(fn, hosts.CALL_TIMEOUT)


def _start_domain():
    """A running transient diskless TCG domain on host A (it idles in the
    firmware); its name carries the testbed prefix, so down() removes it."""
    name = hosts.DOMAIN_PREFIX + uuid.uuid4().hex[:8]

    def start():
        conn = libvirt.open(hosts.URI_A)
        try:
            conn.createXML(DOMAIN_XML.format(name=name), 0)
        finally:
            conn.close()
    _bounded(start)
    return name


def _state(uri, name):
    """libvirt's state of ``name`` on ``uri`` or None if not there."""
    def state():
        conn = libvirt.open(uri)
        try:
            return conn.lookupByName(name).state()[0]
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise
        finally:
            conn.close()
    return _bounded(state)


def _destroy(uri, name):
    def destroy():
        conn = libvirt.open(uri)
        try:
            conn.lookupByName(name).destroy()
        finally:
            conn.close()
    _bounded(destroy)


def _qemu_pid(name):
    res = subprocess.run(["pgrep", "-f", "guest=%s," % name],
                         capture_output=True, text=True)
    pids = [int(p) for p in res.stdout.split()]
    assert len(pids) == 1, pids
    return pids[0]


def _procs_mentioning(text):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    if text.encode() in f.read():
                        out.append(int(entry))
            except OSError:
                pass
    return out


def _assert_all_gone(workdir):
    # Under the testbed lock: another process's testbed is not ours.
    with hosts.locked():
        assert hosts.leftovers(workdir) == []
        assert _procs_mentioning(
            os.path.join(str(workdir), hosts.SUBDIR)) == []
        assert not os.path.exists("/run/netns/" + hosts.NETNS)
        assert not os.path.exists("/sys/class/net/" + hosts.VETH_A)


def _tc_bytes(classid):
    out = subprocess.run(["tc", "-s", "class", "show", "dev", hosts.VETH_A],
                         capture_output=True, text=True, check=True).stdout
    block = out.split("class htb %s " % classid, 1)[1]
    return int(block.split("Sent ", 1)[1].split()[0])


@pytest.fixture
def workdir(tmp_path):
    yield tmp_path
    # Whatever a test left (also after a failure): remove it.
    hosts.down(tmp_path)


def test_live_migration_from_a_to_b(workdir):
    bed = hosts.up(workdir)
    try:
        assert bed.host_uuids[0] != bed.host_uuids[1]
        assert bed.hostname_b == hosts.HOSTNAME_B
        name = _start_domain()
        time.sleep(0.3)
        stats = bed.migrate(name, bandwidth_bytes_per_s=32 * hosts.MIB,
                            downtime_limit_s=0.05, timeout=60)

        assert _state(hosts.URI_B, name) == libvirt.VIR_DOMAIN_RUNNING
        assert _state(hosts.URI_A, name) is None
        # B's QEMU lives in B's namespace and in B's own cgroups.
        pid = _qemu_pid(name)
        assert pid in bed.host_b_pids()
        with open("/proc/%d/cgroup" % pid) as f:
            cpu = [line for line in f if ":cpu:" in line]
        assert cpu and "/%s/machine/" % hosts.CGROUP_NAME in cpu[0]

        assert stats["libvirt"]["type"] == libvirt.VIR_DOMAIN_JOB_COMPLETED
        assert 0 < stats["total_time_s"] < 60
        assert 0 <= stats["downtime_s"] < 5
        assert stats["transferred_bytes"] > 0
        assert stats["remaining_bytes"] == 0
        assert stats["memory_bytes"] >= MEMORY_MIB * hosts.MIB
        assert stats["iterations"] >= 1
        assert stats["page_size_bytes"] == 4096
        assert stats["bandwidth_limit_bytes_per_s"] == 32 * hosts.MIB
        assert stats["downtime_limit_s"] == pytest.approx(0.05)
        assert stats["wall_time_s"] >= stats["total_time_s"]
        # libvirt's events: paused on A, then resumed on B, within the call
        start, paused, resumed = (stats["started_at"], stats["paused_at"],
                                  stats["resumed_at"])
        assert start < paused < resumed < start + stats["wall_time_s"] + 2
        print("migration stats:", {k: v for k, v in stats.items()
                                   if k != "libvirt"})
    finally:
        bed.down()
    _assert_all_gone(workdir)


def test_shaped_veth_slows_migration_and_timeout_aborts(
        workdir, guest_boot_files):
    rate = 200_000                                   # bytes/s
    bed = hosts.up(workdir, rate_bytes_per_s=rate)
    try:
        # A guest writing 20,000 pages/s over 4 MiB can never converge
        # through 200 kB/s, so the migration is still in its live phase at
        # the timeout, QEMU blocked on a full socket.  (An idle firmware
        # guest sends so little that all of it fits in the TCP send buffer:
        # QEMU would be done, and the abort too late, before the timeout.)
        from rtmig_nova.testbed import guest
        console = os.path.join(str(workdir), "busy.console")
        busy = bed.start_guest(*guest_boot_files, guest.kernel_cmdline(
            "uniform", "4M", rate=20000), memory_mib=128,
            console_log=console)
        guest.wait_until_running(console, "uniform")
        t0 = time.monotonic()
        with pytest.raises(hosts.MigrationTimeout) as info:
            bed.migrate(busy, timeout=2)
        assert time.monotonic() - t0 < 20
        assert info.value.stats["transferred_bytes"] is not None
        # Aborted: the guest still runs on A, nothing on B.
        assert _state(hosts.URI_A, busy) == libvirt.VIR_DOMAIN_RUNNING
        assert _state(hosts.URI_B, busy) is None
        _destroy(hosts.URI_A, busy)                  # its CPU is needed

        name = _start_domain()
        time.sleep(0.3)
        sent_before = _tc_bytes("1:10")
        stats = bed.migrate(name, bandwidth_bytes_per_s=64 * hosts.MIB,
                            timeout=60)
        assert _state(hosts.URI_B, name) == libvirt.VIR_DOMAIN_RUNNING
        # Several hundred kB through a 200 kB/s link: clearly slower than
        # the ~0.5 s an unshaped migration of this guest takes.
        assert stats["total_time_s"] >= 0.5 * stats["transferred_bytes"] / rate
        assert _tc_bytes("1:10") - sent_before >= stats["transferred_bytes"]
        assert _tc_bytes("1:20") > 0                 # libvirt's own RPC
        print("shaped migration stats:", {k: v for k, v in stats.items()
                                          if k != "libvirt"})
    finally:
        bed.down()
    _assert_all_gone(workdir)


def test_up_cleans_up_after_a_crash(workdir):
    bed = hosts.up(workdir)
    name = _start_domain()
    bed.migrate(name)
    old_qemu = _qemu_pid(name)
    with open(os.path.join(bed.dir_b, "libvirtd.pid")) as f:
        libvirtd = int(f.read())
    os.kill(libvirtd, signal.SIGKILL)               # "crash": B's libvirtd
    deadline = time.monotonic() + 10
    while hosts._alive(libvirtd) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not hosts._alive(libvirtd)
    survivors = bed.host_b_pids()
    assert old_qemu in survivors                    # QEMU and virtlogd live
    stale_on_a = _start_domain()                    # and A has a leftover

    bed = hosts.up(workdir)
    try:
        assert not any(hosts._alive(p) for p in survivors)
        assert _state(hosts.URI_A, stale_on_a) is None
        conn = libvirt.open(hosts.URI_B)
        try:
            assert conn.listAllDomains() == []
        finally:
            conn.close()
        name = _start_domain()
        bed.migrate(name)
        assert _state(hosts.URI_B, name) == libvirt.VIR_DOMAIN_RUNNING
    finally:
        bed.down()
    _assert_all_gone(workdir)


def test_down_is_idempotent(workdir):
    hosts.down(workdir)
    hosts.down(workdir)
    bed = hosts.up(workdir, cgroups=False)
    assert bed.host_b_pids()
    bed.down()
    bed.down()
    hosts.down()
    _assert_all_gone(workdir)


def test_failed_up_removes_what_it_made(workdir, monkeypatch):
    # Host B's virtlogd starts, then its libvirtd does not.
    start_script = hosts._start_script
    monkeypatch.setattr(hosts, "_start_script", lambda *a: start_script(
        *a).replace("libvirtd -d", "exit 7; libvirtd -d"))
    with pytest.raises(hosts.TestbedError, match=r"host B failed \(7\)"):
        hosts.up(workdir)
    _assert_all_gone(workdir)


def test_work_dir_hidden_from_host_b_is_refused(tmp_path):
    with pytest.raises(hosts.TestbedError, match="hidden from host B"):
        hosts.up("/run/rtmtb-test")
    _assert_all_gone(tmp_path)
