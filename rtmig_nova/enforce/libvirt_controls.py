"""Migration and CPU controls of a domain, through libvirt.

libvirt is imported lazily: Nova's test base poisons ``import libvirt``, and
the package must import without libvirt-python installed.

Units: libvirt takes the migration speed in MiB/s and the maximum downtime
in milliseconds; these functions take bytes/s and seconds (rounding the
speed up and the downtime down, so the setting never grants less bandwidth
or more downtime than asked) and report what was set in the same SI units.
The scheduler parameters are libvirt's own: periods and quotas in
microseconds, quota -1 for "no limit".
"""

import math
import os
import sys
import uuid

MIB = 2 ** 20
# libvirt's typed scheduler parameters of the QEMU driver that rtmig-nova
# sets: CFS bandwidth of the vCPU, emulator and I/O-thread cgroups.
CPU_PARAMS = ("vcpu_period", "vcpu_quota", "emulator_period",
              "emulator_quota", "iothread_period", "iothread_quota")


class LibvirtError(ValueError):
    """A libvirt operation failed; the message is one line."""


def _libvirt():
    try:
        import libvirt  # noqa: lazy, see module doc
    except ImportError:
        raise LibvirtError("libvirt-python is not installed (pip install "
                           "'rtmig-nova[libvirt]')") from None
    return libvirt


def _libvirt_of(obj):
    """The libvirt module ``obj`` (a connection, domain or bound method of
    one) comes from: its errors and constants are the ones to use with it
    (Nova's tests pass objects of their fake libvirt module)."""
    obj = getattr(obj, "__self__", obj)
    module = sys.modules.get(type(obj).__module__)
    if module is not None and hasattr(module, "libvirtError"):
        return module
    return _libvirt()


def _one_line(err):
    return " ".join(str(err).split())


def connect(uri="qemu:///system"):
    """Open a libvirt connection; a one-line LibvirtError if it fails."""
    libvirt = _libvirt()
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as e:
        raise LibvirtError(f"cannot connect to {uri}: {_one_line(e)}") \
            from None


def lookup(conn, domain):
    """A running domain by UUID or name."""
    libvirt = _libvirt_of(conn)
    try:
        try:
            uuid.UUID(domain)
        except ValueError:
            dom = conn.lookupByName(domain)
        else:
            dom = conn.lookupByUUIDString(domain)
    except libvirt.libvirtError:
        try:
            where = conn.getURI()
        except (libvirt.libvirtError, AttributeError):
            where = "this libvirt"
        raise LibvirtError(f"no domain {domain!r} on {where}") from None
    if not dom.isActive():
        raise LibvirtError(f"domain {domain!r} is not running")
    return dom


def _call(what, fn, *args):
    libvirt = _libvirt_of(fn)
    try:
        return fn(*args)
    except libvirt.libvirtError as e:
        raise LibvirtError(f"{what}: {_one_line(e)}") from None


def get_migration(dom):
    """Current migration settings: (max speed bytes/s, max downtime s)."""
    speed = _call("reading the migration speed", dom.migrateGetMaxSpeed, 0)
    downtime = _call("reading the maximum downtime",
                     dom.migrateGetMaxDowntime, 0)
    return speed * MIB, downtime / 1000.0


def downtime_ms(seconds):
    """A downtime limit in libvirt's whole ms, rounded down (never more
    downtime than asked)."""
    return math.floor(seconds * 1000 + 1e-9)


def set_migration(dom, bandwidth=None, max_downtime=None):
    """Set the migration's maximum speed (bytes/s, rounded up to whole MiB/s)
    and maximum downtime (s, rounded down to whole ms).  Returns what was
    set, in bytes/s and s."""
    speed = limit_ms = None
    if bandwidth is not None:
        if not (math.isfinite(bandwidth) and bandwidth > 0):
            raise ValueError(f"bandwidth must be > 0 bytes/s, got "
                             f"{bandwidth!r}")
        speed = math.ceil(bandwidth / MIB)
    if max_downtime is not None:
        if not (math.isfinite(max_downtime) and max_downtime > 0):
            raise ValueError(f"max_downtime must be > 0 s, got "
                             f"{max_downtime!r}")
        limit_ms = downtime_ms(max_downtime)
        if limit_ms < 1:
            raise ValueError("max_downtime must be at least 1 ms")
    if speed is not None:
        _call("setting the migration speed", dom.migrateSetMaxSpeed,
              speed, 0)
    if limit_ms is not None:
        # no flags argument: there is none to give, and Nova's fake
        # libvirt takes none
        _call("setting the maximum downtime", dom.migrateSetMaxDowntime,
              limit_ms)
    return (speed * MIB if speed is not None else None,
            limit_ms / 1000.0 if limit_ms is not None else None)


