"""SCHED_DEADLINE on real threads of helper processes (root).

Every helper is killed and every thread given a reservation is restored in
the fixtures' teardown, whether the test passes or not.
"""

import errno
import os
import platform
import select
import struct
import subprocess
import sys
import time

import pytest
from oslo_privsep import priv_context

from rtmig_nova.enforce import deadline
from rtmig_nova.enforce import privileged
from rtmig_nova.enforce.deadline import (DeadlineRefused, NoSuchThread,
                                         SchedAttr)
from rtmig_nova.model.sizing import CpuReservation

MS = 1000000
SLEEPER = "import time; print('ready', flush=True); time.sleep(60)"
SPINNER = """
import time
print('ready', flush=True)
end = time.monotonic() + 60
while time.monotonic() < end:
    pass
"""
# Threads named as QEMU names its vCPU and migration threads (Python 3.11
# does not name OS threads, so each thread writes its own comm).
QEMU_LIKE = """
import threading, time
names = %r
started = threading.Barrier(len(names) + 1)
def run(name):
    if name:
        tid = threading.get_native_id()
        with open('/proc/self/task/%%d/comm' %% tid, 'w') as f:
            f.write(name)
    started.wait()
    time.sleep(60)
for name in names:
    threading.Thread(target=run, args=(name,), daemon=True).start()
started.wait()
print('ready', flush=True)
time.sleep(60)
"""


class Host:
    """Helper processes and the threads changed in them, undone on
    teardown."""

    def __init__(self):
        self.procs = []
        self.changed = []        # (tid, SchedAttr before the change)

    def spawn(self, code=SLEEPER, timeout=20):
        proc = subprocess.Popen([sys.executable, "-c", code],
                                stdout=subprocess.PIPE, text=True)
        self.procs.append(proc)
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        assert line.strip() == "ready", f"helper did not start: {line!r}"
        return proc

    def apply(self, tid, reservation, flags=0):
        saved = deadline.apply_deadline(tid, reservation, flags)
        self.changed.append((tid, saved))
        return saved

    def cleanup(self):
        errors = []
        for tid, saved in reversed(self.changed):
            try:
                deadline.restore(tid, saved)
            except NoSuchThread:
                pass
            except Exception as exc:       # keep cleaning up
                errors.append(exc)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            proc.stdout.close()
        assert not errors, errors


@pytest.fixture
def host():
    h = Host()
    try:
        yield h
    finally:
        h.cleanup()


def proc_sched(pid, tid=None):
    """The ``key : value`` lines of /proc/PID[/task/TID]/sched."""
    path = (f"/proc/{pid}/sched" if tid is None
            else f"/proc/{pid}/task/{tid}/sched")
    fields = {}
    with open(path) as f:
        for line in f:
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
    return fields


def gone_pid(host):
    """The pid of a helper that has exited (not reused this soon)."""
    proc = host.spawn()
    proc.kill()
    proc.wait()
    return proc.pid


# -- struct sched_attr (no root needed) ----------------------------------

def test_struct_sched_attr_packing():
    assert deadline.SCHED_ATTR_SIZE == 48
    attr = SchedAttr(deadline.SCHED_DEADLINE, flags=1, nice=-5, priority=7,
                     runtime_ns=MS, deadline_ns=10 * MS,
                     period_ns=2 ** 63 - 1)
    data = attr.pack()
    assert len(data) == 48
    # size u32, policy u32, flags u64, nice s32, priority u32, runtime u64,
    # deadline u64, period u64, at these offsets.
    assert struct.unpack_from("=I", data, 0) == (48,)
    assert struct.unpack_from("=I", data, 4) == (6,)
    assert struct.unpack_from("=Q", data, 8) == (1,)
    assert struct.unpack_from("=i", data, 16) == (-5,)
    assert struct.unpack_from("=I", data, 20) == (7,)
    assert struct.unpack_from("=QQQ", data, 24) == (
        MS, 10 * MS, 2 ** 63 - 1)
    assert SchedAttr.unpack(data) == attr
    assert SchedAttr(*attr.as_tuple()) == attr
    assert attr.policy_name == "SCHED_DEADLINE"
    assert [SchedAttr(p).policy_name for p in (0, 1, 2, 3, 5, 6)] == [
        "SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH",
        "SCHED_IDLE", "SCHED_DEADLINE"]
    with pytest.raises(ValueError, match="runtime_ns"):
        SchedAttr(0, runtime_ns=-1)
    with pytest.raises(ValueError, match="nice"):
        SchedAttr(0, nice=2 ** 31)


