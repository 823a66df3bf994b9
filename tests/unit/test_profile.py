import gzip
import json

import numpy as np
import pytest

from rtmig_nova.model import DirtyProfile, ProfileError
from rtmig_nova.model import laws
from rtmig_nova.model import profile as profile_mod


def test_from_rates_histogram_keeps_totals_and_means():
    rng = np.random.default_rng(0)
    rates = np.zeros(10000)
    rates[:3000] = 10 ** rng.uniform(-3, 3, 3000)
    rates[3000:3100] = 5.0
    p = DirtyProfile.from_rates(rates, page_size=4096, zero_pages=2000)
    assert p.total_pages == 10000
    assert p.idle_pages == 6900
    assert p.zero_pages == 2000
    assert p.active_pages == 3100
    assert p.memory_bytes == 10000 * 4096
    # Total write rate is preserved exactly (bins keep their mean rate).
    assert p.write_rate == pytest.approx(rates.sum(), rel=1e-12)
    # Bins are narrow: a bin's rates differ by at most a factor 1 + 1/32.
    assert np.all(np.diff(p.rates) > 0)
    assert p.rates.size < 3100
    keys = rates[rates > 0].view(np.int64) >> profile_mod._SHIFT
    for key, mean in zip(np.unique(keys), p.rates):
        members = rates[rates > 0][keys == key]
        assert members.min() <= mean <= members.max()
        assert members.max() / members.min() < 1 + 1 / 32
    # A rate alone in its bin is kept exactly.
    exact = DirtyProfile.from_rates(np.repeat([0.3, 5.0, 0.0], 50))
    assert exact.rates.tolist() == pytest.approx([0.3, 5.0], rel=1e-14)
    assert p.page_rates is not None and p.page_rates.flags.writeable is False


def test_dirty_pages_expectation():
    p = DirtyProfile.from_histogram([1.0, 10.0], [100, 50], idle_pages=10)
    t = 0.1
    expected = 100 * (1 - np.exp(-0.1)) + 50 * (1 - np.exp(-1.0))
    assert p.dirty_pages(t) == pytest.approx(expected)
    assert p.dirty_rate(t) == pytest.approx(expected * 4096 / t)


def test_from_histogram_moves_rate_zero_to_idle():
    p = DirtyProfile.from_histogram([0.0, 2.0], [7, 3], idle_pages=5,
                                    zero_pages=4)
    assert p.idle_pages == 12 and p.active_pages == 3 and p.zero_pages == 4


@pytest.mark.parametrize("bad, word", [
    ([1.0, -1.0], "negative"),
    ([1.0, float("nan")], "NaN"),
    ([float("inf")], "infinite"),
    ([], "non-empty"),
])
def test_bad_rates_name_the_argument(bad, word):
    with pytest.raises(ValueError, match="rates") as e:
        DirtyProfile.from_rates(bad)
    assert word in str(e.value)


def test_negative_zero_rate_is_idle():
    p = DirtyProfile.from_rates([-0.0, 0.0, 1.0])
    assert p.idle_pages == 2 and p.active_pages == 1


@pytest.mark.parametrize("kwargs, name", [
    ({"page_size": 0}, "page_size"),
    ({"page_size": 4096.5}, "page_size"),
    ({"zero_pages": -1}, "zero_pages"),
    ({"zero_pages": 10}, "zero_pages"),
])
def test_bad_profile_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        DirtyProfile.from_rates([0.0, 1.0], **kwargs)


def test_empty_histogram_rejected():
    with pytest.raises(ValueError, match="empty"):
        DirtyProfile.from_histogram([], [], idle_pages=0)


