import dataclasses
import math

import numpy as np
import pytest

from rtmig_nova.model import DirtyProfile, plan, predict, simulate
from rtmig_nova.model import sizing
from rtmig_nova.model.baselines import first_pass_bytes

MIB = 2 ** 20


@pytest.fixture(scope="module")
def guest():
    rng = np.random.default_rng(1)
    rates = np.zeros(16384)                       # 64 MiB
    hot = rng.choice(16384, 2000, replace=False)
    rates[hot] = 10 ** rng.uniform(-1, 2, hot.size)
    return DirtyProfile.from_rates(rates, zero_pages=4000)


@pytest.mark.parametrize("deadline", [0.6, 1.0, 2.0])
def test_plan_meets_the_request_and_is_least(guest, deadline):
    pl = plan(guest, deadline=deadline, max_downtime=0.05, confidence=0.95,
              link_capacity=1e9)
    assert pl.feasible, pl.reason
    assert pl.reason == ""
    # Whole MiB/s and whole ms, as libvirt and QEMU take them.
    assert pl.bandwidth % MIB == 0
    assert pl.downtime_limit * 1000 == pytest.approx(
        round(pl.downtime_limit * 1000))
    pred = pl.prediction
    assert pred.total_time.cdf(deadline) >= 0.95
    assert pl.probability >= 0.95
    # Downtime is bounded by construction.
    assert pred.downtime.quantile(0.999) <= 0.05
    # One step less bandwidth does not meet the deadline.
    below = predict(guest, pl.bandwidth - MIB, pl.downtime_limit)
    assert below.total_time.cdf(deadline) < 0.95


@pytest.mark.parametrize("deadline,confidence", [
    (0.6, 0.95), (1.0, 0.5), (2.0, 0.999), (5.0, 0.95)])
def test_plan_search_is_short_and_lands_on_the_least_step(
        guest, monkeypatch, deadline, confidence):
    # The guided search needs two or three model evaluations; bisection
    # over the same bracket to 1 MiB/s took a dozen.
    from rtmig_nova.model import variants
    seen = []
    real = variants.run

    def counting(predictor, profile, settings, **kw):
        seen.append(settings.bandwidth)
        return real(predictor, profile, settings, **kw)

    monkeypatch.setattr(variants, "run", counting)
    pl = plan(guest, deadline=deadline, max_downtime=0.05,
              confidence=confidence, link_capacity=1e9)
    monkeypatch.undo()
    assert pl.feasible, pl.reason
    assert len(seen) <= 4, [b / MIB for b in seen]
    # The answer was evaluated and one step below it was, and failed.
    assert pl.bandwidth in seen and pl.bandwidth - MIB in seen
    below = predict(guest, pl.bandwidth - MIB, pl.downtime_limit)
    assert below.total_time.cdf(deadline) < confidence


@pytest.mark.parametrize("wrong", ["inf", "tenfold", "noise"])
def test_a_wrong_guide_costs_evaluations_not_the_answer(
        guest, monkeypatch, wrong):
    # The mean path only proposes bandwidths; the model decides.  With a
    # guide that says nothing converges, one ten times too slow, or noise,
    # the plan is still the least step, found by the log-midpoint fallback.
    exact = plan(guest, deadline=1.0, max_downtime=0.05, confidence=0.95,
                 link_capacity=1e9)
    rng = np.random.default_rng(5)
    real = sizing._MeanPrecopy._compute

    def broken(self, ks):
        before = set(self.cache)
        real(self, ks)
        for k in set(self.cache) - before:
            t = self.cache[k]
            self.cache[k] = {"inf": math.inf, "tenfold": 10 * t,
                             "noise": t * rng.uniform(0.2, 5)}[wrong]

    monkeypatch.setattr(sizing._MeanPrecopy, "_compute", broken)
    pl = plan(guest, deadline=1.0, max_downtime=0.05, confidence=0.95,
              link_capacity=1e9)
    assert pl.feasible and pl.bandwidth == exact.bandwidth


def test_plan_holds_in_the_page_level_simulation(guest):
    pl = plan(guest, deadline=1.0, max_downtime=0.05, confidence=0.95,
              link_capacity=1e9)
    mc = simulate(guest, pl.bandwidth, pl.downtime_limit, runs=400, seed=5)
    ok = np.mean((mc.total_time.means <= 1.0) &
                 (mc.downtime.means <= 0.05))
    # 400 runs: 3 standard errors of a 0.95 proportion is about 0.033.
    assert ok >= 0.95 - 0.033