def test_unknown_architecture_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "riscv64")
    with pytest.raises(NotImplementedError, match="riscv64"):
        deadline.get_attr(os.getpid())


# -- on the host ---------------------------------------------------------

def test_set_read_back_and_restore(host):
    proc = host.spawn()
    os.setpriority(os.PRIO_PROCESS, proc.pid, 3)
    before = deadline.get_attr(proc.pid)
    assert (before.policy, before.nice) == (deadline.SCHED_OTHER, 3)

    res = CpuReservation(share=0.1, runtime_ns=1 * MS, deadline_ns=10 * MS,
                         period_ns=10 * MS, quota_us=10000,
                         cgroup_period_us=100000)
    saved = host.apply(proc.pid, res)
    assert saved == before

    now = deadline.get_attr(proc.pid)
    assert now.policy_name == "SCHED_DEADLINE"
    assert (now.runtime_ns, now.deadline_ns, now.period_ns) == (
        1 * MS, 10 * MS, 10 * MS)
    sched = proc_sched(proc.pid)
    assert int(sched["policy"]) == deadline.SCHED_DEADLINE
    # dl.runtime is the runtime left in the current period (negative
    # after an overrun), dl.deadline the absolute deadline on the
    # runqueue clock: neither is the parameter, but the budget left can
    # never exceed the runtime reserved.
    if "dl.runtime" in sched:
        assert int(sched["dl.runtime"]) <= 1 * MS
    if "dl.period" in sched:
        assert int(sched["dl.period"]) == 10 * MS

    deadline.restore(proc.pid, saved)
    after = deadline.get_attr(proc.pid)
    assert after == before
    assert (after.policy, after.nice) == (0, 3)
    assert int(proc_sched(proc.pid)["policy"]) == deadline.SCHED_OTHER
    assert os.getpriority(os.PRIO_PROCESS, proc.pid) == 3


@pytest.mark.parametrize("numbers, name", [
    ((2 * MS, 1 * MS, 10 * MS), "runtime_ns"),      # runtime > deadline
    ((0, 10 * MS, 10 * MS), "runtime_ns"),
    ((-MS, 10 * MS, 10 * MS), "runtime_ns"),
    ((1000, 10 * MS, 10 * MS), "runtime_ns"),       # < 1024 ns
    ((1.5 * MS, 10 * MS, 10 * MS), "runtime_ns"),
    ((True, 10 * MS, 10 * MS), "runtime_ns"),
    ((MS, 0, 10 * MS), "deadline_ns"),
    ((MS, 20 * MS, 10 * MS), "deadline_ns"),        # deadline > period
    ((MS, 10 * MS, -10 * MS), "period_ns"),
    ((2000, 2000, 2000), "period_ns"),              # below the sysctl min
])
def test_bad_parameters_change_nothing(host, numbers, name):
    proc = host.spawn()
    before = deadline.get_attr(proc.pid)
    with pytest.raises(ValueError, match=name) as info:
        host.apply(proc.pid, numbers)
    assert not isinstance(info.value, DeadlineRefused)   # never asked
    assert "\n" not in str(info.value)
    assert deadline.get_attr(proc.pid) == before


@pytest.mark.parametrize("flags", [1, 4, 3, -2, 1.0, None])
def test_flags_other_than_reclaim_are_refused_before_asking(host, flags):
    proc = host.spawn()
    before = deadline.get_attr(proc.pid)
    with pytest.raises(ValueError, match="flags") as info:
        host.apply(proc.pid, (MS, 10 * MS, 10 * MS), flags)
    assert not isinstance(info.value, DeadlineRefused)
    assert deadline.get_attr(proc.pid) == before


def cpu_share(pid, seconds):
    """Share of one CPU process ``pid`` ran for over ``seconds``
    (/proc/PID/schedstat's run time, ns)."""
    def ran():
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    t0, r0 = time.monotonic(), ran()
    time.sleep(seconds)
    return (ran() - r0) / 1e9 / (time.monotonic() - t0)


