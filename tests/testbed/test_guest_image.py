"""The testbed's guest image: workload programs, initramfs, guest boot.

The unit tests need nothing.  The workload tests need gcc and libc6-dev;
building the image needs busybox-static too, booting it also
linux-image-amd64 and qemu-system-x86_64.  As root the missing Debian
packages are installed (apt-get); otherwise those tests skip, naming the
packages to install.  Guests run under TCG (``-accel tcg``)."""

import gzip
import os
import selectors
import shutil
import subprocess
import sys
import time
from xml.etree import ElementTree as ET

import numpy as np
import pytest

from rtmig_nova.testbed import guest
from rtmig_nova.testbed import image
from rtmig_nova.testbed import playout
from rtmig_nova.testbed import traffic

BOOT_TIMEOUT = 60.0
QEMU = "qemu-system-x86_64"
# Small parameters: a 4-frame ring of 640x480 frames, 8 MiB working sets.
BOOT_CASES = {
    "video": dict(width=640, height=480, ring=4),
    "uniform": dict(mem="8M", rate=5000),
    "zipf": dict(mem="8M", rate=5000, s=1.1),
    "ring": dict(mem="8M", rate=2000, record=512),
}


# ---- unit: command line, XML, argv, status lines, cpio ------------------

def test_kernel_cmdline():
    line = guest.kernel_cmdline("uniform", "8M", rate=5000, seed=3)
    assert line.split() == [
        "console=ttyS0", "rdinit=/init", "panic=-1", "quiet",
        "rtmig.workload=uniform", "rtmig.mem=8M", "rtmig.rate=5000",
        "rtmig.seed=3"]
    assert guest.kernel_cmdline("zipf", 1 << 20, s=1.25, quiet=False,
                                extra=["edd=off"]).endswith(
        "rtmig.workload=zipf rtmig.mem=1048576 rtmig.s=1.25 edd=off")
    idle = guest.kernel_cmdline(console="ttyS1")
    assert idle == "console=ttyS1 rdinit=/init panic=-1 quiet"
    assert "rtmig." not in idle


@pytest.mark.parametrize("args, kwargs", [
    (("bogus",), {}),
    (("video",), {"rate": 5}),           # not a video parameter
    ((None, "8M"), {}),                  # parameters without a workload
    (("uniform", "8 M"), {}),            # would split the command line
    (("uniform",), {"rate": "1;reboot"}),
])
def test_kernel_cmdline_rejects(args, kwargs):
    with pytest.raises(ValueError):
        guest.kernel_cmdline(*args, **kwargs)


def test_kernel_cmdline_gives_the_guest_an_address():
    line = guest.kernel_cmdline("video", address="10.77.0.16/24",
                                dest="10.77.0.3", port=5004)
    assert line.split()[-4:] == [
        "rtmig.dest=10.77.0.3", "rtmig.port=5004", "rtmig.ip=10.77.0.16",
        "rtmig.prefix=24"]
    assert "rtmig.ip=10.0.0.1 rtmig.prefix=8" in guest.kernel_cmdline(
        address="10.0.0.1/8")
    for bad in ("10.77.0.300/24", "10.77.0.1/40", "fe80::1/64", "x"):
        with pytest.raises(ValueError):
            guest.kernel_cmdline(address=bad)


def test_workload_params_match_the_programs():
    # Every parameter the Python side offers is one the C program knows.
    for name, params in guest.WORKLOAD_PARAMS.items():
        src = (image.WORKLOAD_DIR / f"{name}.c").read_text()
        known = src.split("known[] = {", 1)[1].split("};", 1)[0]
        assert sorted(params) == sorted(
            k.strip().strip('"') for k in known.split(",")
            if k.strip() not in ("", "NULL")), name


