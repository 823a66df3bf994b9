"""The pre-copy algorithm on cases worked out by hand, in both the
page-level simulator and the analytic model."""

import math

import numpy as np
import pytest

from rtmig_nova.model import (DirtyProfile, MigrationSettings, predict,
                              simulate)
from rtmig_nova.model import analytic, montecarlo, precopy
from rtmig_nova.model.precopy import PAGE_HEADER_BYTES, ZERO_PAGE_BYTES

PAGE = 4096
WIRE = PAGE + PAGE_HEADER_BYTES
# QEMU also sends the page that crosses a window's quota (precopy.send_rate):
# a limit of 9.5 pages per 100 ms window sends 10 pages in each.
LIMIT_10 = 95 * WIRE            # bytes/s, the rate limit
RATE_10 = 100 * WIRE            # bytes/s, what goes out


def both(profile, runs=50, **kw):
    st = MigrationSettings(**kw)
    return (analytic.predict(profile, st),
            montecarlo.simulate(profile, st, runs=runs, seed=0))


def test_idle_guest_is_one_pass_and_no_downtime():
    # 1000 idle pages at 100 pages/s: checks every 10 pages; the remaining
    # count reaches 0 (< threshold 5.01 pages) when the pass ends at 10 s,
    # and nothing was dirtied: stop-and-copy sends nothing.
    prof = DirtyProfile.from_histogram([], [], idle_pages=1000)
    for pred in both(prof, bandwidth=LIMIT_10, downtime_limit=0.05):
        assert pred.total_time.mean == pytest.approx(10.0)
        assert pred.downtime.mean == pytest.approx(0.0, abs=1e-12)
        assert pred.rounds.mean == 1
        assert pred.bytes_sent.mean == pytest.approx(1000 * WIRE)


def test_zero_pages_cost_nine_bytes():
    prof = DirtyProfile.from_histogram([], [], idle_pages=1000,
                                       zero_pages=600)
    total = 400 * WIRE + 600 * ZERO_PAGE_BYTES
    bw = RATE_10
    for pred in both(prof, bandwidth=LIMIT_10, downtime_limit=0.05):
        assert pred.bytes_sent.mean == pytest.approx(total)
        # The simulator sends whole pages by each 100 ms check, so a pass can
        # end up to one page's time later than bytes / bandwidth.
        assert total / bw <= pred.total_time.mean + 1e-9 <= \
            total / bw + WIRE / bw + 1e-9


def test_early_sync_leaves_pages_pending():
    # QEMU syncs at the first check with fewer than threshold pages left,
    # not at the end of the pass.  1000 idle pages at 100 pages/s, limit
    # 0.5 s: threshold 50.1 pages, checks every 10 pages: the sync comes
    # when 50 pages are left (after 9.5 s), those 50 are below the
    # threshold, so they are the stop-and-copy: 0.5 s of downtime (at the
    # send rate).
    prof = DirtyProfile.from_histogram([], [], idle_pages=1000)
    for pred in both(prof, bandwidth=LIMIT_10, downtime_limit=0.5,
                     link_rate=RATE_10):
        assert pred.downtime.mean == pytest.approx(0.5, abs=1e-5)
        assert pred.total_time.mean == pytest.approx(10.0)


def test_always_dirty_pages_are_resent_every_round_and_at_stop():
    # 10 pages written a million times a second are dirty at every sync.
    prof = DirtyProfile.from_histogram([1e6], [10], idle_pages=990)
    bw = LIMIT_10                       # 10 pages per 100 ms window
    # Threshold 20.04 pages.  Pass 1 syncs with 20 pages left (9.8 s); with
    # the 10 hot pages that is 30 pending.  The cursor then sends 10 of the
    # 20 carried-over pages first (0.1 s) and syncs with 20 < 20.04 pending:
    # stop-and-copy of 20 pages, 0.2 s (at the send rate).
    for pred in both(prof, bandwidth=bw, downtime_limit=0.2,
                     link_rate=RATE_10):
        assert pred.rounds.mean == pytest.approx(2, abs=0.05)
        assert pred.downtime.mean == pytest.approx(0.2, abs=0.01)
        assert pred.total_time.mean == pytest.approx(10.1, abs=0.01)
    # Threshold 5.01 pages < 10 always-dirty pages: never converges.
    for pred in both(prof, runs=5, bandwidth=bw, downtime_limit=0.05,
                     max_rounds=20):
        assert pred.converges == 0
        assert math.isinf(pred.total_time.mean)
        assert math.isinf(pred.total_time.quantile(0.5))