def test_more_confidence_needs_no_less_bandwidth(guest):
    lo = plan(guest, deadline=1.0, max_downtime=0.05, confidence=0.5,
              link_capacity=1e9)
    hi = plan(guest, deadline=1.0, max_downtime=0.05, confidence=0.999,
              link_capacity=1e9)
    assert hi.bandwidth >= lo.bandwidth


def test_cpu_reservation_forms(guest):
    pl = plan(guest, deadline=1.0, max_downtime=0.05, link_capacity=1e9,
              cpu_cost_per_page=4e-6, cpu_margin=1.5, deadline_period=0.02,
              cgroup_period_us=50000)
    # The pages QEMU sends per 100 ms window: its quota's worth, and the one
    # that crosses the quota (precopy.send_rate).
    pages_per_s = (pl.bandwidth // 10 // (4096 + 8) + 1) * 10
    share = pages_per_s * 4e-6 * 1.5
    assert pl.cpu_share == pytest.approx(share)
    assert pl.cpu.period_ns == 20_000_000 == pl.cpu.deadline_ns
    assert pl.cpu.runtime_ns == math.ceil(share * 20_000_000)
    assert pl.cpu.cgroup_period_us == 50000
    assert pl.cpu.quota_us == math.ceil(share * 50000)


def test_infeasible_first_pass(guest):
    pl = plan(guest, deadline=0.1, max_downtime=0.05, link_capacity=100e6)
    assert not pl.feasible and "first pass" in pl.reason
    assert first_pass_bytes(guest) / 100e6 > 0.1


def test_infeasible_hot_set(guest):
    pl = plan(guest, deadline=10, max_downtime=0.05, link_capacity=30e6)
    assert not pl.feasible
    assert "converges with probability" in pl.reason
    assert "re-dirtied" in pl.reason
    assert pl.bandwidth == 30e6 and pl.prediction is not None


def test_infeasible_deadline_at_link_capacity(guest):
    # The first pass fits, but not the rounds after it.
    t_first = first_pass_bytes(guest) / 60e6
    pl = plan(guest, deadline=t_first * 1.01, max_downtime=0.05,
              link_capacity=60e6)
    assert not pl.feasible and "P(total <=" in pl.reason


def test_infeasible_switchover_and_cpu(guest):
    pl = plan(guest, deadline=10, max_downtime=0.01, link_capacity=1e9,
              switchover_time=0.0095)
    assert not pl.feasible and "downtime-limit of at least 1 ms" in pl.reason
    pl = plan(guest, deadline=1.0, max_downtime=0.05, link_capacity=1e9,
              cpu_cost_per_page=1e-3)
    assert not pl.feasible and "CPUs" in pl.reason


@pytest.mark.parametrize("kw, name", [
    (dict(deadline=0), "deadline"),
    (dict(deadline=-1), "deadline"),
    (dict(deadline=float("nan")), "deadline"),
    (dict(max_downtime=0), "max_downtime"),
    (dict(max_downtime=float("inf")), "max_downtime"),
    (dict(confidence=0), "confidence"),
    (dict(confidence=1), "confidence"),
    (dict(confidence=1.5), "confidence"),
    (dict(confidence=float("nan")), "confidence"),
    (dict(link_capacity=0), "link_capacity"),
    (dict(link_capacity=None), "link_capacity"),
    (dict(cpu_cost_per_page=-1), "cpu_cost_per_page"),
    (dict(model="nope"), "model"),
])
def test_bad_plan_input_names_the_argument(guest, kw, name):
    args = dict(deadline=1.0, max_downtime=0.05, confidence=0.95,
                link_capacity=1e9)
    args.update(kw)
    with pytest.raises(ValueError, match=name):
        plan(guest, **args)


def test_cpu_reservation_floor_values():
    res = sizing.cpu_reservation(1.0, 4096, 1e-9)
    assert res.runtime_ns == sizing.SCHED_DEADLINE_MIN_RUNTIME_NS
    assert res.quota_us == 1000


@pytest.mark.parametrize("model", ["precopy", "geometric", "montecarlo"])
def test_setup_time_shifts_the_total_time_only(guest, model):
    kw = dict(bandwidth=40 * MIB, downtime_limit=0.05, model=model)
    if model == "montecarlo":
        kw["model"] = sizing.variants.MonteCarloModel(runs=50, seed=3)
    base = predict(guest, **kw)
    late = predict(guest, setup_time=0.3, **kw)
    assert late.total_time.mean == pytest.approx(base.total_time.mean + 0.3)
    assert late.total_time.quantile(0.95) == pytest.approx(
        base.total_time.quantile(0.95) + 0.3)
    assert late.downtime.mean == pytest.approx(base.downtime.mean)
    assert late.bytes_sent.mean == pytest.approx(base.bytes_sent.mean)
    assert late.settings.setup_time == 0.3


def test_plan_with_setup_time_needs_more_bandwidth(guest):
    req = dict(deadline=1.0, max_downtime=0.05, confidence=0.95,
               link_capacity=1e9)
    base = plan(guest, **req)
    late = plan(guest, setup_time=0.3, **req)
    assert base.feasible and late.feasible, (base.reason, late.reason)
    assert late.bandwidth > base.bandwidth
    assert late.prediction.total_time.cdf(1.0) >= 0.95
    # the same migration without the setup time would make a 0.7 s deadline
    assert predict(guest, late.bandwidth, late.downtime_limit
                   ).total_time.cdf(0.7) >= 0.95


def test_setup_time_beyond_the_deadline_is_infeasible(guest):
    pl = plan(guest, deadline=0.5, max_downtime=0.05, link_capacity=1e9,
              setup_time=0.5)
    assert not pl.feasible
    assert "setup time 0.5 s" in pl.reason


def test_negative_setup_time_is_refused(guest):
    with pytest.raises(ValueError, match="setup_time"):
        predict(guest, 40 * MIB, 0.05, setup_time=-1)


def test_link_rate_speeds_up_the_stop_and_copy_and_the_run_outs(guest):
    slow = predict(guest, 100 * MIB, 0.05)
    assert slow.converges == pytest.approx(1.0)
    same = predict(guest, 100 * MIB, 0.05, link_rate=100 * MIB)
    fast = predict(guest, 100 * MIB, 0.05, link_rate=1000 * MIB,
                   switchover_time=0.004)
    assert same.downtime.mean == pytest.approx(slow.downtime.mean)
    assert same.total_time.mean == pytest.approx(slow.total_time.mean)
    # 10x the rate: at most a tenth of the page time, plus the switch-over
    # (the last epoch, sent at the link's rate too, re-dirties fewer)
    assert fast.downtime.mean - 0.004 <= slow.downtime.mean / 10 * (
        1 + 1e-6)
    assert fast.downtime.quantile(0.999) <= 0.004 + 0.05 * 4104 / 4096 / 10
    # An epoch whose pending set runs out before a check ends at the
    # link's rate (QEMU sends a window's budget as fast as it can): more
    # is saved than the stop-and-copy's share, and fewer pages go again.
    saved = slow.downtime.mean - (fast.downtime.mean - 0.004)
    assert fast.total_time.mean < slow.total_time.mean - saved + 0.004
    assert fast.bytes_sent.mean <= slow.bytes_sent.mean * (1 + 1e-9)


def test_a_window_budget_sent_at_the_link_rate_converges():
    """A pending set that fits what is left of a rate-limit window goes out
    at the link's rate and the sync follows at once: a guest whose 0.1 s
    windows dirty more than the downtime threshold still converges on a
    fast link (the testbed's video guest at 4 MiB/s), and not on a shaped
    one."""
    # 200 frame-ring pages rewritten 4 times a second, 35 hot ones: 115
    # pages dirtied per 0.1 s window, against a 128-page window budget
    # and a 64-page threshold.
    p = DirtyProfile.from_histogram([4.0, 80.0], [200, 35],
                                    idle_pages=32533,
                                    laws=["periodic", "poisson"])
    kw = dict(bandwidth=4 * MIB, downtime_limit=0.05, qemu_version="10.0",
              max_rounds=200)
    shaped = predict(p, **kw)
    fast = predict(p, link_rate=260 * MIB, **kw)
    assert shaped.converges < 0.05
    assert fast.converges > 0.95
    sim = simulate(p, runs=200, seed=3, link_rate=260 * MIB, **kw)
    assert sim.converges > 0.95
    assert fast.total_time.quantile(0.5) == pytest.approx(
        sim.total_time.quantile(0.5), rel=0.05)


def test_the_window_budget_runs_on_across_a_sync():
    """QEMU's 100 ms window runs on across a sync: after a pending set runs
    out mid-window, the next epoch has only the window's rest before it
    sleeps to the window's end.  A guest that dirties more pages per window
    (141) than a window carries (128) never converges, although each
    window's pending set would fit a fresh window (the uniform testbed
    guest at 4 and 5 MiB/s on QEMU 10: 0 of 9 real migrations finished;
    taking every epoch to start on a fresh window predicted 0.4-0.75)."""
    p = DirtyProfile.from_histogram([0.56, 40.0], [2048, 30],
                                    idle_pages=30690)
    kw = dict(bandwidth=5 * MIB, downtime_limit=0.05, qemu_version="10.0",
              link_rate=240 * MIB, max_rounds=200)
    ana = predict(p, **kw)
    sim = simulate(p, runs=100, seed=4, **kw)
    assert ana.converges < 0.05
    assert sim.converges < 0.05
    # With the window's budget back at every sync it would converge: the
    # same guest on a 1.5x window (a fresh window's worth more) does.
    roomy = predict(p, **dict(kw, bandwidth=8 * MIB))
    assert roomy.converges > 0.95


def test_window_left_over_and_run_out_time_agree():
    from rtmig_nova.model import analytic
    send, dt, burst = 1e6, 0.1, 1e8
    # From a fresh window: 250 kB = two full windows and half of a third.
    assert analytic.run_out_time(250e3, send, dt, burst) == pytest.approx(
        0.2 + 50e3 / burst)
    assert analytic.window_left_over(250e3, send, dt, burst) == \
        pytest.approx(50e3)
    # 30 kB of the window spent: 70 kB fit before its end.
    assert analytic.run_out_time(60e3, send, dt, burst, 30e3) == \
        pytest.approx(60e3 / burst)
    assert analytic.run_out_time(80e3, send, dt, burst, 30e3) == \
        pytest.approx(0.1 - 30e3 / burst + 10e3 / burst)
    assert analytic.window_left_over(80e3, send, dt, burst, 30e3) == \
        pytest.approx(10e3)
    # An even link starts every epoch on a fresh window.
    assert analytic.window_left_over(80e3, send, dt, None, 30e3) == 0.0


def test_link_rate_matches_the_simulator(guest):
    kw = dict(bandwidth=100 * MIB, downtime_limit=0.05, link_rate=1000 * MIB)
    ana = predict(guest, **kw)
    sim = simulate(guest, runs=300, seed=5, **kw)
    assert ana.downtime.mean == pytest.approx(sim.downtime.mean, abs=1e-3)
    assert ana.total_time.mean == pytest.approx(sim.total_time.mean,
                                                rel=0.03)


def test_link_rate_below_the_bandwidth_is_refused(guest):
    with pytest.raises(ValueError, match="link_rate"):
        predict(guest, 100 * MIB, 0.05, link_rate=10 * MIB)


def test_setup_time_spread_widens_the_total_time(guest):
    base = predict(guest, 100 * MIB, 0.05, setup_time=0.3)
    wide = predict(guest, 100 * MIB, 0.05, setup_time=0.3,
                   setup_time_sd=0.05)
    assert wide.total_time.mean == pytest.approx(base.total_time.mean)
    assert wide.total_time.std == pytest.approx(
        math.hypot(base.total_time.std, 0.05), rel=1e-3)
    assert wide.total_time.quantile(0.95) > base.total_time.quantile(0.95)
    assert wide.downtime.mean == pytest.approx(base.downtime.mean)
    with pytest.raises(ValueError, match="setup_time_sd"):
        predict(guest, 100 * MIB, 0.05, setup_time_sd=-0.1)


def test_bytes_sent_count_the_windows_sent_in_a_burst(guest):
    """The bytes sent are counted epoch by epoch, not derived from the time
    at the rate limit: an epoch that runs out sends its last window at the
    link's rate, so it sends more bytes than its length x the rate limit.
    The page-level simulator counts bytes page by page: they agree."""
    kw = dict(bandwidth=60 * MIB, downtime_limit=0.05,
              link_rate=1000 * MIB, qemu_version="10.0")
    pred = predict(guest, **kw)
    sim = simulate(guest, runs=400, seed=3, **kw)
    assert pred.converges == pytest.approx(1.0)
    rate = pred.settings.send_rate(guest.page_size)
    by_time = (pred.total_time.mean - pred.downtime.mean) * rate
    assert pred.bytes_sent.mean > by_time * 1.01
    assert pred.bytes_sent.mean == pytest.approx(sim.bytes_sent.mean,
                                                 rel=0.01)


@pytest.mark.parametrize("efficiency", [0.8, 1.0, 1.5])
def test_the_planned_downtime_limit_holds_at_any_send_efficiency(
        guest, efficiency):
    """QEMU's threshold is the bandwidth it measured x the downtime limit:
    a host that sends 1.5x the model's rate stops with 1.5x the bytes, so
    the plan's limit must shrink with it or the downtime breaks
    max_downtime."""
    pl = plan(guest, deadline=2.0, max_downtime=0.05, confidence=0.95,
              link_capacity=1e9, send_efficiency=efficiency,
              link_rate=400 * MIB)
    assert pl.feasible, pl.reason
    assert pl.prediction.downtime.quantile(0.999) <= 0.05
    # The largest limit that fits: 1 ms more would not.
    st = pl.prediction.settings
    worst = (np.ceil(st.threshold_pages(guest.page_size)) - 1) * \
        (guest.page_size + 8) / st.stop_rate
    assert worst <= 0.05
    wider = dataclasses.replace(st, downtime_limit=st.downtime_limit + 0.002)
    assert (np.ceil(wider.threshold_pages(guest.page_size)) - 1) * \
        (guest.page_size + 8) / wider.stop_rate > 0.05 * 0.98


@pytest.mark.parametrize("model", ["precopy", "geometric", "montecarlo"])
def test_a_send_backlog_lengthens_the_downtime_at_the_stop_rate(
        guest, model):
    kw = dict(bandwidth=40 * MIB, downtime_limit=0.05, model=model)
    if model == "montecarlo":
        kw["model"] = sizing.variants.MonteCarloModel(runs=50, seed=3)
    base = predict(guest, **kw)
    queued = predict(guest, send_backlog=2 * MIB, **kw)
    assert queued.downtime.mean == pytest.approx(base.downtime.mean + 0.05)
    assert queued.downtime.quantile(0.95) == pytest.approx(
        base.downtime.quantile(0.95) + 0.05)
    assert queued.total_time.mean == pytest.approx(
        base.total_time.mean + 0.05)
    # the same bytes across a faster stop-and-copy cost less
    fast = predict(guest, send_backlog=2 * MIB, link_rate=400 * MIB, **kw)
    fast0 = predict(guest, link_rate=400 * MIB, **kw)
    assert fast.downtime.mean == pytest.approx(fast0.downtime.mean + 0.005)


def test_the_planner_leaves_the_send_backlog_room_in_the_downtime(guest):
    req = dict(deadline=2.0, max_downtime=0.05, confidence=0.95,
               link_capacity=1e9)
    base = plan(guest, **req)
    queued = plan(guest, send_backlog=MIB, **req)
    assert base.feasible and queued.feasible, (base.reason, queued.reason)
    # the limit QEMU gets is the bound less the backlog at the plan's rate
    assert queued.downtime_limit < base.downtime_limit
    assert queued.prediction.downtime.quantile(0.999) <= 0.05 + 1e-9
    assert queued.prediction.settings.send_backlog == MIB
    # a backlog that alone takes the whole bound leaves no limit
    pl = plan(guest, send_backlog=60 * MIB, **req)
    assert not pl.feasible and "send backlog" in pl.reason


def test_a_send_backlog_out_of_bounds_is_refused(guest):
    for bad in (-1, 2 ** 31 + 1, 1.5):
        with pytest.raises(ValueError, match="send_backlog"):
            predict(guest, 40 * MIB, 0.05, send_backlog=bad)