def test_domain_xml():
    cmdline = guest.kernel_cmdline("video", ring=4)
    text = guest.domain_xml("rtmtb-v1", "/boot/vmlinuz-x", "/tmp/i&r.gz",
                            256, 2, cmdline)
    dom = ET.fromstring(text)
    assert dom.get("type") == "qemu"
    assert dom.findtext("name") == "rtmtb-v1"
    assert dom.find("memory").get("unit") == "MiB"
    assert dom.findtext("memory") == "256"
    assert dom.findtext("vcpu") == "2"
    assert dom.find("os/type").text == "hvm"
    assert dom.findtext("os/kernel") == "/boot/vmlinuz-x"
    assert dom.findtext("os/initrd") == "/tmp/i&r.gz"
    assert dom.findtext("os/cmdline") == cmdline
    assert "console=ttyS0" in cmdline
    assert dom.find("features/acpi") is not None
    devices = dom.find("devices")
    assert devices.find("serial").get("type") == "pty"
    assert devices.find("console").get("type") == "pty"
    assert devices.find("console/target").get("type") == "serial"
    assert devices.find("disk") is None
    assert devices.find("interface") is None
    assert ET.fromstring(guest.domain_xml(
        "k", "k", "i", 64, 1, "", domain_type="kvm")).get("type") == "kvm"
    lan = ET.fromstring(guest.domain_xml(
        "k", "k", "i", 64, 1, "", bridge="rtmtb-br",
        mac="52:54:00:77:00:10")).find("devices/interface")
    assert lan.get("type") == "bridge"
    assert lan.find("source").get("bridge") == "rtmtb-br"
    assert lan.find("mac").get("address") == "52:54:00:77:00:10"
    assert lan.find("model").get("type") == "virtio"


def test_qemu_argv():
    argv = guest.qemu_argv("/k", "/i", "console=ttyS0 a=b", memory_mib=128,
                           serial="file:/tmp/c")
    assert argv[0] == QEMU
    opt = {argv[i]: argv[i + 1] for i in range(1, len(argv) - 1)
           if argv[i].startswith("-")}
    assert opt["-accel"] == "tcg"
    assert opt["-m"] == "128"
    assert opt["-kernel"] == "/k"
    assert opt["-initrd"] == "/i"
    assert opt["-append"] == "console=ttyS0 a=b"
    assert opt["-serial"] == "file:/tmp/c"
    assert "-nographic" in argv and "-no-reboot" in argv


def test_parse_status():
    assert guest.parse_status(
        "\x1b[2Jrtmig-workload video frames=26 misses=1 "
        "max_lateness_us=12 t=1\r") == (
        "video", {"frames": 26, "misses": 1, "max_lateness_us": 12, "t": 1})
    assert guest.parse_status("rtmig-config video frame=1") is None
    assert guest.parse_status("[    1.2] Run /init as init process") is None


def test_wait_until_running(tmp_path):
    console = tmp_path / "console.log"
    # no file yet, then the boot's lines: only the workload's status counts
    with pytest.raises(guest.GuestBootError, match="after 0.3 s"):
        guest.wait_until_running(console, "uniform", timeout=0.3, poll=0.05)
    console.write_text("rtmig-init: up workload=uniform\n"
                       "rtmig-config uniform mem=4194304\n")
    with pytest.raises(guest.GuestBootError,
                       match="last console line: 'rtmig-config uniform"):
        guest.wait_until_running(console, "uniform", timeout=0.2, poll=0.05)
    assert guest.wait_until_running(console, None, timeout=0.2) < 0.2
    # another workload's status is not this one's
    with console.open("a") as f:
        f.write("rtmig-workload uniformx writes=1 t=1\n")
    with pytest.raises(guest.GuestBootError):
        guest.wait_until_running(console, "uniform", timeout=0.2, poll=0.05)
    with console.open("a") as f:
        f.write("rtmig-workload uniform writes=300 wps=300 t=1\n")
    assert guest.wait_until_running(console, "uniform", timeout=5) < 1
    # a guest that stopped is not waited for until the timeout
    with pytest.raises(guest.GuestBootError, match="stopped"):
        guest.wait_until_running(tmp_path / "other.log", "video",
                                 timeout=30, alive=lambda: False)


