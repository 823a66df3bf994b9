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

"""The testbed's guest image: a Debian kernel plus an initramfs built here.

The initramfs holds busybox-static (its applets as symlinks in /bin), the
workload programs of ``rtmig_nova/testbed/workloads`` compiled with the
system gcc (``rtmig-video``, ``rtmig-uniform``, ``rtmig-zipf``,
``rtmig-ring``, ``rtmig-burn``, statically linked) and an ``/init`` script
that mounts proc, sys and dev, reads ``rtmig.workload=NAME`` from the
kernel command line and runs ``/bin/rtmig-NAME`` (see :data:`INIT_SCRIPT`).
It also holds the guest kernel's virtio-net modules (:data:`NET_MODULES`,
from ``/lib/modules/VERSION`` of the kernel the image is built for): with
``rtmig.ip=A.B.C.D`` (and ``rtmig.prefix=N``, default 24) on the command
line, the init loads them and gives ``eth0`` that address.

The archive (cpio "newc" + gzip) is written here in Python rather than by
``cpio``: every entry gets uid/gid 0 and mtime 0, so the same sources,
compiler and busybox give the same bytes, and ``/dev/console`` is written
as a device entry without ``mknod`` (so building needs no root).  Builds are
cached in the work directory under a hash of everything that goes in.
"""

import gzip
import hashlib
import logging
import lzma
import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

LOG = logging.getLogger(__name__)

WORKLOADS = ("video", "uniform", "zipf", "ring", "burn")
WORKLOAD_DIR = Path(__file__).resolve().parent / "workloads"
COMMON_SOURCES = ("common.c",)
CC = "gcc"
CFLAGS = ("-O2", "-static", "-s", "-Wall", "-Wextra")
LDLIBS = ("-lm", "-lpthread")
BUSYBOX = "/bin/busybox"
BOOT_DIR = "/boot"
KERNEL_PACKAGE = "linux-image-amd64"
# What building needs, and what booting needs on top.
BUILD_PACKAGES = ("gcc", "libc6-dev", "busybox-static")
ALL_PACKAGES = BUILD_PACKAGES + (KERNEL_PACKAGE,)
# Bump when the layout of the image changes without its inputs changing.
FORMAT_VERSION = "2"
MODULES_DIR = "/lib/modules"
# virtio-net and what it needs, in load order (Debian builds them as
# modules; a kernel that has one built in has no file for it).
NET_MODULES = (
    "drivers/virtio/virtio_ring", "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci_modern_dev", "drivers/virtio/virtio_pci",
    "net/core/failover", "drivers/net/net_failover",
    "drivers/net/virtio_net",
)

INIT_SCRIPT = """#!/bin/sh
# rtmig-nova guest init (PID 1).  Runs /bin/rtmig-$W for the kernel
# command-line word rtmig.workload=W; without one, idles.  PID 1 must not
# exit, so when the workload ends the guest powers off (QEMU exits, or the
# libvirt domain shuts off) instead of panicking.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
workload=
ip=
prefix=24
for word in $(cat /proc/cmdline); do
    case "$word" in
        rtmig.workload=*) workload=${word#rtmig.workload=} ;;
        rtmig.ip=*) ip=${word#rtmig.ip=} ;;
        rtmig.prefix=*) prefix=${word#rtmig.prefix=} ;;
    esac
done
if [ -n "$ip" ]; then
    for m in $(cat /lib/modules/order 2>/dev/null); do
        insmod "/lib/modules/$m.ko"
    done
    i=0
    while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do
        sleep 0.1
        i=$((i+1))
    done
    ip link set lo up
    if ip addr add "$ip/$prefix" dev eth0 && ip link set eth0 up; then
        echo "rtmig-init: network eth0 $ip/$prefix"
    else
        echo "rtmig-init: no network (eth0 $ip/$prefix failed)"
    fi
fi
echo "rtmig-init: up workload=${workload:-none}" \\
     "memavailable_kib=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)"
if [ -n "$workload" ] && [ "$workload" != none ]; then
    if [ -x "/bin/rtmig-$workload" ]; then
        "/bin/rtmig-$workload"
        echo "rtmig-init: workload $workload exited with status $?"
    else
        echo "rtmig-init: unknown workload $workload;" \\
             "have: $(cd /bin && echo rtmig-*)"
    fi
    sync
    poweroff -f
fi
while :; do
    sleep 3600
done
"""


class ImageError(RuntimeError):
    """The guest image cannot be built or its kernel is missing."""


# ---- packages -------------------------------------------------------------

def _installed(package):
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package],
            capture_output=True, text=True, check=False).stdout
    except FileNotFoundError:
        return False
    return out.endswith("ok installed")


def _have_kernel():
    try:
        find_kernel()
    except ImageError:
        return False
    return True


def missing_packages(packages=ALL_PACKAGES):
    """The Debian packages of ``packages`` that are not installed (the
    kernel package counts as present when a /boot/vmlinuz-* exists)."""
    return [p for p in packages
            if not (p == KERNEL_PACKAGE and _have_kernel())
            and not _installed(p)]