def test_epoch_length_is_whole_check_windows():
    # With pages left over at the sync, an epoch lasts whole 100 ms windows.
    rng = np.random.default_rng(0)
    rates = np.zeros(4000)
    rates[rng.choice(4000, 800, replace=False)] = 3.0
    prof = DirtyProfile.from_rates(rates)
    st = MigrationSettings(bandwidth=395 * WIRE, downtime_limit=0.3)
    guest = montecarlo._Guest(prof, st, rng)
    sent, length, nbytes, _, _ = montecarlo._epoch(guest, st,
                                                   np.arange(4000))
    assert length == pytest.approx(round(length / 0.1) * 0.1)
    assert 4000 - sent < st.threshold_pages(PAGE)
    assert nbytes == sent * WIRE


@pytest.mark.parametrize("mib,pages", [(3, 77), (4, 103), (8, 205),
                                       (32, 818)])
def test_a_window_carries_the_page_that_crosses_its_quota(mib, pages):
    # QEMU 7.2: quota max-bandwidth / 10 bytes per 100 ms; pages are sent
    # while rate_limit_used <= rate_limit_max (qemu_file_rate_limit).
    st = MigrationSettings(bandwidth=mib * 2 ** 20, downtime_limit=0.05)
    quota = mib * 2 ** 20 // 10
    assert (pages - 1) * WIRE <= quota < pages * WIRE
    assert st.send_rate(PAGE) == pytest.approx(pages * WIRE / 0.1)
    # QEMU's threshold uses the bandwidth it measured: the send rate.
    assert st.threshold_pages(PAGE) == pytest.approx(
        pages * WIRE / 0.1 * 0.05 / PAGE)
    # The page-level simulator sends that many pages per window.
    prof = DirtyProfile.from_histogram([], [], idle_pages=20 * pages)
    guest = montecarlo._Guest(prof, st, np.random.default_rng(0))
    sent, length, nbytes, starts, _ = montecarlo._epoch(
        guest, st, np.arange(20 * pages))
    assert starts[pages] == pytest.approx(0.1)


# QEMU 10.0: a byte counts once flushed, 32 pages at a time.  The bytes per
# window QEMU 10.0.2 sent here (its trace, bytes flushed per 100 ms) were
# 525,330 / 919,314 / 1,050,642 / 3,414,546 at 4 / 8 / 10 / 32 MiB/s: these
# page counts plus 18 bytes of section header, EOS and footer.
@pytest.mark.parametrize("mib,pages,measured", [
    (4, 128, 525330), (8, 224, 919314), (10, 256, 1050642),
    (32, 832, 3414546)])
def test_qemu_10_counts_the_rate_limit_per_flush(mib, pages, measured):
    st = MigrationSettings(bandwidth=mib * 2 ** 20, downtime_limit=0.05,
                           qemu_version="10.0")
    assert pages % precopy.PAGES_PER_FLUSH == 0
    assert pages * WIRE + 18 == measured
    assert st.send_rate(PAGE) == pytest.approx(pages * WIRE / 0.1)
    assert st.threshold_pages(PAGE) == pytest.approx(
        pages * WIRE / 0.1 * 0.05 / PAGE)
    # 7.2 at the same limit sends less (up to 25% less, at 4 MiB/s)
    old = MigrationSettings(bandwidth=mib * 2 ** 20, downtime_limit=0.05)
    assert old.send_rate(PAGE) <= st.send_rate(PAGE)
    # and the simulator follows the version
    prof = DirtyProfile.from_histogram([], [], idle_pages=20 * pages)
    guest = montecarlo._Guest(prof, st, np.random.default_rng(0))
    sent, length, nbytes, starts, _ = montecarlo._epoch(
        guest, st, np.arange(20 * pages))
    assert starts[pages] == pytest.approx(0.1)


def test_the_models_follow_the_qemu_version():
    # 4 MiB/s: 10.0 sends 25% more than 7.2, so a first pass of 64 MiB
    # ends sooner, in the analytic model and in the simulator alike
    prof = DirtyProfile.from_histogram([], [], idle_pages=16384)
    times = {}
    for version in ("7.2", "10.0"):
        st = MigrationSettings(bandwidth=4 * 2 ** 20, downtime_limit=0.05,
                               qemu_version=version)
        a = analytic.predict(prof, st).total_time.mean
        m = montecarlo.simulate(prof, st, runs=20, seed=1).total_time.mean
        assert a == pytest.approx(m, rel=0.02)
        times[version] = a
    # 103 pages a window on 7.2, 128 (four flushes of 32) on 10.0
    assert times["7.2"] / times["10.0"] == pytest.approx(128 / 103,
                                                         rel=0.02)


