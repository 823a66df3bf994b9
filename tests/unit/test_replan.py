"""The closed loop's pure core: re-planning a running pre-copy from what
its job reports (rtmig_nova.model.replan)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rtmig_nova.model import DirtyProfile, plan, replan, sizing
from rtmig_nova.model.precopy import send_rate

MIB = 2 ** 20
LINK = 400e6                 # bytes/s: the host's migration link share
DEADLINE = 4.0


@pytest.fixture(scope="module")
def guest():
    rng = np.random.default_rng(7)
    rates = np.zeros(65536)                       # 256 MiB
    hot = rng.choice(rates.size, 6000, replace=False)
    rates[hot] = 10 ** rng.uniform(-1, 2.3, hot.size)
    return DirtyProfile.from_rates(rates, zero_pages=20000)


@pytest.fixture(scope="module")
def planned(guest):
    pl = plan(guest, deadline=DEADLINE, max_downtime=0.1, confidence=0.95,
              link_capacity=LINK)
    assert pl.feasible, pl.reason
    return pl


def decide(guest, pl, obs, bandwidth=None, ceiling=LINK):
    return replan.replan(guest, pl.prediction.settings, DEADLINE,
                         pl.prediction.total_time.quantile(0.95), obs,
                         pl.bandwidth if bandwidth is None else bandwidth,
                         ceiling)


def first_pass_at(guest, pl, t, rate_share=1.0):
    """An observation t s into the first pass at rate_share of the plan's
    send rate."""
    sent = send_rate(pl.bandwidth, guest.page_size) * rate_share * t
    wire = sizing.first_pass_bytes(guest)
    left = guest.memory_bytes * max(1 - sent / wire, 0)
    return replan.Observation(t, left, sent, 1, None,
                              None if rate_share == 1 else
                              send_rate(pl.bandwidth, guest.page_size) *
                              rate_share, t)


def test_the_mean_path_from_the_start_is_the_planners(guest, planned):
    opts = {"check_interval": 0.1}
    k = int(planned.bandwidth // MIB)

    def limit(bw):
        return round(planned.downtime_limit * 1000) + 0 * bw
    plain = sizing._MeanPrecopy(guest, opts, MIB, LINK, limit, k - 1, k)
    start = sizing.MeanStart(guest.memory_bytes, 0.0, True)
    started = sizing._MeanPrecopy(guest, opts, MIB, LINK, limit, k - 1, k,
                                  start=start)
    assert started.time(k) == pytest.approx(plain.time(k), rel=1e-12)


@pytest.mark.parametrize("t", [0.2, 0.5, 1.0])
def test_on_plan_progress_keeps_the_plan(guest, planned, t):
    # Elapsed plus the rest from a point of the first pass is the whole
    # mean path: a migration going as planned is not re-planned.
    r = decide(guest, planned, first_pass_at(guest, planned, t))
    assert r.decision == replan.KEEP, r.reason
    assert r.bandwidth == planned.bandwidth
    whole = decide(guest, planned, first_pass_at(guest, planned, 1e-3))
    assert r.expected_total == pytest.approx(whole.expected_total, rel=0.03)


def test_a_slower_send_raises_the_bandwidth_within_the_share(guest, planned):
    obs = first_pass_at(guest, planned, 0.6, rate_share=0.6)
    r = decide(guest, planned, obs)
    assert r.decision == replan.RAISE, r.reason
    assert planned.bandwidth < r.bandwidth <= LINK
    assert r.bandwidth % MIB == 0
    assert r.predicted_total <= DEADLINE
    assert r.efficiency == pytest.approx(0.6)
    # the least such bandwidth: one MiB/s less misses the deadline
    below = decide(guest, planned, obs, bandwidth=r.bandwidth - MIB,
                   ceiling=r.bandwidth - MIB)
    assert below.predicted_total > DEADLINE


def test_a_higher_dirty_rate_raises_the_bandwidth(guest, planned):
    window = 0.1
    seen = 1.5 * guest.dirty_rate(window)
    obs = replan.Observation(2.0, 30 * MIB, guest.memory_bytes, 3, seen,
                             None, 0.05, window)
    r = decide(guest, planned, obs)
    # hot pages saturate: x1.5 distinct pages takes more than x1.5 writes
    assert r.write_scale > 1.5
    assert r.decision == replan.RAISE, r.reason
    assert planned.bandwidth < r.bandwidth <= LINK
    assert r.predicted_total <= DEADLINE


def test_a_hopeless_migration_is_aborted_and_a_stall_too(guest, planned):
    # every page rewritten many times per epoch: no bandwidth converges
    obs = replan.Observation(2.0, 200 * MIB, guest.memory_bytes, 3,
                             1e10, None, 0.2, 0.5)
    r = decide(guest, planned, obs)
    assert r.decision == replan.ABORT and "does not converge" in r.reason
    assert "beyond the profile's working set" in r.reason
    stalled = replan.Observation(2.0, 100 * MIB, 50 * MIB, 1, None, 0.0,
                                 2.0)
    r = decide(guest, planned, stalled)
    assert r.decision == replan.ABORT and "stalled" in r.reason


def test_late_but_reachable_only_at_the_ceiling_is_raised_to_it(
        guest, planned):
    # far behind: the confidence no longer holds, the expectation may
    obs = first_pass_at(guest, planned, 2.4, rate_share=0.5)
    r = decide(guest, planned, obs, ceiling=planned.bandwidth + 40 * MIB)
    assert r.decision in (replan.RAISE, replan.ABORT)
    assert r.bandwidth == planned.bandwidth + 40 * MIB
    if r.decision == replan.RAISE:
        assert r.expected_total <= DEADLINE < r.predicted_total
    else:
        assert r.expected_total > DEADLINE


@settings(max_examples=60, deadline=None)
@given(t=st.floats(0.05, 3.9), share=st.floats(0.0, 1.0),
       rate=st.one_of(st.none(), st.floats(0, 1e10)),
       iteration=st.integers(1, 50), ceiling_mib=st.integers(1, 2000))
def test_never_above_the_ceiling_nor_below_the_current(
        guest, planned, t, share, rate, iteration, ceiling_mib):
    obs = replan.Observation(t, guest.memory_bytes * share,
                             guest.memory_bytes, iteration, rate, None,
                             min(t, 0.5), None)
    ceiling = ceiling_mib * MIB
    r = decide(guest, planned, obs, ceiling=ceiling)
    assert r.decision in (replan.KEEP, replan.RAISE, replan.ABORT)
    assert r.bandwidth >= planned.bandwidth
    assert r.bandwidth <= max(ceiling, planned.bandwidth)
    assert r.bandwidth % MIB == 0
    assert not math.isnan(r.predicted_total)


@pytest.mark.parametrize("cpu_share", [0.01, 0.05, 0.3])
def test_the_ceiling_is_the_link_share_or_the_admitted_cpu(cpu_share):
    cost, margin = 2.5e-6, 1.25
    top = replan.bandwidth_ceiling(LINK, cpu_share, 4096, cost, margin)
    assert top <= LINK and top % MIB == 0

    def share(bw):
        return sizing.cpu_reservation(bw, 4096, cost, margin).share
    assert share(top) <= cpu_share
    if top + MIB <= LINK:
        assert share(top + MIB) > cpu_share
    assert replan.bandwidth_ceiling(LINK, 1.0, 4096, 0.0, margin) == \
        math.floor(LINK / MIB) * MIB


def test_the_write_scale_recovers_a_scaled_profile(guest):
    window = 0.4
    for k in (0.5, 1.0, 3.0):
        scaled = DirtyProfile.from_histogram(guest.rates * k, guest.counts,
                                             guest.idle_pages,
                                             guest.zero_pages)
        s = replan.write_scale(guest, scaled.dirty_rate(window), window)
        assert s == pytest.approx(k, rel=1e-3)
    assert replan.write_scale(guest, None, window) == 1.0
    assert replan.write_scale(guest, 1e15, window) == 1e6   # unreachable


def test_job_numbers_read_libvirts_stats():
    stats = {"type": 2, "time_elapsed": 2500, "memory_remaining": 10 * MIB,
             "memory_processed": 300 * MIB, "memory_iteration": 3,
             "memory_dirty_rate": 1000, "memory_page_size": 4096}
    assert replan.job_numbers(stats) == (2.5, 10 * MIB, 300 * MIB, 3,
                                         4096000.0)
    # no dirty rate before QEMU's second sync; junk counts as 0
    first = dict(stats, memory_iteration=1, memory_remaining=-5,
                 time_elapsed=float("nan"))
    assert replan.job_numbers(first) == (0.0, 0.0, 300 * MIB, 1, None)


def test_off_the_band_the_new_plan_leaves_the_loop_a_margin(guest, planned):
    obs = first_pass_at(guest, planned, 0.6, rate_share=0.6)
    plain = decide(guest, planned, obs)
    kept_back = replan.replan(
        guest, planned.prediction.settings, DEADLINE,
        planned.prediction.total_time.quantile(0.95), obs,
        planned.bandwidth, LINK, margin=1.0)
    assert kept_back.decision == replan.RAISE
    assert kept_back.bandwidth > plain.bandwidth
    assert kept_back.predicted_total <= DEADLINE - 1.0


def test_late_in_the_migration_a_raise_goes_to_the_ceiling(guest, planned):
    # two margins or less before the deadline there is no room to correct
    # again: the most allowed, not the least that would do
    obs = first_pass_at(guest, planned, 2.5, rate_share=0.5)
    early = decide(guest, planned, obs)
    late = replan.replan(guest, planned.prediction.settings, DEADLINE,
                         planned.prediction.total_time.quantile(0.95), obs,
                         planned.bandwidth, LINK, margin=0.75)
    assert early.decision == late.decision == replan.RAISE
    assert early.bandwidth < late.bandwidth == math.floor(LINK / MIB) * MIB


def test_an_on_plan_migration_at_the_convergence_cliff_is_kept():
    # The least bandwidth of this guest is where it only just converges:
    # its mean path there is far slower than the model, so the band must
    # not be judged by it while the plan's inputs are what is observed.
    rng = np.random.default_rng(3)
    pages = 1 << 20                                      # 4 GiB
    rates = np.zeros(pages)
    rates[:24576] = 25.0 / 8                             # a frame ring
    bg = rng.choice(np.arange(24576, pages), pages * 6 // 100, replace=False)
    rates[bg] = np.exp(rng.normal(np.log(0.01), 1.5, bg.size))
    profile = DirtyProfile.from_rates(rates, zero_pages=pages // 2)
    pl = plan(profile, deadline=60, max_downtime=0.3, confidence=0.95,
              link_capacity=1.25e9)
    assert pl.feasible, pl.reason
    band = pl.prediction.total_time.quantile(0.95)
    rate = send_rate(pl.bandwidth, profile.page_size)
    wire = sizing.first_pass_bytes(profile)
    for share in (0.01, 0.5, 0.9):
        t = wire * share / rate
        obs = replan.Observation(t, profile.memory_bytes * (1 - share),
                                 rate * t, 1, None, rate, t)
        r = replan.replan(profile, pl.prediction.settings, 60.0, band, obs,
                          pl.bandwidth, 1.25e9, margin=2.0)
        assert r.decision == replan.KEEP, (share, r.reason)


def test_a_calibration_made_once_decides_as_one_made_each_time(
        guest, planned):
    band = planned.prediction.total_time.quantile(0.95)
    cal = replan.calibrate(guest, planned.prediction.settings, band)
    for obs in (first_pass_at(guest, planned, 0.5),
                first_pass_at(guest, planned, 0.6, rate_share=0.6)):
        assert decide(guest, planned, obs) == replan.replan(
            guest, planned.prediction.settings, DEADLINE, band, obs,
            planned.bandwidth, LINK, calibration=cal)


def test_write_rates_far_beyond_the_profile_raise_to_the_ceiling():
    # a wide, cool working set: x4.5 its dirty rate stays within it
    rates = np.zeros(65536)
    rates[:30000] = 0.2
    wide = DirtyProfile.from_rates(rates, zero_pages=20000)
    pl = planned.__wrapped__(wide)
    window = 1.0

    def seen(factor):
        return replan.Observation(1.0, 60 * MIB, wide.memory_bytes, 2,
                                  factor * wide.dirty_rate(window), None,
                                  1.0, window)
    r = decide(wide, pl, seen(1.5))
    assert r.bandwidth < r.ceiling, r.reason
    r = decide(wide, pl, seen(4.5))
    # the profile is refuted: not the least bandwidth by it, the ceiling
    assert r.decision == replan.RAISE, r.reason
    assert r.bandwidth == r.ceiling and "no longer holds" in r.reason
