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

"""Testbed guests: kernel command line, libvirt domain XML, QEMU argv.

A guest boots the Debian kernel and the initramfs of
:mod:`rtmig_nova.testbed.image` directly (no disk, no network), its console
on the first serial port.  The workload and its parameters travel on the
kernel command line as ``rtmig.KEY=VALUE`` words, read by the guest's
``/init`` and by the workload programs (see the header comments of
``rtmig_nova/testbed/workloads/*.c``).  Each workload prints a status line
a second, ``rtmig-workload NAME key=value ...``; :func:`parse_status`
reads one.
"""

import ipaddress
import os
import re
import time
from xml.etree import ElementTree as ET

# The rtmig.* parameters each workload program takes (besides "workload").
WORKLOAD_PARAMS = {
    "video": ("width", "height", "frame", "ring", "mem", "meta",
              "period_us", "duration", "check", "dest", "port", "stream",
              "packet"),
    "uniform": ("mem", "rate", "batch_us", "seed", "duration", "switch_s",
                "rate_after", "check"),
    "zipf": ("mem", "rate", "s", "scatter", "batch_us", "seed",
             "duration", "check"),
    "ring": ("mem", "rate", "record", "hot", "batch_us", "duration",
             "check"),
    "burn": ("threads", "duration"),
}
_VALUE_RE = re.compile(r"^[A-Za-z0-9._+-]+$")
_STATUS_RE = re.compile(r"rtmig-workload (\w+)((?: \w+=\S+)+)")
# Seconds a guest may take from start to its workload's first status line:
# about 10 s under TCG on a quiet 2-CPU host, several times that on a busy
# one.
BOOT_TIMEOUT = 120.0


# What a guest kernel prints when it fails (a destination that got a
# corrupt memory image oopses in whatever code touches it first).
_KERNEL_FAILURE_RE = re.compile(
    r"general protection fault|BUG: |Oops: |Kernel panic|"
    r"segfault at |rtmig-init: workload \w+ exited")
# What a workload's lost=N counts.
LOST_UNITS = {"uniform": "writes", "zipf": "writes", "video": "pages",
              "ring": "records or counter pages"}
# Bytes of a console log the check reads at most (its tail): a quiet
# guest's whole log under "quiet" is a few kB a minute.
CONSOLE_READ_LIMIT = 4 << 20
# Seconds for a migrated guest to print the status lines the integrity check
# reads: two of its seconds, under TCG on a busy host several times that.
CHECK_TIMEOUT = 30.0


class GuestBootError(Exception):
    """A testbed guest did not get its workload running."""


class GuestIntegrityError(Exception):
    """A migrated guest lost writes, failed, or went silent.  ``check``:
    the :class:`IntegrityCheck` (None if there was no status to read)."""

    def __init__(self, message, check=None):
        super().__init__(message)
        self.check = check
        self.stats = None       # the migration's, where one raised it


class IntegrityCheck:
    """What a workload's own integrity check said after a migration.

    ``lost``: what the guest did not find in its memory as it last wrote
    it, since it started (:data:`LOST_UNITS`: writes for uniform and zipf,
    pages for video, records or counter pages for ring);
    ``t``: the guest's seconds at that status line; ``status``: the line's
    fields.  ``ok``: nothing lost."""

    def __init__(self, workload, status):
        self.workload = workload
        self.status = status
        self.t = status.get("t")
        self.lost = status.get("lost")

    @property
    def ok(self):
        return self.lost == 0

    def as_dict(self):
        return {"workload": self.workload, "t": self.t, "lost": self.lost}


def _format(key, value):
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, float):
        value = format(value, "g")
    value = str(value)
    if not _VALUE_RE.match(value):
        raise ValueError(f"rtmig.{key}={value!r}: a value must be a number "
                         f"or a word of [A-Za-z0-9._+-]")
    return f"rtmig.{key}={value}"


def kernel_cmdline(workload=None, mem=None, *, console="ttyS0", quiet=True,
                   address=None, extra=(), **params):
    """The kernel command line of a guest running ``workload`` (None: an
    idle guest) on a working set of ``mem`` bytes (an int, or a size such as
    "8M"; None: the program's default) with the workload's other
    parameters as keyword arguments, e.g.
    ``kernel_cmdline("uniform", "8M", rate=5000)``.  ``address``: the
    guest's IPv4 address with its prefix, "10.77.0.10/24", for ``eth0``
    (a guest with an interface, see :func:`domain_xml`).  ``extra`` are more
    kernel words.  ``panic=-1``: a guest whose init dies reboots at once,
    which ends QEMU run with ``-no-reboot`` and a libvirt domain whose
    on_reboot is destroy."""
    words = [f"console={console}", "rdinit=/init", "panic=-1"]
    if quiet:
        words.append("quiet")
    if workload is None:
        if mem is not None or params:
            raise ValueError("workload parameters without a workload")
    else:
        if workload not in WORKLOAD_PARAMS:
            raise ValueError(f"unknown workload {workload!r}; have "
                             f"{', '.join(WORKLOAD_PARAMS)}")
        unknown = sorted(set(params) - set(WORKLOAD_PARAMS[workload]))
        if unknown:
            raise ValueError(f"workload {workload} has no parameter "
                             f"{', '.join(unknown)}")
        words.append(_format("workload", workload))
        if mem is not None:
            words.append(_format("mem", mem))
        words += [_format(k, v) for k, v in params.items()]
    if address is not None:
        iface = ipaddress.IPv4Interface(address)
        words += [_format("ip", iface.ip), _format("prefix",
                                                   iface.network.prefixlen)]
    words += [str(w) for w in extra]
    return " ".join(words)


