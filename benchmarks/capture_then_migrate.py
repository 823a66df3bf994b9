#!/usr/bin/env python3
"""How many pages a captured profile says are dirty after a migration's
first pass, against what QEMU finds, on the same guest (root; real QEMU;
a few minutes; run on demand, not in CI).

A plain QEMU (TCG, loopback, no libvirt) boots the testbed guest with a
workload, ``rtmig profile capture``'s probe (``capture_qmp``) records its
profile, then the same guest is live-migrated to a second QEMU on
127.0.0.1 at the given rate limit with a 50 ms downtime limit, QEMU's
``migration_bitmap_sync_end`` trace event giving the pages found dirty by
the first sync after the first pass and its time.  Printed: that count,
the profile's ``dirty_pages(first pass)``, and the same from each page's
own maximum-likelihood rate (the profile without model.shrinkage).

    python benchmarks/capture_then_migrate.py uniform 16
    python benchmarks/capture_then_migrate.py zipf 32 --runs 3

docs/model.md ("Each page's rate given all pages") quotes its numbers.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir))

from rtmig_nova.capture import probe  # noqa: E402
from rtmig_nova.model import profile as profile_mod  # noqa: E402
from rtmig_nova.model import shrinkage  # noqa: E402
from rtmig_nova.testbed import guest, image  # noqa: E402
from rtmig_nova.testbed import validation  # noqa: E402

MIB = 2 ** 20
MIGRATION_TIMEOUT = 120.0       # s
SYNC_EVENT = "migration_bitmap_sync_end"


def _qemu(workdir, name, kernel, initrd, cmdline, memory_mib,
          incoming=None):
    extra = ["-qmp", f"unix:{workdir}/{name}.qmp,server=on,wait=off",
             "-msg", "timestamp=on", "-trace", f"file={workdir}/{name}.trace"]
    if incoming:
        extra += ["-incoming", incoming]
    return subprocess.Popen(guest.qemu_argv(
        kernel, initrd, cmdline, memory_mib=memory_mib,
        serial=f"file:{workdir}/{name}.con", extra=extra))


def _connect(path, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return probe.QMPMonitor(path)
        except probe.ProbeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _first_sync(trace, offset):
    """(seconds from the migration's setup sync to the next sync, pages
    that one found dirty), from QEMU's log after byte ``offset``."""
    times = []
    with open(trace, errors="replace") as f:
        f.seek(offset)
        for line in f:
            head, _, rest = line.partition(":")
            if rest.startswith(SYNC_EVENT) and "@" in head:
                times.append((float(head.split("@")[1]),
                              int(rest.split()[-1])))
    (t0, _), (t1, dirty) = times[0], times[1]
    return t1 - t0, dirty


def one_run(workload, bandwidth, capture_s, kernel, initrd, port):
    """One guest: capture, then migrate.  Returns a dict of the counts."""
    seen = []
    fit = profile_mod.DirtyProfile.from_observations.__func__

    def keep(cls, *args, **kwargs):         # the probe's page sets, kept
        seen.append((args, kwargs))
        return fit(cls, *args, **kwargs)
    profile_mod.DirtyProfile.from_observations = classmethod(keep)
    workdir = tempfile.mkdtemp(prefix="rtmig-capmig-")
    cmdline = workload.cmdline()
    src = _qemu(workdir, "src", kernel, initrd, cmdline,
                workload.memory_mib)
    dst = None
    try:
        guest.wait_until_running(f"{workdir}/src.con", workload.program,
                                 guest.BOOT_TIMEOUT)
        time.sleep(3)
        cap = probe.capture_qmp(f"{workdir}/src.qmp", f"{workdir}/src.trace",
                                duration=capture_s,
                                bandwidth=validation.DEFAULT_PROBE_BANDWIDTH,
                                first_pass_bandwidth=validation.
                                PROBE_FIRST_PASS_BANDWIDTH)
        args, kwargs = seen[-1]
        saved, shrinkage.MIN_PAGES = shrinkage.MIN_PAGES, float("inf")
        try:
            own = fit(profile_mod.DirtyProfile, *args, **kwargs)
        finally:
            shrinkage.MIN_PAGES = saved
        dst = _qemu(workdir, "dst", kernel, initrd, cmdline,
                    workload.memory_mib, incoming=f"tcp:127.0.0.1:{port}")
        _connect(f"{workdir}/dst.qmp").close()     # listening by now
        qmp = _connect(f"{workdir}/src.qmp")
        try:
            qmp.cmd("trace-event-set-state", name=SYNC_EVENT, enable=True)
            qmp.cmd("migrate-set-capabilities", capabilities=[
                {"capability": "pause-before-switchover", "state": False}])
            qmp.cmd("migrate-set-parameters", **{
                "max-bandwidth": int(bandwidth), "downtime-limit": 50})
            offset = os.path.getsize(f"{workdir}/src.trace")
            qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
            start = time.monotonic()
            while True:
                status = qmp.cmd("query-migrate")
                if status.get("status") in ("completed", "failed"):
                    break
                if time.monotonic() - start > MIGRATION_TIMEOUT:
                    qmp.cmd("migrate_cancel")
                    raise RuntimeError("the migration did not finish")
                time.sleep(0.05)
        finally:
            qmp.close()
        if status.get("status") != "completed":
            raise RuntimeError(f"the migration failed: {status}")
        time.sleep(0.5)
        first_pass, found = _first_sync(f"{workdir}/src.trace", offset)
        return {"status": status.get("status"),
                "total_time_s": status.get("total-time", 0) / 1000,
                "first_pass_s": first_pass, "qemu_found": found,
                "profile": cap.profile.dirty_pages(first_pass),
                "own_fits": own.dirty_pages(first_pass)}
    finally:
        profile_mod.DirtyProfile.from_observations = classmethod(fit)
        for proc in (src, dst):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    workloads = {w.label: w for w in validation.DEFAULT_WORKLOADS}
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workload", choices=sorted(workloads))
    ap.add_argument("mib_per_s", type=int, help="rate limit, MiB/s (1-1024)")
    ap.add_argument("--runs", type=int, default=1, help="guests (1-20)")
    ap.add_argument("--capture-s", type=float, default=20.0,
                    help="probe seconds (5-120)")
    a = ap.parse_args()
    if not (1 <= a.mib_per_s <= 1024 and 1 <= a.runs <= 20 and
            5 <= a.capture_s <= 120):
        ap.error("out of range: rate 1-1024 MiB/s, runs 1-20, "
                 "capture 5-120 s")
    image.ensure_packages(image.ALL_PACKAGES)
    kernel = image.find_kernel()
    imgdir = tempfile.mkdtemp(prefix="rtmig-img-")
    results = []
    try:
        initrd = image.build_initramfs(imgdir)
        for i in range(a.runs):
            r = one_run(workloads[a.workload], a.mib_per_s * MIB,
                        a.capture_s, kernel, initrd,
                        47000 + os.getpid() % 1000 + i)
            results.append(r)
            print(json.dumps(r), flush=True)
    finally:
        shutil.rmtree(imgdir, ignore_errors=True)
    rel = [r["profile"] / r["qemu_found"] - 1 for r in results]
    own = [r["own_fits"] / r["qemu_found"] - 1 for r in results]
    print(json.dumps({"workload": a.workload, "MiB_s": a.mib_per_s,
                      "runs": a.runs,
                      "profile_error_median": statistics.median(rel),
                      "own_fits_error_median": statistics.median(own)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
