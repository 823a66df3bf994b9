"""System test: the model against one real live migration on the testbed.

Builds the guest image, brings up the two libvirt hosts, calibrates the
host's fixed costs on an idle guest, captures the profile of a guest
running the uniform workload with probe migrations, predicts its migration
at 8 MiB/s, migrates three fresh guests with the same workload from A to B
for real and compares.  Needs root, QEMU and libvirtd (CI has them); about
three minutes.  Everything is torn down in a ``finally``."""

import os
import shutil
import subprocess
from statistics import median

import numpy as np
import pytest

from rtmig_nova.testbed import hosts
from rtmig_nova.testbed import validation as v

pytest.importorskip("libvirt", reason="needs libvirt-python")


def _why_skip():
    if os.geteuid() != 0:
        return "needs root: network namespaces and a second libvirtd"
    for tool in ("ip", "tc", "unshare", "libvirtd", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            return "needs %s on PATH" % tool
    if subprocess.run(["pgrep", "-x", "libvirtd"],
                      capture_output=True).returncode != 0:
        return "host A's libvirtd is not running (virtlogd -d; libvirtd -d)"
    return None


pytestmark = [pytest.mark.skipif(_why_skip() is not None,
                                 reason=_why_skip() or ""),
              pytest.mark.timeout(420)]

BANDWIDTH = 8 * v.MIB                 # bytes/s
DOWNTIME_LIMIT = 0.05                 # s
# Migrations of twins of the captured guest: the targets are on the median
# error (one in a dozen downtimes here is twice the others).
MIGRATIONS = 3


def test_prediction_matches_real_migrations(tmp_path, guest_boot_files):
    uniform = {w.label: w for w in v.DEFAULT_WORKLOADS}["uniform"]
    bed = hosts.up(tmp_path / "testbed")
    try:
        # A discarded warm-up, then the median of three idle migrations'
        # downtimes: one migration alone read 27-31 ms on fresh hosts
        # where the next ones read 9-17 ms (issue #12).
        calibration = v.calibrate(bed, guest_boot_files, repetitions=3)
        settings = v.model_settings(calibration)
        assert 0 <= settings["setup_time"] < 2
        assert 0 < settings["switchover_time"] < 0.2
        cap = v.capture_profile(bed, guest_boot_files, uniform)
        predicted, timeout = v.predict_all(cap.profile, BANDWIDTH,
                                           DOWNTIME_LIMIT, **settings)
        measured = [v.migrate_measured(bed, guest_boot_files, uniform,
                                       BANDWIDTH, DOWNTIME_LIMIT, timeout)
                    for _ in range(MIGRATIONS)]
    finally:
        bed.down()
    assert hosts.leftovers(tmp_path / "testbed") == []

    prof = cap.profile
    p = predicted["precopy"]
    print("calibration:", {k: val for k, val in calibration.items()
                           if k not in ("runs", "warmup")})
    print("warm-up (discarded):", calibration["warmup"])
    print("calibration downtimes:",
          [r["switchover_time_s"] for r in calibration["runs"]])
    print("profile: %d active, %d zero pages, %.0f writes/s, %d rounds"
          % (prof.active_pages, prof.zero_pages, prof.write_rate,
             cap.rounds))
    print("predicted:", p)
    for m in measured:
        print("measured:", m)
    # The capture saw the workload: 8 MiB = 2048 pages at 1000 writes/s,
    # and most of the rest of the guest's memory is zero.  The pages below
    # 10 writes/s are the working set's (0.5/s each) and a few warm kernel
    # pages; the kernel's and the workload's own pages written at each of
    # its wake-ups (every 5 ms), about 40, are dirty in every 0.2 s round
    # and get the rate such intervals resolve (about 20/s each on QEMU
    # 10.0.2, 830-870 writes/s in all beside 1,125-1,145 below 10/s;
    # QEMU 7.2 under TCG lost the writes to them: docs/testbed.md).
    assert 2048 <= prof.active_pages <= 4096
    slow = prof.rates < 10
    working_set = float(np.dot(prof.rates[slow], prof.counts[slow]))
    print("write rate below 10/s: %.0f, %d pages above"
          % (working_set, prof.counts[~slow].sum()))
    assert 900 <= working_set <= 1300
    assert prof.counts[~slow].sum() <= 64
    assert prof.zero_pages > 8192
    assert p["converges"] > 0.99
    assert None not in measured, "a migration timed out"
    # Total time within 10% of the median prediction.
    t_err = median(abs(p["total_time_s"]["p50"] - m["total_time_s"])
                   / m["total_time_s"] for m in measured)
    assert t_err <= 0.10
    d_abs = median(abs(p["downtime_s"]["p50"] - m["downtime_s"])
                   for m in measured)
    d_rel = median(abs(p["downtime_s"]["p50"] - m["downtime_s"])
                   / m["downtime_s"] for m in measured)
    # Downtime.  On QEMU 7.2 under TCG (it misses dirty pages: issue #10)
    # the median error over three migrations read 7-12 ms (32-42%) in two
    # of three fresh runs with a sound calibration (12-16 ms), so the old
    # 5 ms / 20% failed two runs in three.  What the planner relies on must
    # hold: the median downtime within the limit plus the switch-over (the
    # limit's own bound; one migration in three read 78 ms against a 50 ms
    # limit while the shared host was busy), and the model within half the
    # limit.
    print("downtime: median error %.1f ms (%.0f%%)"
          % (d_abs * 1e3, d_rel * 100))
    downtimes = [m["downtime_s"] for m in measured]
    assert median(downtimes) <= DOWNTIME_LIMIT * 1.15 + \
        settings["switchover_time"], downtimes
    assert d_abs <= DOWNTIME_LIMIT / 2
    # And the bytes, which the model gets from the same rounds.
    b_err = median(abs(p["bytes_sent"]["p50"] - m["transferred_bytes"])
                   / m["transferred_bytes"] for m in measured)
    assert b_err <= 0.10
    # The migration thread's CPU was measured.
    for m in measured:
        assert m["cpu_per_page_s"] is not None and \
            0 < m["cpu_per_page_s"] < 1e-4