def test_reclaiming_thread_runs_beyond_its_runtime(host):
    # A spinning thread under 1ms/10ms: capped at 10% of a CPU, and with
    # SCHED_FLAG_RECLAIM given the deadline bandwidth nobody uses (what
    # rtmig:vcpu_reclaim asks for).
    admission_control()
    proc = host.spawn(SPINNER)
    saved = host.apply(proc.pid, (MS, 10 * MS, 10 * MS))
    capped = cpu_share(proc.pid, 1.0)
    host.apply(proc.pid, (MS, 10 * MS, 10 * MS), deadline.SCHED_FLAG_RECLAIM)
    now = deadline.get_attr(proc.pid)
    assert now.flags == deadline.SCHED_FLAG_RECLAIM
    assert (now.runtime_ns, now.period_ns) == (MS, 10 * MS)
    reclaiming = cpu_share(proc.pid, 1.0)
    assert capped < 0.15, f"capped at 0.1 CPU, ran {capped:.3f}"
    assert reclaiming > 0.3, (f"reclaiming, ran {reclaiming:.3f} of a CPU "
                              f"(capped: {capped:.3f})")
    deadline.restore(proc.pid, saved)
    assert deadline.get_attr(proc.pid) == saved


@pytest.mark.parametrize("tid", [0, -1, "1", None])
def test_bad_tid(tid):
    with pytest.raises(ValueError, match="tid"):
        deadline.apply_deadline(tid, (MS, 10 * MS, 10 * MS))


def test_kernel_einval_is_reported(host):
    proc = host.spawn()
    before = deadline.get_attr(proc.pid)
    # Past the validation: the kernel's own answer.
    with pytest.raises(OSError) as info:
        deadline.set_deadline(proc.pid, 2 * MS, 1 * MS, 10 * MS)
    assert info.value.errno == errno.EINVAL
    with pytest.raises(DeadlineRefused, match="EINVAL") as info:
        deadline.restore(proc.pid, SchedAttr(deadline.SCHED_OTHER,
                                             flags=0x80000000))
    assert info.value.errno == errno.EINVAL
    assert "\n" not in str(info.value)
    # What restore() can check itself, it does before asking.
    with pytest.raises(ValueError, match="priority"):
        deadline.restore(proc.pid, SchedAttr(deadline.SCHED_OTHER,
                                             priority=5))
    with pytest.raises(ValueError, match="nice"):
        deadline.restore(proc.pid, SchedAttr(deadline.SCHED_OTHER, nice=20))
    assert deadline.get_attr(proc.pid) == before


def test_refused_restore_keeps_the_reservation(host):
    proc = host.spawn()
    host.apply(proc.pid, (2 * MS, 10 * MS, 20 * MS))
    reserved = deadline.get_attr(proc.pid)
    with pytest.raises(DeadlineRefused, match="EINVAL"):
        deadline.restore(proc.pid, SchedAttr(deadline.SCHED_OTHER,
                                             flags=0x80000000))
    assert deadline.get_attr(proc.pid) == reserved


def fill(host, tids, reservation):
    """Reserve ``reservation`` on each of ``tids`` until the kernel refuses:
    the threads admitted and the refusal (None if all were admitted)."""
    admitted = []
    for tid in tids:
        before = deadline.get_attr(tid)
        try:
            host.apply(tid, reservation)
        except DeadlineRefused as exc:
            assert deadline.get_attr(tid) == before
            return admitted, exc
        assert deadline.get_attr(tid).policy == deadline.SCHED_DEADLINE
        admitted.append(tid)
    return admitted, None


def admission_control():
    bound = int(open("/proc/sys/kernel/sched_rt_runtime_us").read())
    if bound < 0:
        pytest.skip("kernel.sched_rt_runtime_us = -1: no admission control")


def test_over_admission_is_refused(host):
    admission_control()
    attempts = 2 * os.cpu_count() + 2
    proc = host.spawn(QEMU_LIKE % ([""] * attempts,))
    tids = [tid for tid, _ in deadline.threads(proc.pid)]
    assert len(tids) == attempts + 1
    heavy = (990 * MS, 1000 * MS, 1000 * MS)        # 0.99 CPU each
    admitted, refused = fill(host, tids[1:], heavy)
    assert refused is not None, (
        f"{attempts} reservations of 0.99 CPU on {os.cpu_count()} CPUs "
        f"were all admitted")
    assert refused.errno == errno.EBUSY
    message = str(refused)
    assert "admission" in message and "EBUSY" in message
    assert f"thread {tids[len(admitted) + 1]}" in message
    assert "\n" not in message
    # The admitted threads are restored by the fixture.