def _cpio_names(data):
    # Walk a newc archive: names and modes, checking magic and alignment.
    out, pos = {}, 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        f = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16)
             for i in range(13)]
        mode, size, namesize = f[1], f[6], f[11]
        name = data[pos + 110:pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        body = data[pos:pos + size]
        pos += size
        pos += -pos % 4
        if name == "TRAILER!!!":
            assert pos == len(data)
            return out
        out[name] = (mode, body, (f[9], f[10]))


def test_cpio_newc_layout():
    data = image.cpio_newc([
        ("dev", 0o40755, b"", (0, 0)),
        ("dev/console", 0o20600, b"", (5, 1)),
        ("init", 0o100755, b"#!/bin/sh\n", (0, 0)),
        ("bin/sh", 0o120777, b"busybox", (0, 0)),
    ])
    assert len(data) % 4 == 0
    names = _cpio_names(data)
    assert names["dev/console"] == (0o20600, b"", (5, 1))
    assert names["init"][1] == b"#!/bin/sh\n"
    assert names["bin/sh"] == (0o120777, b"busybox", (0, 0))
    if shutil.which("cpio"):
        listed = subprocess.run(["cpio", "-t", "--quiet"], input=data,
                                capture_output=True, check=True).stdout
        assert sorted(listed.decode().split()) == sorted(names)


def test_find_kernel_error(tmp_path):
    with pytest.raises(image.ImageError, match="linux-image-amd64"):
        image.find_kernel(tmp_path)
    for v in ("6.1.0-9-amd64", "6.1.0-10-amd64"):
        (tmp_path / f"vmlinuz-{v}").write_bytes(b"k")
    assert image.find_kernel(tmp_path).name == "vmlinuz-6.1.0-10-amd64"


def test_ensure_packages_without_root(monkeypatch):
    monkeypatch.setattr(image, "_installed", lambda p: p == "gcc")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(image.ImageError) as e:
        image.ensure_packages(("gcc", "busybox-static", "libc6-dev"))
    assert str(e.value) == (
        "missing Debian packages busybox-static, libc6-dev; as root run: "
        "apt-get install -y busybox-static libc6-dev")
    assert image.ensure_packages(("gcc",)) == []


def _console(path, *lines):
    with open(path, "a") as f:
        f.writelines(line + "\n" for line in lines)


def test_check_after_migration(tmp_path):
    console = tmp_path / "console.log"
    _console(console, "rtmig-init: up workload=uniform",
             "rtmig-workload uniform writes=10 wps=10 t=4 lost=0")
    mark = guest.console_mark(console)
    assert mark[1] == ("uniform", {"writes": 10, "wps": 10, "t": 4,
                                   "lost": 0})
    # t=5 may still be the source's: the check waits for t >= 6
    _console(console, "rtmig-workload uniform writes=20 wps=10 t=5 lost=3")
    with pytest.raises(guest.GuestIntegrityError, match="no status line"):
        guest.check_after_migration(console, mark, timeout=0.3, poll=0.05)
    _console(console, "rtmig-workload uniform writes=30 wps=10 t=6 lost=0")
    check = guest.check_after_migration(console, mark, timeout=1)
    assert (check.ok, check.t, check.lost) == (True, 6, 0)
    assert check.as_dict() == {"workload": "uniform", "t": 6, "lost": 0}


@pytest.mark.parametrize("lines, match", [
    (["rtmig-workload uniform writes=30 wps=10 t=6 lost=7"],
     "lost 7 writes"),
    (["rtmig-workload video frames=9 misses=0 max_lateness_us=0 t=6 "
      "lost=2"], "lost 2 pages"),
    (["[   12.5] general protection fault, probably for non-canonical"],
     "failed during or after the migration"),
    (["rtmig-init: workload uniform exited with status 139"],
     "failed during or after the migration"),
    (["rtmig-workload uniform writes=30 wps=10 t=6"], "without its"),
])
def test_check_after_migration_failures(tmp_path, lines, match):
    console = tmp_path / "console.log"
    _console(console, "rtmig-workload uniform writes=10 wps=10 t=4 lost=0")
    mark = guest.console_mark(console)
    _console(console, *lines)
    with pytest.raises(guest.GuestIntegrityError, match=match):
        guest.check_after_migration(console, mark, timeout=0.3, poll=0.05)


def test_check_after_migration_sees_a_failure_before_the_mark(tmp_path):
    # an oops right after the switch-over, before the migration call
    # returned, and the workload running on: still a failure
    console = tmp_path / "console.log"
    _console(console, "rtmig-workload uniform writes=10 wps=10 t=4 lost=0")
    started = guest.console_mark(console)
    _console(console, "[  9.1] general protection fault: 0000 [#1] SMP",
             "rtmig-workload uniform writes=20 wps=10 t=5 lost=0")
    ended = guest.console_mark(console)
    _console(console, "rtmig-workload uniform writes=40 wps=10 t=7 lost=0")
    assert guest.check_after_migration(console, ended, timeout=1).ok
    with pytest.raises(guest.GuestIntegrityError, match="protection fault"):
        guest.check_after_migration(console, ended, timeout=1,
                                    since=started)


def test_check_after_migration_ignores_cut_lines_and_rotation(tmp_path):
    console = tmp_path / "console.log"
    _console(console, "rtmig-workload uniform writes=10 wps=10 t=4 lost=0",
             "rtmig-workload uniform writes=11 wps=10 t=5[ 3.2] lost=0")
    mark = guest.console_mark(console)
    assert mark[1][1]["t"] == 4             # the cut line is no reading
    _console(console, "rtmig-workload uniform writes=30 wps=10 t=6 lost=0[")
    with pytest.raises(guest.GuestIntegrityError, match="no status line"):
        guest.check_after_migration(console, mark, timeout=0.3, poll=0.05)
    # virtlogd rotated the log: the new one is read from its start
    console.write_text("rtmig-workload uniform writes=50 wps=10 t=8 "
                       "lost=0\n")
    assert guest.check_after_migration(console, mark, timeout=1).t == 8


def test_check_after_migration_of_idle_and_silent_guests(tmp_path):
    idle = tmp_path / "idle.log"
    _console(idle, "rtmig-init: up workload=none memavailable_kib=1")
    assert guest.check_after_migration(idle, guest.console_mark(idle)) \
        is None
    silent = tmp_path / "silent.log"
    _console(silent, "rtmig-init: up workload=uniform")
    with pytest.raises(guest.GuestIntegrityError, match="nothing to check"):
        guest.check_after_migration(silent, guest.console_mark(silent))


# ---- the workload programs, compiled and run on the host ----------------

def _need(packages):
    try:
        image.ensure_packages(packages)
    except image.ImageError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def host_binaries(tmp_path_factory):
    _need(("gcc", "libc6-dev"))
    out = tmp_path_factory.mktemp("workloads")
    # -Werror: the programs must stay warning-free with -Wall -Wextra.
    return image.compile_workloads(out, cflags=image.CFLAGS + ("-Werror",))


@pytest.mark.parametrize("workload, params, key, per_second", [
    ("video", "rtmig.width=320 rtmig.height=240 rtmig.ring=3", "frames",
     25),
    ("uniform", "rtmig.mem=4M rtmig.rate=20000", "writes", 20000),
    ("zipf", "rtmig.mem=4M rtmig.rate=20000 rtmig.s=1.1", "writes", 20000),
    ("ring", "rtmig.mem=1M rtmig.rate=5000", "records", 5000),
], ids=["video", "uniform", "zipf", "ring"])
def test_workload_runs_on_host(host_binaries, workload, params, key,
                               per_second):
    res = subprocess.run(
        [str(host_binaries[workload]),
         f"rtmig.workload={workload} {params} rtmig.duration=2 rtmig.zz=1"],
        capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "unknown parameter rtmig.zz=1" in res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith(f"rtmig-config {workload} ")
    status = [guest.parse_status(line) for line in lines[1:]]
    assert [s[0] for s in status] == [workload, workload]
    first, second = (s[1] for s in status)
    assert (first["t"], second["t"]) == (1, 2)
    assert second[key] - first[key] == pytest.approx(per_second, rel=0.2)
    if workload == "zipf":
        # The hottest of the 1024 pages gets 1 / sum(r^-1.1) of the writes.
        share = float(lines[0].split("hottest_share=")[1].split()[0])
        expected = 1 / sum(r ** -1.1 for r in range(1, 1025))
        assert share == pytest.approx(expected, rel=1e-4)


def _need_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (a network namespace of its own)")


# In a network namespace of the test's own (only lo): a frame receiver
# and the video program sending to it.
_STREAM_ON_HOST = """
import subprocess, sys
from rtmig_nova.testbed import traffic
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
with traffic.FrameReceiver([], sys.argv[2], 10, port=5004) as rx:
    res = subprocess.run([sys.argv[1], sys.argv[3]], capture_output=True,
                         text=True, timeout=30)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
"""


def test_video_streams_its_frames(host_binaries, tmp_path):
    _need_root()
    out = tmp_path / "frames.bin"
    params = ("rtmig.width=320 rtmig.height=240 rtmig.ring=3 "
              "rtmig.dest=127.0.0.1 rtmig.port=5004 rtmig.stream=10000 "
              "rtmig.packet=1000 rtmig.duration=2")
    res = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", _STREAM_ON_HOST,
         str(host_binaries["video"]), str(out), params],
        capture_output=True, text=True, timeout=60,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))))
    assert res.returncode == 0, res.stderr
    assert "rtmig-config video-stream dest=127.0.0.1 port=5004 " \
        "datagrams=10 packet=1000" in res.stdout
    last = guest.parse_status(res.stdout.splitlines()[-1])[1]
    rec = traffic.read_records(out)
    assert last["dropped"] == 0
    assert rec.size == last["sent"] == 10 * last["frames"]
    frames, done = playout.frame_completion(
        rec["frame"], rec["index"], rec["count"], rec["arrival_ns"] / 1e9)
    assert list(frames) == list(range(last["frames"]))
    assert not np.isnan(done).any()
    assert set(rec["count"]) == {10}
    # released every 40 ms of the guest's clock, received within 40 ms
    release = np.unique(rec["release_ns"]) / 1e9
    assert np.diff(release) == pytest.approx(0.04, abs=1e-6)
    assert (rec["arrival_ns"] >= rec["sent_ns"]).all()
    assert np.median(rec["arrival_ns"] - rec["sent_ns"]) < 40e6
    po = playout.playout(frames, done, 0.04, 0.02)
    assert po.misses <= 2 and po.lost == 0