@pytest.mark.parametrize("value,want", [
    ("7.2", "7.2"), ("10.0.2", "10.0"),
    ("1:10.0.2+ds-2+deb13u1~bpo12+1", "10.0"),
    ("7.2.22", "7.2"), (10000002, "10.0"), (7002022, "7.2"),
    ({"major": 10, "minor": 0, "micro": 2}, "10.0"), ("8.1", "8.1"),
    ("10.0-2", "10.0")])
def test_qemu_version_forms(value, want):
    assert precopy.qemu_version(value) == want


@pytest.mark.parametrize("value", [
    "", "ten", "10", "1.5", "100.0", None, True, -1, {"major": 10}, "10.x",
    "10.0rc1", "10.1a5", {"major": float("inf"), "minor": 0},
    {"major": 10, "minor": "0"}, "9" * 5000 + ".0", 3.5])
def test_qemu_version_refuses(value):
    with pytest.raises(ValueError):
        precopy.qemu_version(value)
    with pytest.raises(ValueError):
        MigrationSettings(bandwidth=1e6, downtime_limit=0.1,
                          qemu_version=value)


def test_the_flushed_count_starts_at_8_2():
    assert precopy.pages_per_count("8.1") == 1
    assert precopy.pages_per_count("8.2") == precopy.PAGES_PER_FLUSH
    assert precopy.pages_per_count("7.2") == 1


def test_rate_order_and_cleared_log_reduce_resends():
    # The paper's point: with the log cleared at send time, sending hot pages
    # last means fewer of them are dirtied again before the sync.
    rng = np.random.default_rng(4)
    rates = np.zeros(8192)
    rates[rng.choice(8192, 300, replace=False)] = 30.0
    rates[rng.choice(8192, 3000, replace=False)] = 0.02
    prof = DirtyProfile.from_rates(rates)
    kw = dict(bandwidth=30e6, downtime_limit=0.02, dirty_log="clear",
              runs=200, seed=1)
    addr = simulate(prof, order="address", **kw)
    rate = simulate(prof, order="rate", **kw)
    assert rate.total_time.mean < addr.total_time.mean
    assert rate.bytes_sent.mean < addr.bytes_sent.mean


def test_simulator_is_seeded_and_reports_progress():
    prof = DirtyProfile.from_histogram([2.0], [500], idle_pages=1500)
    seen = []
    a = simulate(prof, 2e6, 0.05, runs=7, seed=3,
                 progress=lambda d, n: seen.append((d, n)))
    b = simulate(prof, 2e6, 0.05, runs=7, seed=3)
    assert seen == [(i, 7) for i in range(1, 8)]
    np.testing.assert_array_equal(a.total_time.means, b.total_time.means)


@pytest.mark.parametrize("kw, name", [
    (dict(bandwidth=0, downtime_limit=0.1), "bandwidth"),
    (dict(bandwidth=-1e6, downtime_limit=0.1), "bandwidth"),
    (dict(bandwidth=float("nan"), downtime_limit=0.1), "bandwidth"),
    (dict(bandwidth=float("inf"), downtime_limit=0.1), "bandwidth"),
    (dict(bandwidth=1e6, downtime_limit=0), "downtime_limit"),
    (dict(bandwidth=1e6, downtime_limit=-0.1), "downtime_limit"),
    (dict(bandwidth=1e6, downtime_limit=0.1, dirty_log="x"), "dirty_log"),
    (dict(bandwidth=1e6, downtime_limit=0.1, order="x"), "order"),
    (dict(bandwidth=1e6, downtime_limit=0.1, max_rounds=0), "max_rounds"),
    (dict(bandwidth=1e6, downtime_limit=0.1, check_interval=0),
     "check_interval"),
    (dict(bandwidth=1e6, downtime_limit=0.1, switchover_time=-1),
     "switchover_time"),
])
def test_bad_settings_name_the_argument(kw, name):
    prof = DirtyProfile.from_histogram([1.0], [10])
    with pytest.raises(ValueError, match=name):
        predict(prof, **kw)
    with pytest.raises(ValueError, match="runs"):
        simulate(prof, 1e6, 0.1, runs=0)


def test_public_api_shape():
    rates = np.zeros(4096)
    rates[:500] = 2.0
    profile = DirtyProfile.from_rates(rates, page_size=4096)
    pred = predict(profile, bandwidth=20e6, downtime_limit=0.1)
    for d in (pred.total_time, pred.downtime, pred.bytes_sent, pred.rounds):
        assert d.mean > 0 or d is pred.downtime
        assert d.quantile(0.95) >= d.quantile(0.5)
    assert 0 <= pred.converges <= 1
    assert pred.converges_within(1) <= pred.converges_within(5)
    assert set(pred.to_dict()) >= {"total_time_s", "downtime_s",
                                   "bytes_sent", "rounds", "converges"}