def domain_xml(name, kernel, initrd, memory_mib, vcpus, cmdline,
               domain_type="qemu", machine="pc", console_log=None,
               bridge=None, mac=None):
    """A libvirt domain of ``domain_type`` ("qemu": TCG; "kvm" where KVM
    works) booting ``kernel`` and ``initrd`` directly with ``cmdline``:
    no disk, no network unless ``bridge`` names a Linux bridge (then one
    virtio-net interface on it, MAC ``mac`` or libvirt's choice; the
    bridge must exist under that name on both hosts of a migration), ACPI
    (so the guest can power off), a pty serial
    port that is also the console, no balloon.  The guest stops for good
    on power-off, reboot or crash.  For a migration the kernel and initrd
    paths must exist on both hosts.  ``console_log``: a file virtlogd
    copies the serial console into (appended to, so that a migrated
    guest's destination adds to it).

    Size ``memory_mib`` as the workload's memory plus about 72 MiB: the
    kernel and the initramfs (which stays in RAM) leave about 57 MiB
    available in a 128 MiB guest (the init's first line says how much).  A
    workload that does not fit is OOM-killed and the guest powers off."""
    dom = ET.Element("domain", type=domain_type)
    ET.SubElement(dom, "name").text = name
    ET.SubElement(dom, "memory", unit="MiB").text = str(int(memory_mib))
    ET.SubElement(dom, "vcpu").text = str(int(vcpus))
    os_ = ET.SubElement(dom, "os")
    ET.SubElement(os_, "type", arch="x86_64", machine=machine).text = "hvm"
    ET.SubElement(os_, "kernel").text = str(kernel)
    ET.SubElement(os_, "initrd").text = str(initrd)
    ET.SubElement(os_, "cmdline").text = cmdline
    ET.SubElement(ET.SubElement(dom, "features"), "acpi")
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        ET.SubElement(dom, event).text = "destroy"
    devices = ET.SubElement(dom, "devices")
    if bridge is not None:
        iface = ET.SubElement(devices, "interface", type="bridge")
        ET.SubElement(iface, "source", bridge=str(bridge))
        if mac is not None:
            ET.SubElement(iface, "mac", address=str(mac))
        ET.SubElement(iface, "model", type="virtio")
    serial = ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(serial, "target", port="0")
    if console_log is not None:
        ET.SubElement(serial, "log", file=str(console_log), append="on")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")
    ET.SubElement(devices, "memballoon", model="none")
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode")


def qemu_argv(kernel, initrd, cmdline, memory_mib=128, vcpus=1,
              accel="tcg", serial="stdio", qemu="qemu-system-x86_64",
              extra=()):
    """The argv of a plain QEMU running the guest: ``-accel tcg`` by
    default, no default devices, no display or monitor, its serial
    console on ``serial`` (a QEMU chardev: "stdio", "file:PATH",
    "pipe:PATH", ...); QEMU exits when the guest powers off or reboots."""
    return [qemu, "-accel", accel, "-machine", "pc", "-nodefaults",
            "-nographic", "-monitor", "none", "-no-reboot",
            "-m", str(int(memory_mib)), "-smp", str(int(vcpus)),
            "-serial", serial, "-kernel", str(kernel),
            "-initrd", str(initrd), "-append", cmdline, *extra]


def wait_until_running(console_log, workload=None, timeout=BOOT_TIMEOUT,
                       alive=None, poll=0.2):
    """Block until the guest whose serial console is copied to
    ``console_log`` (a path) runs ``workload``: its first ``rtmig-workload``
    status line, which the program prints one second after it started
    writing; for an idle guest (None), init's ``rtmig-init: up`` line.
    ``alive()``, if given, is polled too: False means the guest is gone.
    Returns the seconds waited; raises :class:`GuestBootError` after
    ``timeout`` s.

    A fixed sleep is not enough: the boot takes from 10 s to several
    times that under TCG, and a capture or a migration started during it
    sees the kernel's boot-time writes instead of the workload's."""
    marker = "rtmig-init: up" if workload is None \
        else f"rtmig-workload {workload} "
    start = time.monotonic()
    while True:
        try:
            # a few kB: a boot's console under "quiet" is init's lines
            with open(console_log, "rb") as f:
                text = f.read().decode(errors="replace")
        except FileNotFoundError:
            text = ""
        if marker in text:
            return time.monotonic() - start
        if alive is not None and not alive():
            raise GuestBootError(f"the guest stopped before {marker!r} "
                                 f"appeared in {console_log}")
        if time.monotonic() - start >= timeout:
            last = text.strip().splitlines()[-1:] or ["nothing"]
            raise GuestBootError(
                f"no {marker!r} in {console_log} after {timeout:g} s "
                f"(last console line: {last[0][:200]!r})")
        time.sleep(poll)


