"""SCHED_DEADLINE reservations for single threads (QEMU vCPU and migration
threads), through the ``sched_setattr``/``sched_getattr`` system calls.

All times are nanoseconds.  A reservation is (runtime, deadline, period):
the thread may run ``runtime_ns`` in every ``period_ns`` and gets that
runtime within ``deadline_ns`` of each period's start.  The kernel admits a
reservation only while the deadline tasks' total bandwidth (sum of
runtime / period) stays within the bound ``kernel.sched_rt_runtime_us /
kernel.sched_rt_period_us`` per CPU of the thread's root domain; otherwise
it answers ``EBUSY`` (:class:`DeadlineRefused`).

Reading a thread's policy needs no privilege (:func:`get_attr`).  Changing
it goes through the privsep context (:func:`set_deadline`,
:func:`set_attr`); call the unprivileged wrappers :func:`apply_deadline`
and :func:`restore`, which validate the request first and turn the kernel's
errno into a one-line exception.  A refused ``sched_setattr`` changes
nothing.

Typical use::

    saved = apply_deadline(tid, plan.cpu)     # the CpuReservation
    ...                                       # migrate
    restore(tid, saved)
"""

import ctypes
import dataclasses
import errno
import numbers
import os
import platform
import struct

from rtmig_nova.enforce import privileged

SCHED_OTHER = 0
SCHED_FIFO = 1
SCHED_RR = 2
SCHED_BATCH = 3
SCHED_IDLE = 5
SCHED_DEADLINE = 6
SCHED_EXT = 7

# include/uapi/linux/sched.h: a SCHED_DEADLINE thread with this flag may
# use, beyond its runtime, the bandwidth that no admitted deadline thread
# is using (GRUB): its runtime stays guaranteed, but it is no longer a
# cap, and what it takes beyond it is taken from best-effort threads.
SCHED_FLAG_RECLAIM = 0x02
# The flags apply_deadline() sets (others: reset-on-fork, overrun
# signals, utilisation clamps, are not a reservation's business).
DEADLINE_FLAGS = SCHED_FLAG_RECLAIM

POLICY_NAMES = {
    SCHED_OTHER: "SCHED_OTHER",
    SCHED_FIFO: "SCHED_FIFO",
    SCHED_RR: "SCHED_RR",
    SCHED_BATCH: "SCHED_BATCH",
    SCHED_IDLE: "SCHED_IDLE",
    SCHED_DEADLINE: "SCHED_DEADLINE",
    SCHED_EXT: "SCHED_EXT",
}

# include/uapi/linux/sched.h: the least runtime the kernel accepts is
# 1 << DL_SCALE ns.
MIN_RUNTIME_NS = 1024

# (sched_setattr, sched_getattr) per machine (the generic syscall table for
# aarch64, arch/x86/entry/syscalls/syscall_64.tbl for x86_64).
SYSCALL_NUMBERS = {
    "x86_64": (314, 315),
    "aarch64": (274, 275),
    "arm64": (274, 275),
}

# struct sched_attr, SCHED_ATTR_SIZE_VER0: size u32, policy u32, flags u64,
# nice s32, priority u32, runtime u64, deadline u64, period u64; native byte
# order, no padding.
_SCHED_ATTR = struct.Struct("=IIQiIQQQ")
SCHED_ATTR_SIZE = _SCHED_ATTR.size      # 48

_U32 = 2 ** 32
_U64 = 2 ** 64
_FIELD_RANGES = {
    "policy": (0, _U32 - 1),
    "flags": (0, _U64 - 1),
    "nice": (-2 ** 31, 2 ** 31 - 1),
    "priority": (0, _U32 - 1),
    "runtime_ns": (0, _U64 - 1),
    "deadline_ns": (0, _U64 - 1),
    "period_ns": (0, _U64 - 1),
}


class DeadlineRefused(ValueError):
    """The kernel refused a scheduling change (``EBUSY`` or ``EINVAL``).

    :ivar errno: the kernel's errno (``errno.EBUSY`` when admission control
        refused the bandwidth)
    """

    def __init__(self, message, errno=None):
        # Both in args, so the exception survives the privsep channel.
        super().__init__(message, errno)
        self.errno = errno

    def __str__(self):
        return str(self.args[0])


