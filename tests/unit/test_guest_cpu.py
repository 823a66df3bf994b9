"""The guest's vCPU time, as the isolation timeline shows it."""

import threading
import time

import numpy as np
import pytest

from rtmig_nova.testbed import guest_cpu


def test_a_threads_cpu_time_is_read_and_a_gone_one_is_left_out():
    tid = threading.get_native_id()
    before = guest_cpu.threads_cpu_s([tid])
    end = time.monotonic() + 0.2
    while time.monotonic() < end:       # burn
        pass
    after = guest_cpu.threads_cpu_s([tid, 2**22 + 7])
    assert 0.1 < after - before < 0.5
    assert guest_cpu.threads_cpu_s([2**22 + 7]) is None


def test_the_share_follows_a_from_b_and_holds_each_after_its_end():
    # A: 50% of a CPU for 2 s, then gone; B: appears at 1.5 s, 20% from 2 s
    samples = []
    for k in range(41):
        t = k * 0.1
        a = 0.5 * min(t, 2.0) if t <= 2.0 else None
        b = None if t < 1.5 else 0.2 * max(t - 2.0, 0.0)
        samples.append((100.0 + t, a, b))
    at, share = guest_cpu.cpu_share(samples, window_s=0.5)
    assert at.size == 8
    assert share[:4] == pytest.approx([0.5] * 4)
    assert share[4:] == pytest.approx([0.2] * 4)


def test_too_few_samples_have_no_share():
    at, share = guest_cpu.cpu_share([(0.0, 1.0, None)])
    assert at.size == share.size == 0
    at, share = guest_cpu.cpu_share([])
    assert isinstance(at, np.ndarray) and at.size == 0


@pytest.mark.parametrize("period", [0, 0.001, 11, -1])
def test_a_sampling_period_out_of_bounds_is_refused(period):
    with pytest.raises(ValueError, match="sampling period"):
        guest_cpu.VcpuSampler("x", [], period=period)


def test_the_sampler_records_until_stopped(monkeypatch):
    monkeypatch.setattr(guest_cpu.hosts, "incoming_vcpu_threads",
                        lambda name: [])
    tid = threading.get_native_id()
    sampler = guest_cpu.VcpuSampler("x", [tid], period=0.02).start()
    time.sleep(0.2)
    samples = sampler.stop()
    n = len(samples)
    assert n >= 3
    assert all(b is None and a is not None for _, a, b in samples)
    time.sleep(0.1)
    assert len(sampler.samples) == n
