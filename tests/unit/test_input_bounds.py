"""The bounds of every input (rtmig_nova.bounds) and the cases of issue 12
that broke the command's contract: each must now be one clean error line
and exit 2, or an answer with nothing on stderr."""

import gzip
import json
import os
import re
import tracemalloc
import warnings

import numpy as np
import pytest

from tests.cli_helpers import assert_one_error_line, run

from rtmig_nova import bounds
from rtmig_nova import safeio
from rtmig_nova.cli import profiles as cli_profiles
from rtmig_nova.model import DirtyProfile, ProfileError
from rtmig_nova.model import flavor
from rtmig_nova.model.distribution import Distribution

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
PREDICT = ["predict", "--bandwidth", "100MiB/s", "--downtime-limit", "300ms"]


def _error(capsys, *argv):
    """The one error line of ``rtmig ARGV`` (asserting there is one)."""
    code, out, err = run(capsys, *argv)
    assert_one_error_line(code, out, err)
    return err


def _answer(capsys, *argv):
    """stdout of ``rtmig ARGV``, which must answer with nothing on stderr
    and no warning (a RuntimeWarning becomes an internal error here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert err == ""
    return out


# -- the table ----------------------------------------------------------------


def test_docs_state_every_bound():
    """docs/cli.md tabulates rtmig_nova.bounds.TABLE: each row's name and
    range as the messages print it."""
    with open(os.path.join(REPO, "docs", "cli.md"), encoding="utf-8") as f:
        docs = f.read()
    for name, bound, _where in bounds.TABLE:
        row = f"| {name} | {bound.range_text} |"
        assert row in docs, row
    for what, limit in bounds.FILE_LIMITS:
        assert f"| {what} | {bounds.fmt('size', limit)} |" in docs, what


@pytest.mark.parametrize("name, bound, where", bounds.TABLE)
def test_each_bound_refuses_just_outside_and_takes_its_ends(name, bound,
                                                            where):
    lo, hi = bound.low, bound.high
    assert bound.check(hi, "x") == hi
    if not bound.low_open:
        assert bound.check(lo, "x") == lo
    for outside in ((lo if bound.low_open else lo - max(abs(lo), 1)),
                    hi * 2 + 1, float("nan"), float("inf")):
        if bound.kind in ("count", "us", "ns", "size") and \
                isinstance(outside, float) and np.isfinite(outside):
            outside = int(outside)
        with pytest.raises(bounds.BoundError, match=r"^opt: .*") as e:
            bound.check(outside, "opt")
        assert "\n" not in str(e.value)


def test_the_flavor_contract_uses_the_same_bounds(capsys):
    """A downtime QEMU cannot take is refused alike by predict, plan,
    reserve, the flavor's extra specs and the planner's settings."""
    assert flavor.MAX_DOWNTIME == bounds.DOWNTIME_LIMIT.high == 2000
    assert flavor.MAX_DEADLINE == bounds.DEADLINE.high
    assert flavor.MAX_NET_RATE == bounds.NET_RATE.high
    with pytest.raises(flavor.SpecError, match="2000 s"):
        flavor.check_spec("rtmig:max_downtime", "2001s")
    assert flavor.check_spec("rtmig:max_downtime", "2000s") == 2000
    for argv in (PREDICT[:3] + ["--downtime-limit", "2001s"],
                 ["plan", "--max-downtime", "2001s"],
                 ["reserve", "apply", "--domain", "vm", "--bandwidth",
                  "1MiB/s", "--downtime-limit", "2001s"],
                 ["flavor", "f", "--vcpus", "1", "--vcpu-reservation",
                  "1ms/10ms", "--deadline", "60s", "--max-downtime",
                  "2001s"]):
        assert "1 ms to 2000 s" in _error(capsys, *argv), argv


def test_one_confidence_bound_for_the_flavor_and_the_command_line(capsys):
    """rtmig:confidence plans with the same planner as --confidence and
    [rtmig] confidence: the flavor refused 0.99999, which plan answered
    (and Nova's [rtmig] confidence took)."""
    assert flavor.MAX_CONFIDENCE == bounds.CONFIDENCE.high
    assert [n for n, b, _ in bounds.TABLE if b.kind == "probability"] == \
        ["confidence"]
    top = repr(bounds.CONFIDENCE.high)
    assert flavor.check_spec("rtmig:confidence", top) == \
        bounds.CONFIDENCE.high
    doc = json.loads(_answer(capsys, "plan", "--confidence", top, "--json"))
    assert doc["feasible"] is True
    flavor_argv = ["flavor", "f", "--vcpus", "1", "--vcpu-reservation",
                   "1ms/10ms", "--deadline", "60s", "--max-downtime",
                   "300ms", "--confidence"]
    _answer(capsys, *flavor_argv, top)
    for over in ("0.9999991", "1", "0"):
        for argv in (["plan", "--confidence", over], flavor_argv + [over]):
            err = _error(capsys, *argv)
            assert "--confidence" in err or "rtmig:confidence" in err
        with pytest.raises(flavor.SpecError, match="rtmig:confidence"):
            flavor.check_spec("rtmig:confidence", over)
    # The same message, naming the same range.
    for argv in (["plan", "--confidence", "0.9999991"],
                 flavor_argv + ["0.9999991"]):
        assert "more than 0 and at most 0.999999" in _error(capsys, *argv)


# -- numbers too large for the arithmetic (were OverflowError) ----------------


@pytest.mark.parametrize("extra, option", [
    (["--bandwidth", "1e300"], "--bandwidth"),
    (["--downtime-limit", "1e300"], "--downtime-limit"),
    (["--setup-time-sd", "1e300"], "--setup-time-sd"),
    (["--send-rate-sd", "2"], "--send-rate-sd"),
    (["--send-rate-sd", "nan"], "--send-rate-sd"),
    (["--switchover-time", "1e300"], "--switchover-time"),
    (["--max-rounds", "99999999999999999999"], "--max-rounds"),
    (["--link-rate", "1e308"], "--link-rate"),
])
def test_huge_numbers_are_refused_naming_the_limit(capsys, extra, option):
    argv = PREDICT + extra
    err = _error(capsys, *argv)
    assert err.startswith(f"rtmig: error: {option}: ")
    assert " to " in err and "internal error" not in err


@pytest.mark.parametrize("option, value", [
    ("--emulator-quota", "1e300s"), ("--deadline-runtime", "1e300s")])
def test_reserve_durations_in_whole_units_are_bounded(capsys, option, value):
    argv = ["reserve", "apply", "--domain", "vm", "--bandwidth", "1MiB/s",
            "--downtime-limit", "300ms", option, value]
    if option.startswith("--deadline"):
        argv += ["--deadline-thread", "1", "--deadline-period", "10ms"]
    assert f"{option}: " in _error(capsys, *argv)


def test_downtime_limit_beyond_qemus_maximum(capsys):
    err = _error(capsys, *PREDICT[:3], "--downtime-limit", "2001s")
    assert "--downtime-limit: '2001s'" in err
    assert "2000 s" in err and "MAX_MIGRATE_DOWNTIME_SECONDS" in err
    _answer(capsys, *PREDICT[:3], "--downtime-limit", "2000s", "--json")


def test_check_interval_of_one_microsecond(capsys):
    err = _error(capsys, *PREDICT, "--check-interval", "1us")
    assert "--check-interval: '1us'" in err and "1 ms to 1 s" in err
    _answer(capsys, *PREDICT, "--check-interval", "1ms", "--json")


# -- warnings on valid requests -----------------------------------------------


@pytest.mark.parametrize("link", ["20Gbit/s", "100Gbit/s", "10Tbit/s"])
def test_fast_links_plan_without_warnings(capsys, link):
    doc = json.loads(_answer(capsys, "plan", "--link-capacity", link,
                             "--json"))
    assert 0.0 <= doc["probability"] <= 1.0


def test_cdf_never_exceeds_the_converged_mass():
    # Weights whose float sum is an ulp above 1 after normalisation.
    rng = np.random.default_rng(3)
    for _ in range(200):
        w = rng.random(7) * 10.0 ** rng.integers(-300, 3, 7)
        d = Distribution(rng.normal(0, 1, 7), np.zeros(7), w)
        p = d.cdf(np.array([-1e9, 0.0, 1e9]))
        assert ((0.0 <= p) & (p <= d.converged)).all()


# -- bounded reads ------------------------------------------------------------


def _valid_profile_doc():
    return DirtyProfile.from_histogram([0.5, 20.0], [10, 3],
                                       idle_pages=100).to_dict()


def test_gzip_bomb_is_refused_without_inflating_it(tmp_path):
    # Each member inflates to 8 MiB of spaces: 256 of them are 2 GiB, from
    # a file of a few hundred kilobytes.
    member = gzip.compress(b" " * (8 * 2 ** 20), compresslevel=9)
    bomb = tmp_path / "bomb.json.gz"
    bomb.write_bytes(member * 256)
    assert bomb.stat().st_size < bounds.MAX_PROFILE_BYTES
    tracemalloc.start()
    try:
        with pytest.raises(ProfileError, match="expands to more than 64 MiB"):
            DirtyProfile.load(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * bounds.MAX_PROFILE_BYTES


def test_gzip_of_one_member_beyond_the_limit(capsys, tmp_path):
    bomb = tmp_path / "one.json.gz"
    bomb.write_bytes(gzip.compress(b" " * (bounds.MAX_PROFILE_BYTES + 1),
                                   compresslevel=1))
    err = _error(capsys, "profile", "show", "--profile", bomb)
    assert "--profile: " in err and "expands to more than" in err


def test_multi_member_gzip_within_the_limit_reads():
    doc = json.dumps(_valid_profile_doc()).encode()
    half = len(doc) // 2
    data = gzip.compress(doc[:half]) + gzip.compress(doc[half:])
    assert safeio.gunzip(data, "x", len(doc)) == doc
    with pytest.raises(safeio.ReadError, match="expands"):
        safeio.gunzip(data, "x", len(doc) - 1)


@pytest.mark.parametrize("kind", ["profile", "plan", "state"])
def test_deep_json_is_refused_not_a_recursion_error(capsys, tmp_path, kind):
    deep = "[" * 100000 + "]" * 100000
    if kind == "profile":
        path = tmp_path / "deep.json"
        path.write_text(deep)
        argv = ["profile", "show", "--profile", path]
    elif kind == "plan":
        path = tmp_path / "deep.json"
        path.write_text(deep)
        argv = ["reserve", "apply", "--domain", "vm", "--plan", path]
    else:
        # show lists it as refused; release of it is the error.
        (tmp_path / "abc.json").write_text(deep)
        assert "nested deeper than 32 levels" in _answer(
            capsys, "reserve", "show", "--state-dir", tmp_path)
        argv = ["reserve", "release", "abc", "--state-dir", tmp_path]
    err = _error(capsys, *argv)
    assert "nested deeper than 32 levels" in err
    assert "RecursionError" not in err


def test_moderately_deep_metadata_is_refused_too(tmp_path):
    doc = _valid_profile_doc()
    node = doc["metadata"]
    for _ in range(40):
        node["x"] = {}
        node = node["x"]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ProfileError, match="nested deeper"):
        DirtyProfile.load(path)


def test_file_size_limits(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(bounds, "MAX_PROFILE_BYTES", 1000)
    monkeypatch.setattr(bounds, "MAX_DOCUMENT_BYTES", 1000)
    big = tmp_path / "big.json"
    big.write_text(" " * 1001)
    assert "larger than 1000 bytes" in _error(
        capsys, "profile", "show", "--profile", big)
    assert "larger than 1000 bytes" in _error(
        capsys, "reserve", "apply", "--domain", "vm", "--plan", big)


@pytest.mark.parametrize("field, value, message", [
    ("page_size", 10 ** 30, "page_size"),
    ("page_size", 3000, "power of two"),
    ("idle_pages", 10 ** 30, "idle_pages"),
    ("idle_pages", 2 ** 40, "more than a guest holds"),
    ("pages", [2 ** 70], "histogram pages"),
    ("rates", [10 ** 400, 1.0], "histogram rates"),
    ("rates", [1e12, 1.0], "page write rate"),
])
def test_profile_fields_beyond_their_bounds(tmp_path, field, value, message):
    doc = _valid_profile_doc()
    if field == "page_size":
        doc["page_size"]["value"] = value
    elif field in ("pages", "rates"):
        doc["histogram"][field] = value
    else:
        doc[field] = value
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ProfileError, match=message) as e:
        DirtyProfile.load(path)
    assert str(e.value).startswith(str(path))
    assert "\n" not in str(e.value)


# -- memory bounds ------------------------------------------------------------


def test_simulating_a_1_tib_guest_is_refused_before_allocating(capsys,
                                                               tmp_path):
    path = tmp_path / "tib.json"
    pages = 2 ** 40 // 4096
    DirtyProfile.from_histogram([1.0, 100.0], [pages // 2, 1000],
                                idle_pages=pages // 2 - 1000).save(path)
    # The analytic model predicts the same guest (a histogram) at once;
    # run first, it also imports what simulate needs.
    doc = json.loads(_answer(capsys, "predict", "--profile", path,
                             "--bandwidth", "1GiB/s", "--downtime-limit",
                             "300ms", "--json"))
    assert 0.0 <= doc["converges"] <= 1.0
    import tqdm  # noqa: F401  (simulate's progress bar, imported on use)
    tracemalloc.start()
    try:
        err = _error(capsys, "simulate", "--profile", path, "--bandwidth",
                     "1GiB/s", "--downtime-limit", "300ms", "--runs", "1")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"--profile: {path}: pages to simulate" in err
    assert str(bounds.MAX_SIMULATED_PAGES) in err
    # Its per-page arrays would be 16 GiB.
    assert peak < 64 * 2 ** 20


@pytest.mark.parametrize("command", ["predict", "plan"])
def test_the_simulator_as_a_model_is_bounded_too(capsys, tmp_path, command):
    path = tmp_path / "big.json"
    DirtyProfile.from_histogram(
        [1.0], [1], idle_pages=bounds.MAX_SIMULATED_PAGES).save(path)
    argv = [command, "--profile", path, "--model", "montecarlo"]
    if command == "predict":
        argv += ["--bandwidth", "1GiB/s", "--downtime-limit", "300ms"]
    err = _error(capsys, *argv)
    assert f"--profile: {path}: pages to simulate (--model montecarlo)" \
        in err


def test_simulator_refuses_too_many_pages_from_the_python_api():
    from rtmig_nova.model import simulate
    p = DirtyProfile.from_histogram(
        [1.0], [1], idle_pages=bounds.MAX_SIMULATED_PAGES)
    with pytest.raises(ValueError, match="simulated guest"):
        simulate(p, 1e9, 0.3, runs=1)


def test_many_runs_are_refused_not_a_numpy_error(capsys):
    err = _error(capsys, "simulate", "--bandwidth", "1GiB/s",
                 "--downtime-limit", "300ms", "--runs", "999999999999999999")
    assert "--runs: " in err and "1 to 1000000" in err


# -- config files -------------------------------------------------------------

FLOAT_OPTIONS = ("check_interval", "switchover_time", "setup_time",
                 "setup_time_sd", "confidence", "cpu_cost_per_page",
                 "cpu_margin", "deadline_period")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "1e400"])
@pytest.mark.parametrize("option", FLOAT_OPTIONS)
def test_config_non_finite_values_refused_like_the_cli(capsys, tmp_path,
                                                       option, value):
    conf = tmp_path / "rtmig.conf"
    conf.write_text(f"[rtmig]\n{option} = {value}\n")
    err = _error(capsys, "--config-file", conf, *PREDICT)
    assert f"--config-file: {conf}: [rtmig] {option}: " in err
    assert "LocationInfo" not in err


@pytest.mark.parametrize("line, option", [
    ("check_interval = abc", "check_interval"),
    ("max_rounds = 1e3", "max_rounds"),
    ("confidence = 2", "confidence"),
    ("confidence = 0", "confidence"),
    ("max_rounds = 100000", "max_rounds"),
])
def test_config_messages_name_the_option_not_a_repr(capsys, tmp_path, line,
                                                    option):
    conf = tmp_path / "rtmig.conf"
    conf.write_text(f"[rtmig]\n{line}\n")
    err = _error(capsys, "--config-file", conf, *PREDICT)
    assert f"[rtmig] {option}: " in err
    assert "LocationInfo" not in err and "<Locations" not in err


def test_nova_options_refuse_nan(tmp_path):
    from oslo_config import cfg

    from rtmig_nova.conf import nova as nova_conf
    conf = cfg.ConfigOpts()
    nova_conf.register_opts(conf)
    path = tmp_path / "nova.conf"
    path.write_text("[rtmig]\nmigration_cpu = nan\nlink_capacity = inf\n")
    conf(args=[], default_config_files=[str(path)], default_config_dirs=[])
    for name in ("migration_cpu", "link_capacity"):
        with pytest.raises(cfg.ConfigFileValueError):
            getattr(conf.rtmig, name)


# -- messages -----------------------------------------------------------------


def test_write_failure_names_the_output_not_the_temporary(capsys, tmp_path,
                                                          monkeypatch):
    def full_disk(self, path):
        raise OSError(28, "No space left on device", str(path))
    src = tmp_path / "in.csv"
    src.write_text("rate_per_s,pages\n0,10\n1.5,3\n")
    monkeypatch.setattr(DirtyProfile, "save", full_disk)
    dst = tmp_path / "out.json"
    err = _error(capsys, "profile", "convert", src, dst)
    assert f"{dst}: cannot write: No space left on device" in err
    assert ".rtmig-" not in err
    assert os.listdir(tmp_path) == ["in.csv"]


def test_convert_input_errors_name_input(capsys, tmp_path):
    src = tmp_path / "r.csv"
    src.write_text("rate_per_s,pages\n1e12,3\n")
    err = _error(capsys, "profile", "convert", src, tmp_path / "o.json")
    assert err.startswith(f"rtmig: error: INPUT: {src}:2: rate_per_s")


def test_npy_size_limit(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(bounds, "MAX_NPY_BYTES", 1000)
    src = tmp_path / "r.npy"
    np.save(src, np.ones(1000))
    assert "larger than 1000 bytes" in _error(
        capsys, "profile", "convert", src, tmp_path / "o.json")
    assert cli_profiles.read_npy is not None


def test_messages_show_a_bounded_excerpt_of_long_input(capsys):
    err = _error(capsys, *PREDICT[:3], "--downtime-limit", "9" * 5000)
    assert len(err) < 400
    assert re.search(r"--downtime-limit: ", err)


def test_a_pipe_is_refused_not_waited_on(capsys, tmp_path):
    fifo = tmp_path / "p.json"
    os.mkfifo(fifo)
    for argv in (["profile", "show", "--profile", fifo],
                 ["profile", "convert", tmp_path / "r.npy",
                  tmp_path / "o.json"],
                 ["reserve", "apply", "--domain", "vm", "--plan", fifo]):
        if "convert" in argv:
            os.mkfifo(argv[2])
        assert "not a regular file" in _error(capsys, *argv)


def test_file_values_are_shown_as_json_not_python(tmp_path):
    doc = _valid_profile_doc()
    doc["page_size"]["value"] = None
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ProfileError, match="got null") as e:
        DirtyProfile.load(path)
    assert "None" not in str(e.value)


@pytest.mark.parametrize("key", ["bandwidth_bytes_per_s", "downtime_limit_s"])
def test_plan_numbers_too_large_for_a_float(capsys, tmp_path, key):
    code, out, err = run(capsys, "plan", "--json")
    assert code == 0, err
    doc = json.loads(out)
    doc[key] = 10 ** 400
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(doc))
    err = _error(capsys, "reserve", "apply", "--domain", "vm", "--plan",
                 path)
    assert f"--plan: {path}: {key}: a 401-digit number is outside" in err