class NoSuchThread(ValueError):
    """The thread or process does not exist (``ESRCH``)."""


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_tid(tid, name="tid"):
    if not _is_int(tid) or tid <= 0:
        # 0 would mean the calling thread: never change our own policy.
        raise ValueError(f"{name} must be a positive integer thread id, "
                         f"got {tid!r}")
    return int(tid)


@dataclasses.dataclass(frozen=True)
class SchedAttr:
    """A thread's scheduling attributes, as ``struct sched_attr``.

    :ivar policy: ``SCHED_*`` number
    :ivar flags: ``SCHED_FLAG_*`` bits (reset-on-fork, reclaim, overrun)
    :ivar nice: nice value (SCHED_OTHER, SCHED_BATCH)
    :ivar priority: static priority (SCHED_FIFO, SCHED_RR), else 0
    :ivar runtime_ns: SCHED_DEADLINE runtime, ns (for SCHED_OTHER and
        SCHED_BATCH on kernels >= 6.12, the EEVDF time slice, ns)
    :ivar deadline_ns: SCHED_DEADLINE relative deadline, ns
    :ivar period_ns: SCHED_DEADLINE period, ns
    """
    policy: int
    flags: int = 0
    nice: int = 0
    priority: int = 0
    runtime_ns: int = 0
    deadline_ns: int = 0
    period_ns: int = 0

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            lo, hi = _FIELD_RANGES[field.name]
            if not _is_int(value) or not lo <= value <= hi:
                raise ValueError(f"SchedAttr.{field.name} must be an integer "
                                 f"in [{lo}, {hi}], got {value!r}")
            object.__setattr__(self, field.name, int(value))

    @property
    def policy_name(self):
        """``"SCHED_OTHER"``, ``"SCHED_DEADLINE"``, ... (``"policy N"`` for
        a number this module does not know)."""
        return POLICY_NAMES.get(self.policy, f"policy {self.policy}")

    def as_tuple(self):
        """The fields as a plain tuple, in declaration order (what crosses
        the privsep channel)."""
        return dataclasses.astuple(self)

    def pack(self):
        """``struct sched_attr`` bytes (48, ``size`` = 48)."""
        return _SCHED_ATTR.pack(SCHED_ATTR_SIZE, *self.as_tuple())

    @classmethod
    def unpack(cls, data):
        """A :class:`SchedAttr` from the first 48 bytes of a ``struct
        sched_attr``."""
        fields = _SCHED_ATTR.unpack_from(data)
        return cls(*fields[1:])


def _syscall_numbers():
    machine = platform.machine()
    numbers_ = SYSCALL_NUMBERS.get(machine)
    if numbers_ is None or ctypes.sizeof(ctypes.c_void_p) != 8:
        raise NotImplementedError(
            f"sched_setattr/sched_getattr syscall numbers are known for "
            f"64-bit {', '.join(sorted(SYSCALL_NUMBERS))} only, not "
            f"{machine} ({8 * ctypes.sizeof(ctypes.c_void_p)}-bit Python)")
    return numbers_


_LIBC = None


def _syscall(number, *args):
    """syscall(2); raises OSError with the kernel's errno on failure."""
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    fn = _LIBC.syscall
    fn.restype = ctypes.c_long
    ret = fn(ctypes.c_long(number), *args)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def _sched_setattr(tid, attr):
    setattr_nr, _ = _syscall_numbers()
    data = attr.pack()
    buf = ctypes.create_string_buffer(data, len(data))
    _syscall(setattr_nr, ctypes.c_long(tid), buf, ctypes.c_long(0))


def get_attr(tid):
    """The scheduling attributes of thread ``tid`` (``sched_getattr``).

    Needs no privilege.  Times in the result are ns.

    :raises NoSuchThread: (a ValueError) if there is no such thread
    :raises NotImplementedError: on a machine whose syscall numbers this
        module does not know
    """
    tid = _check_tid(tid)
    _, getattr_nr = _syscall_numbers()
    buf = ctypes.create_string_buffer(SCHED_ATTR_SIZE)
    try:
        _syscall(getattr_nr, ctypes.c_long(tid), buf,
                 ctypes.c_long(SCHED_ATTR_SIZE), ctypes.c_long(0))
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            raise NoSuchThread(f"cannot read the scheduling policy of "
                               f"thread {tid}: no such thread (ESRCH)"
                               ) from None
        raise
    return SchedAttr.unpack(buf.raw)