def test_observations_equal_intervals_mle():
    # Dirty in k of m intervals of length tau: rate = -ln(1 - k/m) / tau.
    m, tau = 10, 0.5
    obs = [np.array([0, 1]) if i < 4 else np.array([1]) for i in range(m)]
    p = DirtyProfile.from_observations(obs, tau, total_pages=3)
    r = p.page_rates
    assert r[0] == pytest.approx(-np.log(1 - 4 / 10) / tau)
    # Dirty every time: finite, the hottest, and dirty in (nearly) every
    # 100 ms window: the continuity-corrected bound (6/s for half-second
    # intervals) would have it clean in 55% of them.
    assert np.isfinite(r[1]) and r[1] == pytest.approx(
        laws.SATURATED_POISSON_RATE)
    assert -np.expm1(-r[1] * 0.1) == pytest.approx(0.999)
    # With intervals short enough to resolve more, the bound stays.
    short = DirtyProfile.from_observations(obs, 0.001, total_pages=3)
    assert short.page_rates[1] == pytest.approx(-np.log(1 - 9.5 / 10) / 0.001)
    assert r[2] == 0.0
    assert p.metadata["source"] == "observations"


def test_observations_recover_true_rates():
    # Simulate Poisson writers observed over unequal intervals.
    rng = np.random.default_rng(3)
    true = np.array([0.2, 1.0, 5.0, 20.0])
    pages = np.repeat(true, 500)
    tau = rng.uniform(0.05, 0.3, 400)
    obs = [np.flatnonzero(rng.random(pages.size) < 1 - np.exp(-pages * t))
           for t in tau]
    p = DirtyProfile.from_observations(obs, tau, total_pages=pages.size)
    est = p.page_rates.reshape(4, 500).mean(axis=1)
    np.testing.assert_allclose(est, true, rtol=0.06)


def test_observations_long_and_short_intervals_do_not_overflow():
    # A first interval of 1000 s next to rounds of milliseconds (a capture
    # whose first pass was slow) drives lam * t far past exp's range in
    # the Newton steps; the estimate must stay finite and warning-free.
    import warnings
    obs = [np.array([0, 1, 2]), np.array([0]), np.array([0, 1])]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = DirtyProfile.from_observations(obs, [1000.0, 0.001, 0.01], 10)
    rates = p.page_rates
    assert np.all(np.isfinite(rates))
    # dirty in the 10 ms round: fast; only in the 1000 s one: slow
    assert rates[1] > 10 > 1 > rates[2] > 0 and p.active_pages == 3


def test_observations_bad_input():
    with pytest.raises(ValueError, match="observations"):
        DirtyProfile.from_observations([], 1.0, total_pages=4)
    with pytest.raises(ValueError, match="outside"):
        DirtyProfile.from_observations([np.array([5])], 1.0, total_pages=4)
    with pytest.raises(ValueError, match="intervals"):
        DirtyProfile.from_observations([np.array([1])], [1.0, 2.0],
                                       total_pages=4)
    with pytest.raises(ValueError, match="intervals"):
        DirtyProfile.from_observations([np.array([1])], -1.0, total_pages=4)


def test_aggregate_rate_is_coarse():
    p = DirtyProfile.from_aggregate_rate(2 ** 30, 10e6,
                                         working_set_bytes=2 ** 28)
    assert p.coarse and p.metadata["source"] == "aggregate"
    assert p.total_pages == 2 ** 18 and p.active_pages == 2 ** 16
    assert p.write_rate * 4096 == pytest.approx(10e6)
    with pytest.raises(ValueError, match="dirty_rate"):
        DirtyProfile.from_aggregate_rate(2 ** 30, -1.0)


@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_save_load_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(1)
    p = DirtyProfile.from_rates(rng.exponential(1.0, 5000) *
                                (rng.random(5000) < 0.3), zero_pages=100,
                                metadata={"guest": "t"})
    path = tmp_path / ("p" + suffix)
    p.save(path)
    q = DirtyProfile.load(path)
    np.testing.assert_array_equal(q.rates, p.rates)
    np.testing.assert_array_equal(q.counts, p.counts)
    assert (q.idle_pages, q.zero_pages, q.page_size) == \
        (p.idle_pages, p.zero_pages, p.page_size)
    assert q.metadata["guest"] == "t"


def test_histogram_of_a_large_guest_is_small(tmp_path):
    rng = np.random.default_rng(2)
    rates = np.zeros(2 ** 22)          # 16 GiB
    rates[: 2 ** 20] = np.exp(rng.normal(0, 2, 2 ** 20))
    path = tmp_path / "big.json.gz"
    DirtyProfile.from_rates(rates).save(path)
    assert path.stat().st_size < 64 * 1024


def _write(path, doc):
    path.write_text(json.dumps(doc))
    return path