def parse_status(line):
    """(workload, {key: int or float}) of a ``rtmig-workload`` status line
    (anywhere in ``line``), or None."""
    m = _STATUS_RE.search(line)
    if not m:
        return None
    fields = {}
    for item in m.group(2).split():
        key, value = item.split("=", 1)
        try:
            fields[key] = int(value)
        except ValueError:
            try:
                fields[key] = float(value)
            except ValueError:
                fields[key] = value
    return m.group(1), fields


def _console_bytes(console_log, offset=0, limit=CONSOLE_READ_LIMIT):
    """(bytes of the console log from ``offset``, at most ``limit``, and
    the offset they start at): from 0 if the log is now shorter than
    ``offset`` (virtlogd rotated it)."""
    try:
        with open(console_log, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size < offset:
                offset = 0
            start = max(offset, size - limit)
            f.seek(start)
            return f.read(limit), start
    except FileNotFoundError:
        return b"", 0


def _int_fields(parsed):
    """``parsed`` (a :func:`parse_status` result) if its ``t`` and
    ``lost`` (where present) are integers, else None: a line that the
    kernel's output cut into is not a reading."""
    if parsed is None:
        return None
    fields = parsed[1]
    if not isinstance(fields.get("t"), int) or \
            not isinstance(fields.get("lost", 0), int):
        return None
    return parsed


def console_mark(console_log):
    """Where the guest's console log stands now: (its length in bytes, the
    workload and fields of its last status line, or None).  Take one when
    a migration starts and one when it ends; :func:`check_after_migration`
    reads what follows them."""
    data, start = _console_bytes(console_log)
    last = None
    for line in data.decode(errors="replace").splitlines():
        parsed = _int_fields(parse_status(line))
        if parsed:
            last = parsed
    return start + len(data), last


def check_after_migration(console_log, mark, timeout=CHECK_TIMEOUT,
                          poll=0.2, since=None):
    """The integrity check of a guest that has just migrated: wait for a
    status line the workload printed at least two of its seconds after
    ``mark`` (:func:`console_mark` taken when the migration ended), so by
    the destination, and return its :class:`IntegrityCheck`.

    Raises :class:`GuestIntegrityError` if that line reports lost writes,
    if the kernel or the workload failed after ``since`` (a mark taken
    when the migration started; default ``mark``: a failure right after
    the switch-over comes before the migration call returns), if the
    workload runs without the check (``rtmig.check=0``), or if no such
    line came in ``timeout`` s (a destination that crashed or hangs).
    Returns None for a guest that runs no workload (nothing to check)."""
    offset, last = mark
    if last is None:
        head, _ = _console_bytes(console_log, 0)
        if b"rtmig-init: up workload=none" in head:
            return None
        raise GuestIntegrityError(
            f"no workload status line in {console_log} before the "
            f"migration ended: nothing to check against")
    workload, fields = last
    want_t = fields["t"] + 2
    scan_from = (since or mark)[0]
    end = time.monotonic() + timeout
    while True:
        first = min(scan_from, offset)
        data, start = _console_bytes(console_log, first)
        if start < first and start + len(data) < offset:
            offset = scan_from = 0          # rotated: a new log
        text = data.decode(errors="replace")
        failure = _KERNEL_FAILURE_RE.search(text)
        if failure:
            line = text[text.rfind("\n", 0, failure.start()) + 1:]
            raise GuestIntegrityError(
                "the guest failed during or after the migration: %r"
                % line.splitlines()[0][:200])
        after = data[max(offset - start, 0):].decode(errors="replace")
        for line in after.splitlines():
            parsed = _int_fields(parse_status(line))
            if parsed and parsed[1]["t"] >= want_t:
                check = IntegrityCheck(parsed[0], parsed[1])
                if check.lost is None:
                    raise GuestIntegrityError(
                        f"the {workload} workload runs without its "
                        f"integrity check (rtmig.check=0)", check)
                if not check.ok:
                    unit = LOST_UNITS.get(parsed[0], "writes")
                    raise GuestIntegrityError(
                        f"the guest lost {check.lost} {unit} in the "
                        f"migration (its check at t={check.t} s)", check)
                return check
        if time.monotonic() >= end:
            raise GuestIntegrityError(
                f"no status line from the migrated guest in {timeout:g} s "
                f"(wanted t >= {want_t}; console {console_log})")
        time.sleep(poll)
