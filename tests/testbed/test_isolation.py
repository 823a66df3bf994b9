"""One run of the isolation experiment's rtmig scenario on the testbed's
LAN (issue 11's bounded system test): the RT video guest's profile is
captured, its migration planned for the deadline and downtime bound,
its CPU and the link reserved with the functions the Nova driver calls,
and it is migrated beside a CPU-burning neighbour and a bulk TCP flow.

Needs root, host A's libvirtd and QEMU; takes about two minutes."""

import os

import pytest

from rtmig_nova.testbed import hosts
from rtmig_nova.testbed import isolation
from tests.testbed.test_hosts import _why_skip

pytest.importorskip("libvirt", reason="needs libvirt-python")

pytestmark = [pytest.mark.skipif(_why_skip() is not None,
                                 reason=_why_skip() or ""),
              pytest.mark.timeout(290)]


def test_an_rtmig_run_keeps_the_stream_within_its_plan(
        tmp_path, guest_boot_files):
    setup = isolation.Setup(capture_s=12.0, settle_s=3.0, after_s=3.0)
    lines = []
    bed = hosts.up(tmp_path, rate_bytes_per_s=setup.link_rate, lan=True)
    try:
        profile = isolation.capture(bed, guest_boot_files, setup,
                                    log=lines.append)
        row = isolation.run(bed, guest_boot_files, "rtmig", setup,
                            out_dir=str(tmp_path), log=lines.append,
                            profile=profile)
    finally:
        bed.down()
    print("\n".join(lines))
    print({k: row[k] for k in isolation.FIELDS})
    assert hosts.leftovers(tmp_path) == []
    assert os.listdir(tmp_path / "reservations") == []
    # everything the plan reserves was reserved, in force before the
    # migration started (the two during it as their threads appeared)
    assert row["reserved"][:3] == ["link", "vcpu on A", "migration"]
    assert sorted(row["reserved"][3:]) == ["migration thread", "vcpu on B"]
    assert row["error"] == "" and row["integrity_ok"] is True
    # the plan's limits were the migration's
    assert row["bandwidth_limit_bytes_per_s"] <= \
        isolation.migration_link(setup, hosts.qemu_version())
    assert row["downtime_limit_ms"] <= setup.max_downtime_s * 1e3
    # the deadline is met; the stream kept within the plan
    assert row["total_time_s"] <= setup.deadline_s
    assert row["frames"] > (setup.settle_s + row["total_time_s"]) / \
        setup.period_s * 0.9
    assert row["lost_frames"] == 0
    # the guest's pause: with QEMU's socket capped and paced, and the
    # plan counting what it can still hold, within twice the bound (95-165
    # ms against 100 ms in the experiment; 135-474 ms, median 219, before
    # the socket was capped).  The viewer's freeze is longer still: on TCG
    # the guest catches up on B under its 40% vCPU reservation (gaps
    # 187-346 ms).
    assert row["downtime_ms"] <= 2 * setup.max_downtime_s * 1e3
    # the neighbour and the bulk flow cost the stream no deadline: its
    # misses are the frames of the switch-over's freeze, no more.
    assert row["misses"] <= row["max_gap_ms"] / (setup.period_s * 1e3) + 1
    assert row["misses"] <= 0.01 * row["frames"]
    # libvirt saw the guest paused, then resumed on B, within the
    # viewer's freeze (A's event can arrive tens of ms after QEMU stopped:
    # 94-161 ms against QEMU's 104-163 in six runs); the next frame
    # followed
    assert 0 < row["paused_ms"] <= row["max_gap_ms"]
    assert 0 <= row["resume_to_frame_ms"] <= row["max_gap_ms"]
    # the guest's vCPUs were sampled running on A, then on B
    cpu = row["vcpu_cpu"]
    assert cpu[0][1] is not None and cpu[-1][2] is not None
    assert cpu[-1][2] > 0