def _doc():
    return DirtyProfile.from_histogram([1.0], [3], idle_pages=1).to_dict()


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(format="other"), "not an rtmig dirty profile"),
    (lambda d: d.update(version=99), "unsupported profile version"),
    (lambda d: d.update(rate_unit="writes/ms"), "rate_unit"),
    (lambda d: d["page_size"].update(unit="KiB"), "page_size"),
    (lambda d: d.pop("idle_pages"), "missing field"),
    (lambda d: d["histogram"].update(pages=[-3]), "counts"),
    (lambda d: d["histogram"].update(pages=[1.5]), "whole numbers"),
    (lambda d: d["histogram"].update(rates=[-1.0]), "negative"),
    (lambda d: d["histogram"].update(rates=[1.0, 2.0]), "one entry"),
])
def test_invalid_files_give_one_line_errors(tmp_path, mutate, message):
    doc = _doc()
    mutate(doc)
    with pytest.raises(ProfileError) as e:
        DirtyProfile.load(_write(tmp_path / "p.json", doc))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_garbage_and_missing_files(tmp_path):
    junk = tmp_path / "junk.json"
    junk.write_bytes(np.random.default_rng(0).bytes(1000))
    with pytest.raises(ProfileError, match="not a profile file"):
        DirtyProfile.load(junk)
    gz = tmp_path / "trunc.json.gz"
    gz.write_bytes(gzip.compress(b'{"format": "rtmig')[:20])
    with pytest.raises(ProfileError, match="not a profile file"):
        DirtyProfile.load(gz)
    with pytest.raises(ProfileError, match="cannot read"):
        DirtyProfile.load(tmp_path / "missing.json")


def test_embedded_default_profile_is_flagged_synthetic():
    from importlib import resources
    ref = resources.files("rtmig_nova") / "data" / "default-profile.json"
    with resources.as_file(ref) as path:
        p = DirtyProfile.load(path)
    assert p.metadata["synthetic"] is True
    assert p.memory_bytes == 4 * 2 ** 30


# -- CSV histogram ------------------------------------------------------------