def test_csv_rate_beyond_its_bound_is_a_profile_error(tmp_path):
    """Nova's profile sources catch ProfileError, not any ValueError."""
    path = tmp_path / "r.csv"
    path.write_text("rate_per_s,pages\n1000000001.0,0\n")
    with pytest.raises(ProfileError, match="r.csv:2: rate_per_s"):
        DirtyProfile.load_csv(path)


def test_experiment_runs_are_bounded_before_they_are_listed(capsys):
    """experiment validate listed workloads x bandwidths x repetitions runs
    (real migrations) before anything else: 20000 rates x 1000
    repetitions were 10**8 of them in memory."""
    rates = ",".join(["8MiB/s"] * 20000)
    err = _error(capsys, "experiment", "validate", "--bandwidths", rates,
                 "--repetitions", "1000", "--workloads", "video")
    assert "20000000 runs (1 workload x 20000 bandwidths x 1000 " \
        "repetitions)" in err
    assert "experiment runs range, 1 to 10000" in err


def test_simulation_work_is_bounded_and_results_within_it_unchanged(
        capsys, tmp_path, monkeypatch):
    """runs x rounds x pages within their own bounds could take centuries
    (about 1e8 page-rounds a second): the rounds simulated are counted
    against bounds.SIMULATION_WORK; a simulation within it is the same."""
    import dataclasses
    path = tmp_path / "p.json"
    # 1024 pages that never converge at 1 MiB/s: every run takes
    # max_rounds rounds.
    DirtyProfile.from_histogram([1e3], [1000], idle_pages=24).save(path)
    argv = ["simulate", "--profile", path, "--bandwidth", "1MiB/s",
            "--downtime-limit", "1ms", "--max-rounds", "50", "--runs", "4",
            "--seed", "7", "--no-progress", "--json"]
    before = _answer(capsys, *argv)
    # Exactly enough for the 4 runs of 50 rounds: the same answer.
    monkeypatch.setattr(bounds, "SIMULATION_WORK", dataclasses.replace(
        bounds.SIMULATION_WORK, high=4 * 50 * 1024))
    assert _answer(capsys, *argv) == before
    monkeypatch.setattr(bounds, "SIMULATION_WORK", dataclasses.replace(
        bounds.SIMULATION_WORK, high=4 * 50 * 1024 - 1))
    err = _error(capsys, *argv)
    assert "simulate: more than 204799 page-rounds after 3 of 4 runs of " \
        "1024 pages" in err and "simulation work range" in err


