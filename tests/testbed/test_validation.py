"""System test: the model against one real live migration on the testbed.

Builds the guest image, brings up the two libvirt hosts, calibrates the
host's fixed costs on an idle guest, captures the profile of a guest
running the uniform workload with probe migrations, predicts its migration
at 8 MiB/s, migrates a fresh guest with the same workload from A to B for
real and compares.  Needs root, QEMU and libvirtd (CI has them); about two
minutes.  Everything is torn down in a ``finally``."""

import os
import shutil
import subprocess

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
              pytest.mark.timeout(300)]

BANDWIDTH = 8 * v.MIB                 # bytes/s
DOWNTIME_LIMIT = 0.05                 # s


def test_prediction_matches_a_real_migration(tmp_path, guest_boot_files):
    uniform = {w.label: w for w in v.DEFAULT_WORKLOADS}["uniform"]
    bed = hosts.up(tmp_path / "testbed")
    try:
        calibration = v.calibrate(bed, guest_boot_files, repetitions=1)
        settings = v.model_settings(calibration)
        assert 0 <= settings["setup_time"] < 2
        assert 0 < settings["switchover_time"] < 0.2
        res = v.run_one(bed, guest_boot_files, uniform, BANDWIDTH,
                        DOWNTIME_LIMIT, settings=settings)
    finally:
        bed.down()
    assert hosts.leftovers(tmp_path / "testbed") == []

    print("calibration:", {k: val for k, val in calibration.items()
                           if k != "runs"})
    print("profile:", res.profile_summary)
    print("measured:", res.measured)
    print("predicted:", res.predicted["precopy"])
    assert not res.timed_out and res.measured is not None
    m, p = res.measured, res.predicted["precopy"]
    # The capture saw the workload: 8 MiB = 2048 pages at 1000 writes/s,
    # and most of the rest of the guest's memory is zero.
    assert 2048 <= res.profile_summary["active_pages"] <= 4096
    assert 900 <= res.profile_summary["write_rate_per_s"] <= 1300
    assert res.profile_summary["zero_pages"] > 8192
    assert p["converges"] > 0.99
    # The tolerance: total time within 10%, downtime within 20% or
    # 5 ms of the median prediction.
    assert abs(p["total_time_s"]["p50"] - m["total_time_s"]) \
        <= 0.10 * m["total_time_s"]
    d_err = abs(p["downtime_s"]["p50"] - m["downtime_s"])
    assert d_err <= max(0.005, 0.2 * m["downtime_s"])
    # And the bytes, which the model gets from the same rounds.
    assert abs(p["bytes_sent"]["p50"] - m["transferred_bytes"]) \
        <= 0.10 * m["transferred_bytes"]
    # The migration thread's CPU was measured.
    assert m["cpu_per_page_s"] is not None and \
        0 < m["cpu_per_page_s"] < 1e-4