def _apt_get(*args):
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(["apt-get", *args], env=env, capture_output=True,
                          text=True, check=False)


def ensure_packages(packages=ALL_PACKAGES):
    """Install the missing ones of ``packages`` with apt-get when root
    (``apt-get update`` once if the first install fails); else raise
    :class:`ImageError` saying what to install.  Returns the packages it
    installed."""
    missing = missing_packages(packages)
    if not missing:
        return []
    hint = "apt-get install -y " + " ".join(missing)
    if os.geteuid() != 0:
        raise ImageError(f"missing Debian packages {', '.join(missing)}; "
                         f"as root run: {hint}")
    if shutil.which("apt-get") is None:
        raise ImageError(f"missing packages {', '.join(missing)} and no "
                         f"apt-get to install them")
    LOG.info("installing %s", " ".join(missing))
    install = ("install", "-y", "-q", "--no-install-recommends", *missing)
    res = _apt_get(*install)
    if res.returncode != 0:
        _apt_get("update", "-q")
        res = _apt_get(*install)
    if res.returncode != 0:
        tail = " ".join(res.stderr.strip().splitlines()[-2:])
        raise ImageError(f"'{hint}' failed: {tail}")
    still = missing_packages(packages)
    if still:
        raise ImageError(f"still missing after apt-get: {', '.join(still)}")
    return missing


# ---- kernel ---------------------------------------------------------------

def _version_key(path):
    return [int(p) if p.isdigit() else p
            for p in re.split(r"(\d+)", path.name)]


def kernel_version(kernel):
    """The release of ``/boot/vmlinuz-RELEASE`` (its modules' directory
    under /lib/modules)."""
    name = Path(kernel).name
    return name[len("vmlinuz-"):] if name.startswith("vmlinuz-") else name


def net_modules(kernel, modules_dir=MODULES_DIR):
    """{name in load order: path} of :data:`NET_MODULES` for ``kernel``
    (uncompressed ``.ko`` or ``.ko.xz``; a module without a file is taken
    to be built in).  Empty when the kernel has no modules directory."""
    base = Path(modules_dir) / kernel_version(kernel) / "kernel"
    found = {}
    if not base.is_dir():
        return found
    for name in NET_MODULES:
        for suffix in (".ko", ".ko.xz"):
            path = base / (name + suffix)
            if path.is_file():
                found[name] = path
                break
    return found


def _module_bytes(path):
    data = Path(path).read_bytes()
    # busybox's insmod takes plain ELF objects only
    return lzma.decompress(data) if str(path).endswith(".xz") else data


def find_kernel(boot_dir=BOOT_DIR):
    """The newest /boot/vmlinuz-* (from linux-image-amd64)."""
    kernels = sorted(Path(boot_dir).glob("vmlinuz-*"), key=_version_key)
    if not kernels:
        raise ImageError(f"no guest kernel: no {boot_dir}/vmlinuz-*; "
                         f"install {KERNEL_PACKAGE} "
                         f"(apt-get install -y {KERNEL_PACKAGE})")
    kernel = kernels[-1]
    if not os.access(kernel, os.R_OK):
        raise ImageError(f"guest kernel {kernel} is not readable")
    return kernel


# ---- cpio newc ------------------------------------------------------------

def _pad4(n):
    return (4 - n % 4) % 4


def cpio_newc(entries):
    """A cpio archive in the "newc" format (the kernel's initramfs format)
    of ``entries``: (name, mode, data, rdev) tuples, mode with its file
    type bits, data the file contents or a symlink's target (bytes), rdev a
    (major, minor) pair for device nodes.  Owner root, mtime 0."""
    out = bytearray()

    def entry(ino, name, mode, data=b"", rdev=(0, 0)):
        name_b = name.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(mode) else 1
        fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0,
                  rdev[0], rdev[1], len(name_b), 0)
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.extend(name_b + b"\0" * _pad4(110 + len(name_b)))
        out.extend(data + b"\0" * _pad4(len(data)))

    for ino, (name, mode, data, rdev) in enumerate(
            sorted(entries, key=lambda e: e[0]), start=1):
        entry(ino, name, mode, data, rdev)
    entry(0, "TRAILER!!!", 0)
    return bytes(out)


# ---- build ----------------------------------------------------------------