def test_csv_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(3)
    p = DirtyProfile.from_rates(rng.exponential(1.0, 5000) *
                                (rng.random(5000) < 0.3), zero_pages=100,
                                page_size=8192)
    path = tmp_path / "p.csv"
    p.save_csv(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "rate_per_s,pages"
    assert lines[1] == f"0,{p.idle_pages}"
    assert len(lines) == 2 + p.rates.size
    q = DirtyProfile.load_csv(path, page_size=8192, zero_pages=100)
    np.testing.assert_array_equal(q.rates, p.rates)
    np.testing.assert_array_equal(q.counts, p.counts)
    assert (q.idle_pages, q.zero_pages, q.page_size) == \
        (p.idle_pages, p.zero_pages, p.page_size)
    assert q.metadata["source"] == "histogram"
    # Not in the file: the defaults apply.
    d = DirtyProfile.load_csv(path)
    assert (d.page_size, d.zero_pages) == (4096, 0)


def test_csv_without_idle_pages(tmp_path):
    path = tmp_path / "hot.csv"
    DirtyProfile.from_histogram([2.5], [10]).save_csv(path)
    assert path.read_text() == "rate_per_s,pages\n0,0\n2.5,10\n"
    q = DirtyProfile.load_csv(path)
    assert (q.idle_pages, q.active_pages) == (0, 10)


def test_csv_lenient_reading(tmp_path):
    path = tmp_path / "h.csv"
    # BOM, CRLF, spaces, comments, blank lines, repeated rate-0 rows.
    path.write_bytes(b"\xef\xbb\xbf rate_per_s , pages \r\n# idle\r\n0,100\r\n"
                     b"\r\n 0.5 , 10 \r\n20,3\r\n0,4\r\n5,0\r\n")
    p = DirtyProfile.load_csv(path, zero_pages=50,
                              metadata={"converted_from": "h.csv"})
    assert (p.idle_pages, p.zero_pages, p.active_pages) == (104, 50, 13)
    assert p.rates.tolist() == [0.5, 20.0]
    assert p.metadata["converted_from"] == "h.csv"


@pytest.mark.parametrize("text, line, message", [
    ("rate,count\n1,2\n", 1, "header must be 'rate_per_s,pages'"),
    ("", 1, "empty file"),
    ("rate_per_s,pages\n", None, "no rows after the header"),
    ("rate_per_s,pages\n# only a comment\n\n", None, "no rows"),
    ("rate_per_s,pages\n0,0\n3,0\n", None, "every row has 0 pages"),
    ("rate_per_s,pages\n0,1\nabc,2\n", 3, "'abc' is not a number"),
    ("rate_per_s,pages\n1,two\n", 2, "pages 'two' is not a number"),
    ("rate_per_s,pages\n1,2.5\n", 2, "pages '2.5' is not a whole number"),
    ("rate_per_s,pages\n-1,2\n", 2, "rate_per_s '-1' is negative"),
    ("rate_per_s,pages\n1,-2\n", 2, "pages '-2' is negative"),
    ("rate_per_s,pages\nnan,2\n", 2, "'nan' is not finite"),
    ("rate_per_s,pages\n1,1\ninf,2\n", 3, "'inf' is not finite"),
    ("rate_per_s,pages\n1,2,3\n", 2, "expected 2 columns"),
    ("rate_per_s,pages\n1\n", 2, "expected 2 columns"),
    ("rate_per_s,pages\n1,99999999999999999999\n", 2, "too large"),
])
def test_csv_errors_name_file_line_and_problem(tmp_path, text, line,
                                               message):
    path = tmp_path / "h.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ProfileError) as e:
        DirtyProfile.load_csv(path)
    msg = str(e.value)
    assert "\n" not in msg
    assert message in msg
    where = f"{path}:{line}: " if line else f"{path}: "
    assert msg.startswith(where), msg


def test_csv_not_utf8_missing_and_bad_arguments(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(b"rate_per_s,pages\n0,1\n1\xe9,2\n")
    with pytest.raises(ProfileError, match=r"latin\.csv:3: .*not UTF-8"):
        DirtyProfile.load_csv(path)
    with pytest.raises(ProfileError, match=r"missing\.csv: cannot read"):
        DirtyProfile.load_csv(tmp_path / "missing.csv")
    ok = tmp_path / "ok.csv"
    ok.write_text("rate_per_s,pages\n0,3\n1,1\n")
    with pytest.raises(ProfileError, match=r"ok\.csv: zero_pages cannot"):
        DirtyProfile.load_csv(ok, zero_pages=4)
    with pytest.raises(ProfileError, match=r"ok\.csv: page_size"):
        DirtyProfile.load_csv(ok, page_size=0)


def test_a_profile_estimated_before_has_its_saturated_pages_raised():
    """Profiles written before the SATURATED floor hold the lower bound
    their intervals give for pages dirty in every interval (5.5 writes/s
    for the testbed's zipf guest, probed in 0.6-3.5 s intervals): read
    back, those pages are raised as a new estimate would have them, and
    no other page moves."""
    tau = [3.5, 1.7, 1.1, 0.9, 0.7, 0.6, 0.6]
    bound, _ = laws.saturated_bounds(tau)
    assert bound < laws.SATURATED_POISSON_RATE
    meta = {"observed_interval_s": tau,
            "observed_dirty_pages": [10] * len(tau)}
    old = DirtyProfile.from_histogram([0.5, bound], [40, 7], idle_pages=100,
                                      metadata=meta)
    back = DirtyProfile.from_dict(old.to_dict())
    assert back.rates.tolist() == pytest.approx(
        [0.5, laws.SATURATED_POISSON_RATE])
    assert back.counts.tolist() == [40, 7]
    assert back.metadata["saturated_raised_pages"] == 7
    # A new estimate from the same kind of intervals agrees.
    obs = [np.arange(7)] * len(tau)
    new = DirtyProfile.from_observations(obs, tau, total_pages=147)
    assert new.page_rates[:7] == pytest.approx(laws.SATURATED_POISSON_RATE)
    # Without the interval record nothing is known: nothing moves.
    bare = DirtyProfile.from_histogram([0.5, bound], [40, 7], idle_pages=100)
    assert DirtyProfile.from_dict(bare.to_dict()).rates[1] == bound