@pytest.mark.parametrize("argv, why", [
    (["--scenarios", "stock,nova"], "--scenarios: nova: have stock, "
                                    "auto-converge, rtmig"),
    (["--scenarios", ","], "--scenarios: none given"),
    (["--repetitions", "0"], "outside the repetitions range"),
    (["--calibration", "/nonexistent/cal.json"],
     "--calibration: /nonexistent/cal.json: No such file"),
])
def test_experiment_isolation_refuses_bad_input_up_front(capsys, argv, why):
    err = _error(capsys, "experiment", "isolation", *argv)
    assert why in err


def test_experiment_isolation_refuses_a_calibration_that_is_not_one(
        capsys, tmp_path):
    bad = tmp_path / "cal.json"
    bad.write_text('{"setup_time_s": "soon"}')
    err = _error(capsys, "experiment", "isolation", "--calibration",
                 str(bad))
    assert "--calibration: " in err and "setup_time_s" in err
    bad.write_text("[1, 2")
    err = _error(capsys, "experiment", "isolation", "--calibration",
                 str(bad))
    assert "not JSON" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="the root check comes first")
def test_experiment_isolation_refuses_a_bad_profile_before_the_testbed(
        capsys, tmp_path):
    (tmp_path / "profile.json").write_text('{"version": 1, "rates": "x"}')
    err = _error(capsys, "experiment", "isolation", "--output-dir",
                 str(tmp_path), "--scenarios", "rtmig")
    assert "profile.json" in err and "remove it to capture anew" in err
    (tmp_path / "profile.json").unlink()
    (tmp_path / "isolation.csv").write_bytes(b"scenario,run\n\xff,\x00")
    err = _error(capsys, "experiment", "isolation", "--output-dir",
                 str(tmp_path))
    assert "cannot resume" in err


def test_experiment_isolation_refuses_a_calibrations_bad_qemu(capsys,
                                                              tmp_path):
    cal = tmp_path / "cal.json"
    for bad in ('"garbage"', '9', '["x"]'):
        cal.write_text('{"setup_time_s": 0.2, "switchover_time_s": 0.01, '
                       '"qemu_version": %s}' % bad)
        err = _error(capsys, "experiment", "isolation", "--calibration",
                     str(cal))
        assert "--calibration: " in err
    cal.write_text("[]")
    assert "not a calibration" in _error(
        capsys, "experiment", "isolation", "--calibration", str(cal))