def _sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _compiler_id():
    try:
        res = subprocess.run([CC, "--version"], capture_output=True,
                             text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise ImageError(f"cannot run {CC}: {e}") from e
    return res.stdout.splitlines()[0] if res.stdout else CC


def _check_workloads(workloads):
    workloads = tuple(workloads)
    for w in workloads:
        if not (WORKLOAD_DIR / f"{w}.c").is_file():
            raise ImageError(f"unknown workload {w!r}; "
                             f"have {', '.join(WORKLOADS)}")
    return tuple(sorted(set(workloads)))


def build_key(workloads=WORKLOADS, modules=None):
    """The hash (hex) of every input of the image: sources, init script,
    compiler and flags, busybox binary, workload list, kernel modules
    (``modules``: {name: path}, as :func:`net_modules` gives)."""
    h = hashlib.sha256()

    def add(label, value):
        value = value.encode() if isinstance(value, str) else value
        h.update(b"%s:%d:" % (label.encode(), len(value)) + value)

    add("format", FORMAT_VERSION)
    add("workloads", " ".join(_check_workloads(workloads)))
    add("cc", _compiler_id())
    add("cflags", " ".join(CFLAGS + LDLIBS))
    for src in sorted(WORKLOAD_DIR.glob("*.[ch]")):
        add("src:" + src.name, src.read_bytes())
    add("init", INIT_SCRIPT)
    add("busybox", _sha256_file(BUSYBOX))
    for name, path in sorted((modules or {}).items()):
        add("module:" + name, _sha256_file(path))
    return h.hexdigest()


def compile_workloads(outdir, workloads=WORKLOADS, cflags=CFLAGS):
    """Compile each workload to ``outdir/rtmig-NAME`` (in parallel);
    returns {name: path}.  Compiler warnings are logged."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    procs = {}
    for w in _check_workloads(workloads):
        srcs = [str(WORKLOAD_DIR / f"{w}.c")]
        srcs += [str(WORKLOAD_DIR / s) for s in COMMON_SOURCES]
        out = outdir / f"rtmig-{w}"
        procs[w] = (out, subprocess.Popen(
            [CC, *cflags, "-o", str(out), *srcs, *LDLIBS],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    errors = []
    for w, (out, proc) in procs.items():
        text = proc.communicate()[0].strip()
        if proc.returncode != 0:
            errors.append(f"{w}: {text}")
        elif text:
            LOG.warning("compiling workload %s: %s", w, text)
    if errors:
        raise ImageError("compiling the workloads failed: "
                         + " | ".join(errors))
    return {w: out for w, (out, _) in procs.items()}


def _busybox_applets():
    res = subprocess.run([BUSYBOX, "--list"], capture_output=True,
                         text=True, check=True)
    return sorted(a for a in res.stdout.split()
                  if a and "/" not in a and a != "busybox")


def _entries(binaries, modules=None):
    d, x = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o755
    entries = [(name, d, b"", (0, 0))
               for name in ("bin", "dev", "proc", "sys", "tmp", "root")]
    if modules:
        dirs = {"lib", "lib/modules"}
        for name in modules:
            parts = name.split("/")
            dirs.update("lib/modules/" + "/".join(parts[:i])
                        for i in range(1, len(parts)))
        entries += [(p, d, b"", (0, 0)) for p in sorted(dirs)]
        entries.append(("lib/modules/order", stat.S_IFREG | 0o644,
                        "".join(n + "\n" for n in modules).encode(),
                        (0, 0)))
        entries += [(f"lib/modules/{n}.ko", stat.S_IFREG | 0o644,
                     _module_bytes(p), (0, 0)) for n, p in modules.items()]
    entries.append(("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)))
    entries.append(("init", x, INIT_SCRIPT.encode(), (0, 0)))
    entries.append(("bin/busybox", x, Path(BUSYBOX).read_bytes(), (0, 0)))
    for applet in _busybox_applets():
        if applet not in binaries:
            entries.append((f"bin/{applet}", stat.S_IFLNK | 0o777,
                            b"busybox", (0, 0)))
    for name, path in binaries.items():
        entries.append((f"bin/{name}", x, Path(path).read_bytes(), (0, 0)))
    return entries


def build_initramfs(workdir, workloads=WORKLOADS, install=True,
                    kernel=None):
    """Build (or take from the cache in ``workdir``) the guest initramfs
    with ``workloads`` and the network modules of ``kernel`` (a
    ``vmlinuz-RELEASE`` path; default :func:`find_kernel`'s, the kernel
    the testbed boots); returns the path of ``initramfs-<hash>.cpio.gz``.
    With ``install``, missing build packages are installed first (root) or
    reported (see :func:`ensure_packages`)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if install:
        ensure_packages(BUILD_PACKAGES)
    elif missing_packages(BUILD_PACKAGES):
        raise ImageError("missing Debian packages: "
                         + ", ".join(missing_packages(BUILD_PACKAGES)))
    workloads = _check_workloads(workloads)
    try:
        kernel = find_kernel() if kernel is None else kernel
    except ImageError:
        kernel = None           # an image without network modules
    modules = {} if kernel is None else net_modules(kernel)
    image = workdir / (f"initramfs-{build_key(workloads, modules)[:16]}"
                       f".cpio.gz")
    if image.is_file():
        return image
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".build-") as tmp:
        built = compile_workloads(Path(tmp) / "bin", workloads)
        binaries = {f"rtmig-{w}": p for w, p in built.items()}
        archive = cpio_newc(_entries(binaries, modules))
        part = Path(tmp) / image.name
        part.write_bytes(gzip.compress(archive, compresslevel=9, mtime=0))
        os.replace(part, image)
    return image