def test_burn_keeps_its_threads_busy(host_binaries):
    res = subprocess.run([str(host_binaries["burn"]),
                          "rtmig.threads=2 rtmig.duration=2"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "rtmig-config burn threads=2"
    first, second = (guest.parse_status(line)[1] for line in lines[1:])
    assert (first["t"], second["t"]) == (1, 2)
    assert second["loops"] == first["loops"] + second["lps"]
    assert first["lps"] > 0 and second["lps"] > 0
    for bad in ("rtmig.threads=0", "rtmig.threads=65"):
        res = subprocess.run([str(host_binaries["burn"]), bad],
                             capture_output=True, text=True, timeout=10)
        assert res.returncode != 0 and "rtmig.threads" in res.stderr


def test_video_rejects_a_bad_stream(host_binaries):
    for params, match in (("rtmig.dest=10.77.0.300", "not an IPv4"),
                          ("rtmig.dest=10.0.0.1 rtmig.packet=8",
                           "rtmig.packet must be")):
        res = subprocess.run([str(host_binaries["video"]), params],
                             capture_output=True, text=True, timeout=10)
        assert res.returncode != 0 and match in res.stderr


def _status_lines(proc, count, timeout=20):
    """The next ``count`` status lines of a running workload."""
    out, end = [], time.monotonic() + timeout
    while len(out) < count:
        assert time.monotonic() < end, "no status line in time"
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        parsed = guest.parse_status(line)
        if parsed:
            out.append(parsed[1])
    return out


@pytest.mark.parametrize("workload, params, region, size, unit_count", [
    ("uniform", "rtmig.mem=1M rtmig.rate=20000", "base", 1 << 20, "writes"),
    ("zipf", "rtmig.mem=1M rtmig.rate=20000 rtmig.s=0.5", "base", 1 << 20,
     "writes"),
    ("video", "rtmig.frame=64K rtmig.ring=4 rtmig.meta=8K", "base", 4 << 16,
     "frames"),
    ("ring", "rtmig.mem=256K rtmig.rate=200 rtmig.hot=0", "base", 256 << 10,
     "records"),
    # only its counter pages go back: seen before the next batch
    ("ring", "rtmig.mem=256K rtmig.rate=200 rtmig.hot=2", "hot_base",
     2 << 12, "counters"),
], ids=["uniform", "zipf", "video", "ring", "ring-counters"])
def test_integrity_check_sees_a_stale_memory_image(host_binaries, workload,
                                                   params, region, size,
                                                   unit_count):
    # What a migration that loses writes does to a guest: some of its pages
    # go back to an older content.  Put a snapshot of the working set back
    # under the running program (through /proc/PID/mem, as root) and its
    # own check must report the loss; before that, and with check=0, not.
    if os.geteuid() != 0:
        pytest.skip("writing another process's memory needs root")
    proc = subprocess.Popen(
        [str(host_binaries[workload]),
         f"rtmig.workload={workload} {params} rtmig.duration=8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        config = proc.stdout.readline()
        base = int(config.split(f" {region}=")[1].split()[0], 16)
        first, = _status_lines(proc, 1)
        assert first["lost"] == 0
        with open(f"/proc/{proc.pid}/mem", "r+b", buffering=0) as mem:
            mem.seek(base)
            snapshot = mem.read(size)
            second, = _status_lines(proc, 1)
            assert second["lost"] == 0
            mem.seek(base)
            mem.write(snapshot)             # a second's writes undone
        after = _status_lines(proc, 2)
    finally:
        proc.kill()
        proc.wait()
    lost = after[-1]["lost"]
    assert lost > 0, after
    assert after[0]["lost"] == lost         # counted once, and kept
    if unit_count == "writes":
        # exactly what was undone, at most what was written meanwhile
        assert lost <= after[-1]["writes"] - first["writes"]
    elif unit_count == "counters":
        assert lost <= 2                    # each counter page once
    else:
        assert lost >= 1                    # pages found stale


def test_integrity_check_can_be_turned_off(host_binaries):
    res = subprocess.run(
        [str(host_binaries["uniform"]),
         "rtmig.mem=1M rtmig.rate=1000 rtmig.duration=1 rtmig.check=0"],
        capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    (name, fields), = [guest.parse_status(line)
                       for line in res.stdout.splitlines()[1:]]
    assert "lost" not in fields and fields["t"] == 1


def test_workload_rejects_bad_value(host_binaries):
    res = subprocess.run([str(host_binaries["uniform"]), "rtmig.mem=8X"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2
    assert "rtmig.mem=8X: bad size suffix" in res.stderr


# ---- the image, booted under QEMU (TCG) ---------------------------------

@pytest.fixture(scope="module")
def boot_files(request, tmp_path_factory):
    _need(image.ALL_PACKAGES)
    if shutil.which(QEMU) is None:
        pytest.skip(f"{QEMU} not found: apt-get install -y qemu-system-x86")
    # Reuse builds across runs when pytest's cache is on (it is off in CI:
    # -p no:cacheprovider leaves no ``config.cache``).
    cache = getattr(request.config, "cache", None)
    workdir = (cache.mkdir("rtmig-testbed-image") if cache is not None
               else tmp_path_factory.mktemp("image"))
    return image.find_kernel(), image.build_initramfs(workdir)


def test_initramfs_is_cached_and_complete(boot_files):
    _, initrd = boot_files
    t = time.monotonic()
    assert image.build_initramfs(initrd.parent) == initrd
    assert time.monotonic() - t < 5
    names = _cpio_names(gzip.decompress(initrd.read_bytes()))
    for name in ("init", "dev/console", "bin/busybox", "bin/sh",
                 "bin/mount", "bin/poweroff", "bin/rtmig-video",
                 "bin/rtmig-uniform", "bin/rtmig-zipf", "bin/rtmig-burn"):
        assert name in names
    assert names["init"][1] == image.INIT_SCRIPT.encode()
    # the network modules of the kernel it boots, in load order
    modules = image.net_modules(image.find_kernel())
    assert "drivers/net/virtio_net" in modules
    order = names["lib/modules/order"][1].decode().split()
    assert order == [m for m in image.NET_MODULES if m in modules]
    for m in order:
        assert names[f"lib/modules/{m}.ko"][1][:4] == b"\x7fELF"


class Guest:
    """A QEMU guest whose serial console is QEMU's stdout (a pipe)."""

    def __init__(self, kernel, initrd, cmdline):
        self.console = ""
        self.proc = subprocess.Popen(
            guest.qemu_argv(kernel, initrd, cmdline, memory_mib=128),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)
        self._partial = ""

    def lines(self, timeout):
        """Yield console lines until ``timeout`` seconds have passed or
        QEMU has exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.sel.select(max(0.0, deadline - time.monotonic())):
                continue
            chunk = self.proc.stdout.read()
            if chunk is None:                   # nothing after all
                continue
            if not chunk:                       # EOF: QEMU has exited
                self.proc.wait(10)
                return
            text = chunk.decode(errors="replace")
            self.console += text
            *done, self._partial = (self._partial + text).split("\n")
            yield from done

    def tail(self):
        return (f"console (last 2000 chars):\n{self.console[-2000:]}\n"
                f"QEMU exit status: {self.proc.poll()}")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.sel.close()
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def boot(boot_files):
    guests = []

    def start(cmdline):
        g = Guest(*boot_files, cmdline)
        guests.append(g)
        return g

    yield start
    for g in guests:
        g.close()


@pytest.mark.parametrize("workload", sorted(BOOT_CASES))
def test_guest_boots_and_runs_workload(boot, workload):
    params = BOOT_CASES[workload]
    g = boot(guest.kernel_cmdline(workload, **params))
    start, booted, config, status = time.monotonic(), None, None, []
    for line in g.lines(BOOT_TIMEOUT):
        if f"rtmig-config {workload} " in line:
            config, booted = line, time.monotonic() - start
        parsed = guest.parse_status(line)
        if parsed:
            assert parsed[0] == workload, g.tail()
            status.append(parsed[1])
            if len(status) == 2:
                break
    assert len(status) == 2, f"no two status lines in {BOOT_TIMEOUT}s; " \
        + g.tail()
    print(f"{workload}: workload up {booted:.1f}s after QEMU started")
    first, second = status
    assert second["t"] == first["t"] + 1
    assert first["lost"] == second["lost"] == 0
    if workload == "video":
        assert "frame=460800 ring=4" in config
        assert second["frames"] > first["frames"] > 0
        assert second["misses"] >= first["misses"] >= 0
        assert second["max_lateness_us"] >= 0
    elif workload == "ring":
        assert "slots=16384" in config
        assert second["records"] > first["records"] > 0
        assert second["rps"] == pytest.approx(params["rate"], rel=0.1)
    else:
        assert "pages=2048" in config
        assert second["writes"] > first["writes"] > 0
        assert second["wps"] == pytest.approx(params["rate"], rel=0.1)


def test_idle_guest(boot):
    g = boot(guest.kernel_cmdline())
    for line in g.lines(BOOT_TIMEOUT):
        if "rtmig-init: up workload=none" in line:
            break
    else:
        pytest.fail("the idle guest did not come up; " + g.tail())
    # A 128 MiB guest has about 57 MiB left for a workload.
    avail = int(line.split("memavailable_kib=")[1].split()[0])
    assert 16 << 10 < avail < 128 << 10
    assert g.proc.poll() is None


def test_guest_powers_off_when_workload_ends(boot):
    g = boot(guest.kernel_cmdline("uniform", "1M", rate=100, duration=1))
    list(g.lines(BOOT_TIMEOUT))
    assert "rtmig-init: workload uniform exited with status 0" in g.console
    assert g.proc.returncode == 0, g.tail()
