"""Guests on the testbed's LAN (``hosts.up(lan=True)``): a video guest on
host A streams its frames to the client namespace across the shaped veth,
is live-migrated to host B and streams on from there.

Needs root, host A's libvirtd and QEMU; takes about a minute."""

import os
import time

import numpy as np
import pytest

from rtmig_nova.testbed import guest
from rtmig_nova.testbed import hosts
from rtmig_nova.testbed import playout
from rtmig_nova.testbed import traffic
from tests.testbed.test_hosts import _tc_bytes
from tests.testbed.test_hosts import _why_skip

pytest.importorskip("libvirt", reason="needs libvirt-python")

pytestmark = [pytest.mark.skipif(_why_skip() is not None,
                                 reason=_why_skip() or ""),
              pytest.mark.timeout(240)]

MIB = 1 << 20
PERIOD_S = 0.04


def _wait_for_frames(rx, count, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if np.unique(rx.records()["frame"]).size >= count:
            return
        time.sleep(0.2)
    raise AssertionError("fewer than %d frames reached the client in %ss"
                         % (count, timeout))


def test_a_video_stream_follows_its_guest_to_host_b(
        tmp_path, guest_boot_files):
    console = str(tmp_path / "console.log")
    address = hosts.GUEST_IPS[0]
    cmdline = guest.kernel_cmdline(
        "video", address=address + "/24", width=320, height=240, ring=8,
        dest=hosts.IP_CLIENT, port=traffic.FRAME_PORT, extra=["panic=0"])
    bed = hosts.up(tmp_path, rate_bytes_per_s=64 * MIB, lan=True)
    try:
        shaped_at_start = _tc_bytes("1:10")
        rx = traffic.FrameReceiver(hosts.in_client(), tmp_path / "rx.bin",
                                   duration_s=150)
        name = bed.start_guest(*guest_boot_files, cmdline, memory_mib=128,
                               console_log=console, address=address)
        guest.wait_until_running(console, "video")
        _wait_for_frames(rx, 50, 30)
        read_at = time.monotonic()
        shaped_before = _tc_bytes("1:10")
        start = time.monotonic()
        stats = bed.migrate(name, bandwidth_bytes_per_s=32 * MIB,
                            downtime_limit_s=0.05)
        end = time.monotonic()
        time.sleep(3)
        rx.stop()
        records = rx.records()
    finally:
        bed.down()
    assert hosts.leftovers(tmp_path) == []
    assert stats["guest_check"] is not None and stats["guest_check"].ok
    arrival = records["arrival_ns"] / 1e9
    frames, done = playout.frame_completion(
        records["frame"], records["index"], records["count"], arrival)
    # the stream went through A's bridge and the shaped veth before the
    # migration: the veth's class counted at least its datagrams' payload
    # (1200 bytes each) ...
    assert shaped_before - shaped_at_start >= \
        1200 * (arrival < read_at).sum()
    # (the 50 frames waited for, 14 datagrams each, may be all there is)
    assert (arrival < start).sum() >= 50 * 14
    # ... and comes from B after it: frames released after the switch-over
    after = frames[done > end + 1.0]
    assert after.size >= 40, "too few frames after the migration"
    po = playout.playout(frames, done, PERIOD_S, 0.02)
    print("frames %d, misses %d, lost %d, longest gap %.0f ms, downtime "
          "%.0f ms" % (po.count, po.misses, po.lost, po.max_gap_s * 1e3,
                       stats["downtime_s"] * 1e3))
    # the viewer's longest freeze: the downtime and a frame, with TCG's
    # slack; never a stream that stopped
    assert po.max_gap_s < 1.0
    assert po.lost == 0
    assert not os.path.exists("/run/netns/" + hosts.CLIENT_NETNS)