def migration_params(bandwidth):
    """Typed parameters for ``virDomainMigrateToURI3`` that carry the
    planned bandwidth (bytes/s, rounded up to libvirt's whole MiB/s):
    ``{VIR_MIGRATE_PARAM_BANDWIDTH: MiB/s}``.  The maximum downtime has no
    such parameter: set it with :func:`set_migration` (before or while the
    migration runs)."""
    if not (isinstance(bandwidth, (int, float)) and math.isfinite(bandwidth)
            and bandwidth > 0):
        raise ValueError(f"bandwidth must be > 0 bytes/s, got {bandwidth!r}")
    # VIR_MIGRATE_PARAM_BANDWIDTH is the string "bandwidth" in libvirt.h.
    return {"bandwidth": math.ceil(bandwidth / MIB)}


def get_cpu(dom):
    """Live CFS bandwidth parameters of the domain (``CPU_PARAMS``)."""
    libvirt = _libvirt_of(dom)
    params = _call("reading the scheduler parameters",
                   dom.schedulerParametersFlags,
                   libvirt.VIR_DOMAIN_AFFECT_LIVE)
    return {k: params[k] for k in CPU_PARAMS if k in params}


def set_cpu(dom, **params):
    """Set live CFS bandwidth parameters (microseconds; quota -1 = none).

    Only the keys of ``CPU_PARAMS`` are accepted; periods must be
    1000..1000000 us and quotas -1 or 1000..18446744073709551 us (the
    kernel's limits)."""
    libvirt = _libvirt_of(dom)
    clean = {}
    for key, value in params.items():
        if key not in CPU_PARAMS:
            raise ValueError(f"unknown CPU parameter {key!r} (one of "
                             f"{', '.join(CPU_PARAMS)})")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key} must be an integer number of us")
        if key.endswith("_period") and not 1000 <= value <= 1000000:
            raise ValueError(f"{key} must be 1000..1000000 us, got {value}")
        if key.endswith("_quota") and value != -1 and value < 1000:
            raise ValueError(f"{key} must be -1 or >= 1000 us, got {value}")
        clean[key] = value
    if clean:
        _call("setting the scheduler parameters",
              dom.setSchedulerParametersFlags, clean,
              libvirt.VIR_DOMAIN_AFFECT_LIVE)
    return get_cpu(dom)


def qemu_pid(dom):
    """Process id of the domain's QEMU (from libvirt's pid file)."""
    conn = dom.connect()
    uri = conn.getURI()
    if not uri.endswith("/system"):
        raise LibvirtError(f"thread ids need a qemu:///system connection, "
                           f"not {uri}")
    path = os.path.join("/run/libvirt/qemu", dom.name() + ".pid")
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        raise LibvirtError(f"cannot read the QEMU pid of {dom.name()!r} "
                           f"from {path}") from None


# QEMU's names of the thread that sends a migration's pages (libvirt starts
# QEMU with debug-threads=on): "live_migration" up to 9.0 (Debian 12's
# 7.2), "mig/src/main" from 9.1 (bookworm-backports' 10.0).  It exists
# only while a migration runs.
MIGRATION_THREAD_NAMES = ("live_migration", "mig/src/main")


def is_migration_thread(name):
    """True if ``name`` (a thread's comm) is QEMU's migration thread's."""
    return name in MIGRATION_THREAD_NAMES


def qemu_threads(dom):
    """(thread id, name) of every thread of the domain's QEMU; QEMU names
    its vCPU threads ``CPU n/KVM`` or ``CPU n/TCG`` and its migration thread
    one of :data:`MIGRATION_THREAD_NAMES`."""
    pid = qemu_pid(dom)
    base = f"/proc/{pid}/task"
    out = []
    try:
        tids = sorted(int(t) for t in os.listdir(base))
    except OSError:
        raise LibvirtError(f"QEMU process {pid} is gone") from None
    for tid in tids:
        try:
            with open(f"{base}/{tid}/comm") as f:
                out.append((tid, f.read().strip()))
        except OSError:
            continue            # the thread ended meanwhile
    return out


def migration_threads(dom):
    """Thread ids of the domain's QEMU migration thread: none while no
    migration runs."""
    return [tid for tid, name in qemu_threads(dom)
            if is_migration_thread(name)]


def hypervisor_version(dom):
    """libvirt's number for the QEMU that runs ``dom``'s host (major *
    1,000,000 + minor * 1,000 + micro: ``virConnectGetVersion``), or None
    if libvirt does not say."""
    try:
        version = dom.connect().getVersion()
    except (AttributeError, _libvirt_of(dom).libvirtError):
        return None
    return version if isinstance(version, int) and version > 0 else None


def vcpu_threads(dom):
    """Thread ids of the vCPUs, in vCPU order."""
    cpus = []
    for tid, name in qemu_threads(dom):
        parts = name.split()
        if len(parts) == 2 and parts[0] == "CPU" and "/" in parts[1]:
            index = parts[1].split("/")[0]
            if index.isdigit():
                cpus.append((int(index), tid))
    return [tid for _, tid in sorted(cpus)]
