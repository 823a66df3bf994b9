"""The uncertainty of the write intensity and of the send rate
(rtmig_nova.model.uncertainty): what a profile's intervals say, how the
mixture widens predictions, and that its interval covers outcomes drawn
from the factors it assumes."""

import json

import numpy as np
import pytest

from rtmig_nova.model import DirtyProfile, ProfileError, predict
from rtmig_nova.model import uncertainty
from rtmig_nova.model.precopy import MigrationSettings

MIB = 1 << 20


def _observed(log_sd, m=32, pages=4000, total=32768, rate=0.5, seed=3,
              drift=0.0):
    """A profile from m probe intervals (1-4 s) of ``pages`` Poisson
    writers at ``rate`` writes/s whose intensity is a factor
    exp(N(0, log_sd^2)) per interval times exp(N(0, drift^2)) per quarter
    of the capture (a slow change)."""
    rng = np.random.default_rng(seed)
    tau = rng.uniform(1.0, 4.0, m)
    slow = np.repeat(rng.normal(0, drift, 4), -(-m // 4))[:m]
    obs = [np.flatnonzero(rng.random(pages) < -np.expm1(
        -rate * np.exp(rng.normal(0, log_sd) + d) * t))
        for t, d in zip(tau, slow)]
    return DirtyProfile.from_observations(obs, tau, total)


def test_profile_keeps_what_each_interval_saw():
    p = _observed(0.0, m=5)
    meta = p.metadata
    assert len(meta["observed_interval_s"]) == 5
    assert all(0 < n < 4000 for n in meta["observed_dirty_pages"])


def test_steady_writers_give_a_small_spread_a_drifting_one_its_own():
    steady = uncertainty.write_scale_sd(_observed(0.0))
    jitter = uncertainty.write_scale_sd(_observed(0.2))
    # Steady: only the error of the mean of 32 intervals of ~1000
    # Bernoulli pages each (a few percent at most).
    assert steady < 0.05
    # 20% from interval to interval, independently: averages out over a
    # migration; what is left is the mean's error, 0.2 / sqrt(32).
    assert jitter < 0.08
    # The intensity moving by 30% between stretches of the capture: a
    # migration may fall in any of them.
    drifts = [uncertainty.write_scale_sd(_observed(0.0, drift=0.3, seed=s))
              for s in range(6)]
    assert 0.12 < float(np.median(drifts)) < 0.5


def test_no_interval_record_no_extra_spread():
    p = DirtyProfile.from_histogram([0.5], [4000], idle_pages=28768)
    assert uncertainty.write_scale_sd(p) == 0.0
    a = predict(p, bandwidth=16 * MIB, downtime_limit=0.05)
    b = predict(p, bandwidth=16 * MIB, downtime_limit=0.05,
                write_scale_sd=0.0, send_rate_sd=0.0)
    assert a.total_time.quantile(0.95) == b.total_time.quantile(0.95)


def test_spread_widens_the_total_time_interval():
    p = DirtyProfile.from_histogram([0.5], [4000], idle_pages=28768)
    plain = predict(p, bandwidth=16 * MIB, downtime_limit=0.05)
    wide = predict(p, bandwidth=16 * MIB, downtime_limit=0.05,
                   write_scale_sd=0.05, send_rate_sd=0.05)
    t = plain.total_time.quantile(0.5)
    w_plain = plain.total_time.quantile(0.95) - plain.total_time.quantile(
        0.05)
    w_wide = wide.total_time.quantile(0.95) - wide.total_time.quantile(0.05)
    # The send rate's 5% moves the whole time by about 5% either way.
    assert w_wide > w_plain + 2 * 1.28 * 0.04 * t
    assert wide.total_time.quantile(0.5) == pytest.approx(t, rel=0.03)


def test_near_the_cliff_convergence_becomes_uncertain():
    # 600 pages at 5 writes/s: the pending set shrinks only where the
    # send rate beats about 600 x 5 pages/s (11.7 MiB/s): around it the
    # factors decide.
    p = DirtyProfile.from_histogram([5.0], [600], idle_pages=8000)
    probs = []
    for bw in (8, 11, 12, 13, 14, 24):
        plain = predict(p, bandwidth=bw * MIB, downtime_limit=0.05,
                        max_rounds=60)
        wide = predict(p, bandwidth=bw * MIB, downtime_limit=0.05,
                       max_rounds=60, send_rate_sd=0.15)
        probs.append((plain.converges, wide.converges))
    # Somewhere the plain model is sure and the wide one is not: either
    # way (it fails at 8 MiB/s, converges at 12).
    assert probs[0][0] < 0.01 < 0.1 < probs[0][1]
    assert probs[2][0] > 0.99 > 0.9 > probs[2][1]
    # Monotone in the bandwidth, and sure far from the cliff.
    wide = [b for _, b in probs]
    assert all(x <= y + 1e-9 for x, y in zip(wide, wide[1:]))
    assert wide[-1] > 0.99


def test_interval_covers_outcomes_drawn_from_the_factors():
    """The mixture's 5-95% interval holds about 90% of the medians of
    migrations whose write scale and send efficiency are drawn from the
    assumed lognormals (the time-scaling and 3-node rule are approximate:
    80-97% is asked)."""
    sd_s, sd_e = 0.08, 0.04
    rates = np.full(3000, 0.8)
    p = DirtyProfile.from_histogram(rates[:1], [3000], idle_pages=29768)
    mixed = predict(p, bandwidth=16 * MIB, downtime_limit=0.05,
                    write_scale_sd=sd_s, send_rate_sd=sd_e)
    lo, hi = mixed.total_time.quantile(0.05), mixed.total_time.quantile(0.95)
    rng = np.random.default_rng(11)
    inside = 0
    draws = 120
    for _ in range(draws):
        s = float(np.exp(rng.normal(0, sd_s)))
        e = float(np.exp(rng.normal(0, sd_e)))
        scaled = DirtyProfile.from_histogram([0.8 * s], [3000],
                                             idle_pages=29768)
        one = predict(scaled, bandwidth=16 * MIB, downtime_limit=0.05,
                      send_efficiency=e, write_scale_sd=0.0)
        inside += lo <= one.total_time.quantile(0.5) <= hi
    assert 0.80 <= inside / draws <= 0.97


@pytest.mark.parametrize("field,value", [
    ("send_rate_sd", -0.1), ("send_rate_sd", 1.5),
    ("write_scale_sd", float("nan")), ("send_efficiency", 0.0),
    ("send_efficiency", 20.0)])
def test_settings_bound_the_spreads(field, value):
    with pytest.raises(ValueError):
        MigrationSettings(bandwidth=MIB, downtime_limit=0.05,
                          **{field: value})


@pytest.mark.parametrize("tau,dirty", [
    ([1.0, 2.0], [10]), ("1,2", [1, 2]), ([1.0, 1e9], [1, 2]),
    ([1.0, -1.0], [1, 2]), ([1.0, 2.0], [1, 40000]), ([1.0, 2.0], [1, 2.5]),
    ([1.0, True], [1, 2])])
def test_profile_files_with_a_bad_interval_record_are_refused(
        tmp_path, tau, dirty):
    doc = _observed(0.0, m=2).to_dict()
    doc["metadata"]["observed_interval_s"] = tau
    doc["metadata"]["observed_dirty_pages"] = dirty
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ProfileError, match="observed_"):
        DirtyProfile.load(str(path))


def test_profile_file_round_trips_the_interval_record(tmp_path):
    p = _observed(0.1, m=8)
    p.save(str(tmp_path / "p.json"))
    back = DirtyProfile.load(str(tmp_path / "p.json"))
    assert uncertainty.write_scale_sd(back) == pytest.approx(
        uncertainty.write_scale_sd(p), rel=1e-6)


def test_the_planner_holds_its_confidence_with_the_spreads():
    from rtmig_nova.model import plan
    p = DirtyProfile.from_histogram([0.5, 20.0], [20000, 500],
                                    idle_pages=240000)
    req = dict(deadline=12.0, max_downtime=0.3, confidence=0.95,
               link_capacity=1.25e9)
    plain = plan(p, **req)
    wide = plan(p, **req, write_scale_sd=0.05, send_rate_sd=0.03)
    assert plain.feasible and wide.feasible
    # The spread asks for more bandwidth, and the plan's own prediction
    # (the outer nodes from the mean recursion) holds the confidence ...
    assert wide.bandwidth > plain.bandwidth
    assert wide.probability >= 0.95
    # ... as the full three-run mixture at that bandwidth does too, while
    # one step below it does not.
    full = predict(p, bandwidth=wide.bandwidth,
                   downtime_limit=wide.downtime_limit, write_scale_sd=0.05,
                   send_rate_sd=0.03)
    assert full.total_time.cdf(12.0) >= 0.94
    below = predict(p, bandwidth=wide.bandwidth - MIB,
                    downtime_limit=wide.downtime_limit, write_scale_sd=0.05,
                    send_rate_sd=0.03)
    assert below.total_time.cdf(12.0) < 0.95


@pytest.mark.parametrize("sd_s, sd_e", [(0.05, 0.03), (0.0, 0.02),
                                        (0.08, 0.0), (0.6, 0.6)])
def test_the_planners_first_guess_shift_is_the_mixtures_quantile(sd_s,
                                                                 sd_e):
    # A model whose pre-copy takes T / e at send efficiency e, exactly:
    # the mixture's quantile is then what quantile_shift solves for.
    from rtmig_nova.model.distribution import Distribution
    from rtmig_nova.model.prediction import Prediction
    T = 100.0

    def fake(profile, node, horizon):
        point = Distribution.point(T / node.send_efficiency)
        return Prediction(point, Distribution.point(0.01),
                          Distribution.point(1e9), Distribution.point(3),
                          node, "fake")

    settings = MigrationSettings(bandwidth=16 * MIB, downtime_limit=0.05)
    effs = uncertainty.node_efficiencies(sd_s, sd_e)
    times = [T / e for e in effs]
    mixed = uncertainty.mixed(fake, None, settings, sd_s, sd_e)
    for p in (0.5, 0.9, 0.95, 0.99):
        want = mixed.total_time.quantile(p)
        got = times[1] * np.exp(uncertainty.quantile_shift(
            times, sd_s, sd_e, p))
        assert got == pytest.approx(want, rel=2e-5), p