@privileged.sys_admin_pctxt.entrypoint
def set_deadline(tid, runtime_ns, deadline_ns, period_ns, flags=0):
    """Privileged: put thread ``tid`` under SCHED_DEADLINE with the given
    runtime, relative deadline and period, all in ns, and ``SCHED_FLAG_*``
    ``flags``.

    Checks nothing but the thread id; call :func:`apply_deadline`.

    :raises OSError: with the kernel's errno (EBUSY: admission control;
        EINVAL: parameters; EPERM: not permitted; ESRCH: no such thread)
    """
    _sched_setattr(_check_tid(tid), SchedAttr(
        SCHED_DEADLINE, flags=flags, runtime_ns=runtime_ns,
        deadline_ns=deadline_ns, period_ns=period_ns))


@privileged.sys_admin_pctxt.entrypoint
def set_attr(tid, attr):
    """Privileged: set thread ``tid``'s scheduling attributes to ``attr``.

    :param attr: the fields of a :class:`SchedAttr` as a plain sequence
        (``SchedAttr.as_tuple()``): privsep carries only plain values.  Use
        :func:`restore` with a :class:`SchedAttr`.
    :raises OSError: with the kernel's errno
    """
    _sched_setattr(_check_tid(tid), SchedAttr(*attr))


def _read_int(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _bandwidth_bound():
    """SCHED_DEADLINE bandwidth bound per CPU, or None if unlimited or
    unknown."""
    runtime = _read_int("/proc/sys/kernel/sched_rt_runtime_us")
    period = _read_int("/proc/sys/kernel/sched_rt_period_us")
    if runtime is None or runtime < 0 or not period:
        return None
    return runtime / period


def _period_bounds_ns():
    lo = _read_int("/proc/sys/kernel/sched_deadline_period_min_us")
    hi = _read_int("/proc/sys/kernel/sched_deadline_period_max_us")
    return (lo * 1000 if lo is not None else None,
            hi * 1000 if hi is not None else None)


def _online_cpus():
    try:
        with open("/sys/devices/system/cpu/online") as f:
            text = f.read().strip()
    except OSError:
        return None
    cpus = set()
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def _affinity_note(tid):
    try:
        allowed = os.sched_getaffinity(tid)
    except OSError:
        return ""
    online = _online_cpus()
    if online and allowed < online:
        return (f"; and SCHED_DEADLINE needs a CPU affinity covering the "
                f"whole root domain, but thread {tid} may run only on CPUs "
                f"{sorted(allowed)} of {sorted(online)}")
    return ""


def _refusal(exc, tid, attr, note=""):
    """The one-line exception for the kernel's answer ``exc`` (an OSError)
    to setting ``attr`` on ``tid``; ``note`` ends the message."""
    what = f"kernel refused {attr.policy_name} for thread {tid}"
    if attr.policy == SCHED_DEADLINE:
        what += (f" (runtime {attr.runtime_ns} ns, deadline "
                 f"{attr.deadline_ns} ns, period {attr.period_ns} ns)")
    code = exc.errno
    if code == errno.EBUSY:
        bound = _bandwidth_bound()
        bound = "unknown" if bound is None else f"{bound:g} per CPU"
        share = attr.runtime_ns / attr.period_ns if attr.period_ns else 0
        return DeadlineRefused(
            f"{what}: admission control (EBUSY): the CPUs' deadline "
            f"bandwidth (bound {bound}) is used up; this thread asks "
            f"{share:.3g} of a CPU{note}", code)
    if code == errno.EINVAL:
        if attr.policy == SCHED_DEADLINE:
            lo, hi = _period_bounds_ns()
            need = (f"{MIN_RUNTIME_NS} <= runtime <= deadline <= period, "
                    f"period in [{lo}, {hi}] ns and known flags")
        else:
            need = ("a known policy and flags, nice in [-20, 19], priority "
                    "1-99 for SCHED_FIFO/SCHED_RR and 0 otherwise")
        return DeadlineRefused(f"{what}: invalid parameters (EINVAL): the "
                               f"kernel needs {need}{note}", code)
    if code == errno.EPERM:
        return PermissionError(code, f"{what}: not permitted (EPERM): needs "
                                     f"CAP_SYS_NICE{_affinity_note(tid)}"
                                     f"{note}")
    if code == errno.ESRCH:
        return NoSuchThread(f"{what}: no such thread (ESRCH){note}")
    return OSError(code, f"{what}: {os.strerror(code)} "
                         f"({errno.errorcode.get(code, code)}){note}")


def _reservation_numbers(reservation_or_numbers):
    r = reservation_or_numbers
    if all(hasattr(r, a) for a in ("runtime_ns", "deadline_ns",
                                   "period_ns")):
        return r.runtime_ns, r.deadline_ns, r.period_ns
    try:
        runtime_ns, deadline_ns, period_ns = r
    except (TypeError, ValueError):
        raise ValueError(
            f"reservation must have runtime_ns, deadline_ns and period_ns "
            f"(a CpuReservation) or be a (runtime_ns, deadline_ns, "
            f"period_ns) triple, got {r!r}") from None
    return runtime_ns, deadline_ns, period_ns


def validate_deadline(runtime_ns, deadline_ns, period_ns):
    """Check a SCHED_DEADLINE reservation (ns) before asking the kernel.

    :returns: ``(runtime_ns, deadline_ns, period_ns)`` as ints
    :raises ValueError: naming the offending argument
    """
    values = {"runtime_ns": runtime_ns, "deadline_ns": deadline_ns,
              "period_ns": period_ns}
    for name, value in values.items():
        if not _is_int(value) or value <= 0 or value >= 2 ** 63:
            raise ValueError(f"{name} must be a positive integer number of "
                             f"ns (< 2**63), got {value!r}")
    runtime_ns, deadline_ns, period_ns = (int(v) for v in values.values())
    if runtime_ns < MIN_RUNTIME_NS:
        raise ValueError(f"runtime_ns must be at least {MIN_RUNTIME_NS} ns "
                         f"(the kernel's least runtime), got {runtime_ns}")
    if runtime_ns > deadline_ns:
        raise ValueError(f"runtime_ns ({runtime_ns}) must be <= deadline_ns "
                         f"({deadline_ns})")
    if deadline_ns > period_ns:
        raise ValueError(f"deadline_ns ({deadline_ns}) must be <= period_ns "
                         f"({period_ns})")
    lo, hi = _period_bounds_ns()
    if lo is not None and period_ns < lo:
        raise ValueError(f"period_ns ({period_ns}) must be >= {lo} ns "
                         f"(kernel.sched_deadline_period_min_us)")
    if hi is not None and period_ns > hi:
        raise ValueError(f"period_ns ({period_ns}) must be <= {hi} ns "
                         f"(kernel.sched_deadline_period_max_us)")
    return runtime_ns, deadline_ns, period_ns


def validate_flags(flags):
    """Check the ``SCHED_FLAG_*`` bits of a reservation: 0 or
    :data:`SCHED_FLAG_RECLAIM`.

    :returns: ``flags`` as an int
    :raises ValueError: naming the bits that are not allowed
    """
    if not _is_int(flags) or flags < 0 or flags & ~DEADLINE_FLAGS:
        raise ValueError(f"flags must be 0 or SCHED_FLAG_RECLAIM "
                         f"({SCHED_FLAG_RECLAIM}), got {flags!r}")
    return int(flags)


def apply_deadline(tid, reservation_or_numbers, flags=0):
    """Put thread ``tid`` under SCHED_DEADLINE.

    :param reservation_or_numbers: a
        :class:`~rtmig_nova.model.sizing.CpuReservation` (its
        ``runtime_ns``, ``deadline_ns``, ``period_ns``) or a
        ``(runtime_ns, deadline_ns, period_ns)`` triple, ns
    :param flags: 0 (the runtime is a guarantee and a cap) or
        :data:`SCHED_FLAG_RECLAIM` (a guarantee; idle deadline bandwidth
        may be used beyond it)
    :returns: the thread's previous :class:`SchedAttr`, for :func:`restore`
    :raises ValueError: naming the argument, before anything is changed
    :raises DeadlineRefused: (a ValueError) if the kernel refuses:
        admission control (``errno.EBUSY``) or parameters (``EINVAL``)
    :raises NoSuchThread: (a ValueError) if the thread does not exist
    :raises PermissionError: ``EPERM`` (no CAP_SYS_NICE, or a CPU affinity
        narrower than the root domain)

    A refusal changes nothing.
    """
    tid = _check_tid(tid)
    runtime_ns, deadline_ns, period_ns = validate_deadline(
        *_reservation_numbers(reservation_or_numbers))
    flags = validate_flags(flags)
    previous = get_attr(tid)
    try:
        set_deadline(tid, runtime_ns, deadline_ns, period_ns, flags)
    except OSError as exc:
        raise _refusal(exc, tid, SchedAttr(
            SCHED_DEADLINE, flags=flags, runtime_ns=runtime_ns,
            deadline_ns=deadline_ns, period_ns=period_ns)) from None
    return previous


def _check_restorable(attr):
    if attr.policy not in POLICY_NAMES:
        raise ValueError(f"attr.policy {attr.policy} is not a known "
                         f"scheduling policy")
    if attr.policy == SCHED_DEADLINE:
        validate_deadline(attr.runtime_ns, attr.deadline_ns, attr.period_ns)
        return
    if not -20 <= attr.nice <= 19:
        raise ValueError(f"attr.nice must be in [-20, 19], got {attr.nice}")
    if attr.policy in (SCHED_FIFO, SCHED_RR):
        if not 1 <= attr.priority <= 99:
            raise ValueError(f"attr.priority must be in [1, 99] for "
                             f"{attr.policy_name}, got {attr.priority}")
    elif attr.priority != 0:
        raise ValueError(f"attr.priority must be 0 for {attr.policy_name}, "
                         f"got {attr.priority}")


def restore(tid, attr):
    """Give thread ``tid`` the scheduling attributes ``attr`` (a
    :class:`SchedAttr` from :func:`get_attr` or :func:`apply_deadline`),
    exactly: policy, flags, nice, priority and the ns fields.

    The kernel releases the admitted bandwidth of a thread leaving
    SCHED_DEADLINE only at its 0-lag time, and for a thread that is asleep
    it did not release it at all for a while (Linux 6.18: a restored,
    sleeping thread's 0.99 CPU stayed unavailable for 0.5 s to over 40 s,
    until some unrelated event recounted it).  A change of deadline
    parameters is accounted at once, so the reservation is first shrunk to
    the least runtime (:data:`MIN_RUNTIME_NS`, about no bandwidth), then the
    policy is set; if the kernel refuses that second step, the reservation
    is put back.

    On newer kernels (6.12 and later) ``sched_getattr`` reports a
    SCHED_OTHER thread's EEVDF time slice in ``runtime_ns``; setting it
    back makes that slice the thread's own, of the same length (the kernel
    does not say whether it was the default).

    :raises ValueError: naming the field of ``attr`` that cannot be set
    :raises NoSuchThread: if the thread is gone (nothing left to restore)
    :raises DeadlineRefused, PermissionError: as :func:`apply_deadline`
    """
    tid = _check_tid(tid)
    if not isinstance(attr, SchedAttr):
        raise ValueError(f"attr must be a SchedAttr, got {attr!r}")
    _check_restorable(attr)
    current = get_attr(tid)
    shrunk = False
    if current.policy == SCHED_DEADLINE and attr.policy != SCHED_DEADLINE:
        try:
            set_deadline(tid, MIN_RUNTIME_NS, current.deadline_ns,
                         current.period_ns)
            shrunk = True
        except OSError as exc:
            raise _refusal(exc, tid, attr) from None
    try:
        set_attr(tid, attr.as_tuple())
    except OSError as exc:
        note = ""
        if shrunk:
            try:
                set_attr(tid, current.as_tuple())
            except OSError as again:
                note = (f"; and its reservation could not be put back "
                        f"({errno.errorcode.get(again.errno, again.errno)}):"
                        f" it keeps SCHED_DEADLINE with runtime "
                        f"{MIN_RUNTIME_NS} ns")
        raise _refusal(exc, tid, attr, note) from None


def threads(pid):
    """The threads of process ``pid``: a list of ``(tid, name)`` sorted by
    tid, from ``/proc/PID/task/*/comm``.

    QEMU names its vCPU threads ``"CPU 0/KVM"`` (``"CPU 0/TCG"``) and its
    migration thread one of
    :data:`rtmig_nova.enforce.libvirt_controls.MIGRATION_THREAD_NAMES`.
    Threads that exit while being listed are left out.

    :raises ValueError: if there is no such process
    """
    pid = _check_tid(pid, "pid")
    task = f"/proc/{pid}/task"
    try:
        tids = sorted(int(t) for t in os.listdir(task) if t.isdigit())
    except FileNotFoundError:
        raise NoSuchThread(f"no such process: pid {pid} ({task} does not "
                           f"exist)") from None
    result = []
    for tid in tids:
        try:
            with open(f"{task}/{tid}/comm") as f:
                name = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        result.append((tid, name[:-1] if name.endswith("\n") else name))
    return result