def test_restore_releases_the_bandwidth_at_once(host):
    # Leaving SCHED_DEADLINE while asleep, a thread would keep its
    # bandwidth admitted until the kernel rebuilds its root domain;
    # restore() shrinks the reservation first so that it does not.
    admission_control()
    attempts = 2 * os.cpu_count() + 2
    proc = host.spawn(QEMU_LIKE % ([""] * attempts,))
    tids = [tid for tid, _ in deadline.threads(proc.pid)][1:]
    heavy = (990 * MS, 1000 * MS, 1000 * MS)
    first, refused = fill(host, tids, heavy)
    assert first and refused is not None
    for tid, saved in host.changed:
        deadline.restore(tid, saved)
        assert deadline.get_attr(tid) == saved
    again, _ = fill(host, tids, heavy)
    assert len(again) >= len(first)


def test_affinity_narrower_than_root_domain_is_not_permitted(host):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    proc = host.spawn()
    os.sched_setaffinity(proc.pid, {min(os.sched_getaffinity(0))})
    before = deadline.get_attr(proc.pid)
    with pytest.raises(PermissionError, match="EPERM.*affinity") as info:
        host.apply(proc.pid, (MS, 10 * MS, 10 * MS))
    assert info.value.errno == errno.EPERM
    assert deadline.get_attr(proc.pid) == before


def test_nonexistent_thread(host):
    tid = gone_pid(host)
    with pytest.raises(ValueError, match="ESRCH") as info:
        deadline.apply_deadline(tid, (MS, 10 * MS, 10 * MS))
    assert isinstance(info.value, NoSuchThread)
    with pytest.raises(NoSuchThread, match=f"thread {tid}.*ESRCH"):
        deadline.get_attr(tid)
    with pytest.raises(NoSuchThread, match="ESRCH"):
        deadline.restore(tid, SchedAttr(deadline.SCHED_OTHER))
    with pytest.raises(OSError) as raw:
        deadline.set_deadline(tid, MS, 10 * MS, 10 * MS)
    assert raw.value.errno == errno.ESRCH


def test_threads_lists_qemu_like_names(host):
    proc = host.spawn(QEMU_LIKE % (["CPU 0/KVM", "CPU 1/KVM",
                                    "live_migration"],))
    found = deadline.threads(proc.pid)
    assert found[0][0] == proc.pid
    assert sorted(name for _, name in found[1:]) == [
        "CPU 0/KVM", "CPU 1/KVM", "live_migration"]
    assert [tid for tid, _ in found] == sorted(
        int(t) for t in os.listdir(f"/proc/{proc.pid}/task"))

    migration = next(tid for tid, name in found if name == "live_migration")
    saved = host.apply(migration, (MS, 10 * MS, 10 * MS))
    assert deadline.get_attr(migration).policy == deadline.SCHED_DEADLINE
    assert int(proc_sched(proc.pid, migration)["policy"]) == 6
    # Only that thread changed.
    assert deadline.get_attr(proc.pid).policy == deadline.SCHED_OTHER
    deadline.restore(migration, saved)
    assert deadline.get_attr(migration) == saved


def test_threads_of_unknown_process(host):
    pid = gone_pid(host)
    with pytest.raises(ValueError, match=f"pid {pid}") as info:
        deadline.threads(pid)
    assert "\n" not in str(info.value)


@pytest.fixture
def privsep_daemon():
    # A real privsep daemon (forked, with only the context's capabilities),
    # so that what crosses the channel is checked too.
    ctx = privileged.sys_admin_pctxt
    ctx.set_client_mode(True)
    ctx.start(priv_context.Method.FORK)
    try:
        yield ctx
    finally:
        ctx.stop()
        ctx.set_client_mode(False)


def test_through_privsep_daemon(host, privsep_daemon):
    proc = host.spawn()
    os.setpriority(os.PRIO_PROCESS, proc.pid, 2)
    saved = host.apply(proc.pid, (MS, 10 * MS, 10 * MS))
    assert deadline.get_attr(proc.pid).policy == deadline.SCHED_DEADLINE
    deadline.restore(proc.pid, saved)
    assert deadline.get_attr(proc.pid) == saved
    assert saved.nice == 2
    # The kernel's errno survives the channel.
    tid = gone_pid(host)
    with pytest.raises(OSError) as raw:
        deadline.set_deadline(tid, MS, 10 * MS, 10 * MS)
    assert raw.value.errno == errno.ESRCH
    with pytest.raises(NoSuchThread, match="ESRCH"):
        deadline.restore(tid, saved)
    deadline.set_deadline(proc.pid, MS, 10 * MS, 10 * MS)
    deadline.set_attr(proc.pid, saved.as_tuple())
    assert deadline.get_attr(proc.pid) == saved
