"""The rtmig command (rtmig_nova.cli), run in-process and once for real.

Needs the package installed (``pip install -e .``) for the model plugins.
Small profiles and few runs keep the whole file fast.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.cli_helpers import assert_one_error_line, run

from rtmig_nova.model import DirtyProfile

PREDICTION_KEYS = {"model", "coarse_profile", "settings", "converges",
                   "total_time_s", "downtime_s", "bytes_sent", "rounds",
                   "profile"}
SUMMARY_KEYS = {"mean", "std", "converged", "p50", "p95", "p99"}
PLAN_KEYS = {"feasible", "reason", "bandwidth_bytes_per_s",
             "downtime_limit_s", "probability", "cpu", "request",
             "prediction", "profile"}
CPU_KEYS = {"share", "runtime_ns", "deadline_ns", "period_ns", "quota_us",
            "cgroup_period_us"}
SHOW_KEYS = {"profile", "memory_bytes", "page_size_bytes", "pages",
             "rate_bins", "write_rate_per_s", "dirty_rate", "decades",
             "synthetic", "coarse", "metadata"}


def strict_json(text):
    """Parse JSON that must not contain NaN or Infinity."""
    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def small_rates(n=2048, active=300, seed=1):
    rng = np.random.default_rng(seed)
    rates = np.zeros(n)
    idx = rng.choice(n, active, replace=False)
    rates[idx] = 10.0 ** rng.uniform(-2, 2.5, active)
    return rates


@pytest.fixture
def small_profile(tmp_path):
    path = tmp_path / "small.json"
    DirtyProfile.from_rates(small_rates(), zero_pages=100).save(path)
    return path


@pytest.fixture
def coarse_profile(tmp_path):
    path = tmp_path / "coarse.json.gz"
    DirtyProfile.from_aggregate_rate(8 * 2 ** 20, 2e6).save(path)
    return path


# -- plan ---------------------------------------------------------------------

def test_plan_without_arguments(capsys):
    code, out, err = run(capsys, "plan")
    assert code == 0, err
    assert "SYNTHETIC profile (not captured from a guest)" in out
    assert "builtin:default" in out
    assert "Feasible:" in out
    for word in ("Bandwidth:", "MiB/s", "bytes/s", "Downtime limit:",
                 " ms", "CPU share:", "SCHED_DEADLINE:", "runtime",
                 "cgroup cpu.max:", "quota", "Probability:", "p95",
                 "P(converge"):
        assert word in out, word
    assert err == ""


def test_plan_json(capsys):
    code, out, err = run(capsys, "plan", "--json")
    assert code == 0, err
    doc = strict_json(out)
    assert set(doc) == PLAN_KEYS
    assert set(doc["cpu"]) == CPU_KEYS
    assert doc["request"] == {"deadline_s": 60.0, "max_downtime_s": 0.3,
                              "confidence": 0.95,
                              "link_capacity_bytes_per_s": 125e6,
                              "cpu_cost_per_page_s": 2.5e-6,
                              "cpu_margin": 1.25, "model": "precopy",
                              "settings": doc["request"]["settings"]}
    assert doc["request"]["settings"]["dirty_log"] == "sync"
    assert doc["profile"]["synthetic"] is True
    assert doc["profile"]["name"] == "builtin:default"
    if doc["feasible"]:
        assert doc["reason"] == ""
        assert doc["probability"] >= 0.95
        # libvirt sets the speed in whole MiB/s, QEMU the limit in ms.
        assert doc["bandwidth_bytes_per_s"] % 2 ** 20 == 0
        assert round(doc["downtime_limit_s"] * 1000, 9).is_integer()
    assert set(doc["prediction"]) >= PREDICTION_KEYS - {"profile"}


def test_plan_infeasible_is_an_answer(capsys):
    code, out, err = run(capsys, "plan", "--deadline", "1s")
    assert code == 0, err
    assert "Feasible:        NO" in out
    assert "Reason:" in out
    code, out, err = run(capsys, "plan", "--deadline", "1s",
                         "--fail-infeasible", "--json")
    assert code == 1
    doc = strict_json(out)
    assert doc["feasible"] is False and doc["reason"]
    assert doc["prediction"] is None


def test_plan_options(capsys, small_profile):
    code, out, err = run(capsys, "plan", "--profile", small_profile,
                         "--deadline", "2s", "--max-downtime", "50ms",
                         "--confidence", "90%", "--link-capacity",
                         "800Mbps", "--cpu-cost-per-page", "5us",
                         "--model", "geometric", "--dirty-log", "clear",
                         "--order", "rate", "--switchover-time", "5ms",
                         "--max-rounds", "50", "--json")
    assert code == 0, err
    doc = strict_json(out)
    req = doc["request"]
    assert {k: req[k] for k in ("deadline_s", "max_downtime_s", "confidence",
                                "link_capacity_bytes_per_s",
                                "cpu_cost_per_page_s", "model")} == {
        "deadline_s": 2.0, "max_downtime_s": 0.05, "confidence": 0.9,
        "link_capacity_bytes_per_s": 100e6, "cpu_cost_per_page_s": 5e-6,
        "model": "geometric"}
    assert req["settings"]["order"] == "rate"
    assert doc["profile"]["synthetic"] is False
    if doc["prediction"] is not None:
        assert doc["prediction"]["model"] == "geometric"
        assert doc["prediction"]["settings"]["dirty_log"] == "clear"
        assert doc["prediction"]["settings"]["order"] == "rate"
        assert doc["prediction"]["settings"]["max_rounds"] == 50
        assert doc["prediction"]["settings"]["switchover_time"] == 0.005


def test_plan_subprocess():
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "rtmig_nova.cli", "plan"],
                          capture_output=True, text=True, timeout=60,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert "SYNTHETIC" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_config_file_sets_defaults(capsys, tmp_path, small_profile):
    conf = tmp_path / "rtmig.conf"
    conf.write_text("[rtmig]\nmodel = geometric\ndirty_log = clear\n"
                    "max_rounds = 17\nconfidence = 0.9\n"
                    f"default_profile = {small_profile}\n")
    code, out, err = run(capsys, "--config-file", conf, "predict",
                         "--bandwidth", "20MiB/s", "--downtime-limit",
                         "30ms", "--json")
    assert code == 0, err
    doc = strict_json(out)
    assert doc["model"] == "geometric"
    assert doc["settings"]["dirty_log"] == "clear"
    assert doc["settings"]["max_rounds"] == 17
    assert doc["profile"]["name"] == str(small_profile)
    # Given after the subcommand too; command-line options win.
    code, out, err = run(capsys, "plan", "--config-file", conf, "--json",
                         "--model", "precopy")
    doc = strict_json(out)
    assert doc["request"]["confidence"] == 0.9
    if doc["prediction"] is not None:
        assert doc["prediction"]["model"] == "precopy"
    # The global configuration is left as it was.
    code, out, err = run(capsys, "predict", "--bandwidth", "1e8",
                         "--downtime-limit", "0.3", "--json")
    doc = strict_json(out)
    assert doc["model"] == "precopy"
    assert doc["settings"]["max_rounds"] == 200
    assert doc["profile"]["name"] == "builtin:default"


# -- predict ------------------------------------------------------------------

def test_predict_json(capsys, small_profile):
    code, out, err = run(capsys, "predict", "--profile", small_profile,
                         "--bandwidth", "20MiB/s", "--downtime-limit",
                         "30ms", "--json")
    assert code == 0, err
    doc = strict_json(out)
    assert set(doc) == PREDICTION_KEYS
    for key in ("total_time_s", "downtime_s", "bytes_sent", "rounds"):
        assert set(doc[key]) == SUMMARY_KEYS
    assert doc["settings"]["bandwidth"] == 20 * 2 ** 20
    assert doc["settings"]["downtime_limit"] == 0.03
    assert doc["model"] == "precopy"


def test_predict_for_a_qemu_version(capsys, tmp_path):
    # 4 MiB/s: QEMU 10.0 sends 25% more than 7.2 (its rate limit counts
    # 32 pages at a time), so an idle guest's migration is shorter
    idle = tmp_path / "idle.json"
    DirtyProfile.from_histogram([], [], idle_pages=8192).save(idle)
    means = {}
    for version in ("7.2", "10.0.2"):
        code, out, err = run(capsys, "predict", "--profile", idle,
                             "--bandwidth", "4MiB/s", "--downtime-limit",
                             "30ms", "--qemu-version", version, "--json")
        assert code == 0, err
        doc = strict_json(out)
        assert doc["settings"]["qemu_version"] == version[:4]
        means[version] = doc["total_time_s"]["mean"]
    assert means["7.2"] / means["10.0.2"] == pytest.approx(128 / 103,
                                                           rel=0.02)
    code, out, err = run(capsys, "predict", "--profile", idle,
                         "--bandwidth", "4MiB/s", "--downtime-limit",
                         "30ms", "--qemu-version", "ten")
    assert_one_error_line(code, out, err)
    assert "--qemu-version" in err


def test_predict_table(capsys, small_profile):
    code, out, err = run(capsys, "predict", "--profile", small_profile,
                         "--bandwidth", "160Mbit/s", "--downtime-limit",
                         "30ms")
    assert code == 0, err
    for word in ("total time", "downtime", "bytes sent", "rounds", "mean",
                 "p50", "p95", "p99", "P(converge"):
        assert word in out
    assert "SYNTHETIC" not in out


def test_predict_not_converged_is_null_and_labelled(capsys):
    code, out, err = run(capsys, "predict", "--bandwidth", "1MiB/s",
                         "--downtime-limit", "1ms", "--max-rounds", "5",
                         "--json")
    assert code == 0, err
    doc = strict_json(out)
    assert doc["converges"] < 0.5
    assert doc["total_time_s"]["mean"] is None
    assert doc["total_time_s"]["p99"] is None
    code, out, err = run(capsys, "predict", "--bandwidth", "1MiB/s",
                         "--downtime-limit", "1ms", "--max-rounds", "5")
    assert code == 0
    assert "not converged" in out
    assert "does not converge with probability" in out


@pytest.mark.parametrize("model", ["geometric", "qemu-estimate"])
def test_predict_other_models(capsys, small_profile, model):
    code, out, err = run(capsys, "predict", "--profile", small_profile,
                         "--bandwidth", "20MiB/s", "--downtime-limit",
                         "30ms", "--model", model, "--json")
    assert code == 0, err
    assert strict_json(out)["model"] == model


# -- simulate -----------------------------------------------------------------

def test_simulate_json(capsys, small_profile):
    code, out, err = run(capsys, "simulate", "--profile", small_profile,
                         "--bandwidth", "20MiB/s", "--downtime-limit",
                         "30ms", "--runs", "20", "--seed", "7", "--json")
    assert code == 0, err
    doc = strict_json(out)
    assert set(doc) == PREDICTION_KEYS | {"runs", "seed"}
    assert doc["model"] == "montecarlo"
    assert (doc["runs"], doc["seed"]) == (20, 7)
    # Not a terminal: no progress bar by default.
    assert err == ""
    # Same seed, same answer.
    code, out2, err = run(capsys, "simulate", "--profile", small_profile,
                          "--bandwidth", "20MiB/s", "--downtime-limit",
                          "30ms", "--runs", "20", "--seed", "7", "--json")
    assert strict_json(out2) == doc


def test_simulate_progress_bar(capsys, small_profile):
    code, out, err = run(capsys, "simulate", "--profile", small_profile,
                         "--bandwidth", "20MiB/s", "--downtime-limit",
                         "30ms", "--runs", "20", "--progress")
    assert code == 0, err
    assert "20/20" in err
    assert "total time" in out
    assert "Simulated 20 migrations" in out
    code, out, err = run(capsys, "simulate", "--profile", small_profile,
                         "--bandwidth", "20MiB/s", "--downtime-limit",
                         "30ms", "--runs", "5", "--no-progress")
    assert code == 0 and err == ""


# -- profile show -------------------------------------------------------------

def test_profile_show_builtin(capsys):
    code, out, err = run(capsys, "profile", "show")
    assert code == 0, err
    assert "SYNTHETIC profile (not captured from a guest)" in out
    assert "COARSE" not in out
    for word in ("Memory:", "Page size:", "Pages:", "active", "idle",
                 "zero", "Rate bins:", "Write rate:", "Dirty rate:",
                 "0.1 s windows", "1 s windows", "0 (idle)", "Metadata:",
                 "synthetic: true"):
        assert word in out, word


def test_profile_show_json(capsys, small_profile):
    code, out, err = run(capsys, "profile", "show", "--profile",
                         small_profile, "--json")
    assert code == 0, err
    doc = strict_json(out)
    assert set(doc) == SHOW_KEYS
    assert doc["pages"] == {"total": 2048, "active": 300, "idle": 1748,
                            "zero": 100}
    assert doc["memory_bytes"] == 2048 * 4096
    assert [d["window_s"] for d in doc["dirty_rate"]] == [0.1, 1.0]
    decades = doc["decades"]
    assert decades[0]["rate_max_per_s"] == 0 and decades[0]["pages"] == 1748
    assert sum(d["pages"] for d in decades) == 2048
    assert sum(d["memory_share"] for d in decades) == pytest.approx(1.0)
    for d in decades[1:]:
        assert d["rate_max_per_s"] == pytest.approx(10 * d["rate_min_per_s"])
    assert doc["synthetic"] is False and doc["coarse"] is False


def test_profile_show_coarse(capsys, coarse_profile):
    code, out, err = run(capsys, "profile", "show", "--profile",
                         coarse_profile)
    assert code == 0, err
    assert "COARSE profile (aggregate dirty rate only)" in out
    assert "SYNTHETIC" not in out
    code, out, err = run(capsys, "profile", "show", "--profile",
                         coarse_profile, "--json")
    assert strict_json(out)["coarse"] is True
    code, out, err = run(capsys, "predict", "--profile", coarse_profile,
                         "--bandwidth", "50MiB/s", "--downtime-limit",
                         "300ms")
    assert "COARSE profile" in out


# -- profile convert ----------------------------------------------------------

def _histogram(path):
    p = DirtyProfile.load(path)
    return (p.rates.tolist(), p.counts.tolist(), p.idle_pages)


def test_convert_round_trip(capsys, tmp_path):
    npy = tmp_path / "rates.npy"
    np.save(npy, small_rates())
    first, csv_path, second = (tmp_path / "a.json", tmp_path / "b.csv",
                               tmp_path / "c.json.gz")
    assert run(capsys, "profile", "convert", npy, first)[0] == 0
    assert run(capsys, "profile", "convert", first, csv_path)[0] == 0
    assert run(capsys, "profile", "convert", csv_path, second)[0] == 0
    assert _histogram(first) == _histogram(second)
    expected = DirtyProfile.from_rates(small_rates())
    assert _histogram(first) == (expected.rates.tolist(),
                                 expected.counts.tolist(),
                                 expected.idle_pages)
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "rate_per_s,pages"
    assert lines[1] == f"0,{expected.idle_pages}"
    assert len(lines) == 2 + expected.rates.size


def test_convert_options_and_csv_input(capsys, tmp_path):
    src = tmp_path / "h.csv"
    src.write_text("rate_per_s,pages\n0,100\n0.5,10\n20,3\n0,4\n")
    dst = tmp_path / "h.json"
    code, out, err = run(capsys, "profile", "convert", src, dst,
                         "--page-size", "2MiB", "--zero-pages", "50")
    assert code == 0, err
    p = DirtyProfile.load(dst)
    assert p.page_size == 2 * 2 ** 20
    assert (p.idle_pages, p.zero_pages, p.active_pages) == (104, 50, 13)
    assert p.rates.tolist() == [0.5, 20.0]


def test_convert_refuses_to_overwrite(capsys, tmp_path, small_profile):
    dst = tmp_path / "out.json"
    dst.write_text("precious")
    assert_one_error_line(*run(capsys, "profile", "convert", small_profile,
                               dst))
    assert dst.read_text() == "precious"
    code, out, err = run(capsys, "profile", "convert", small_profile, dst,
                         "--force")
    assert code == 0, err
    assert _histogram(dst) == _histogram(small_profile)


# -- bad input ----------------------------------------------------------------

@pytest.fixture
def bad_files(tmp_path):
    junk = tmp_path / "junk.json"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else", "data": [1]}))
    bad_npy = tmp_path / "bad.npy"
    bad_npy.write_bytes(np.random.default_rng(1).bytes(512))
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("rate,count\n1,2\n")
    neg_csv = tmp_path / "neg.csv"
    neg_csv.write_text("rate_per_s,pages\n-1,2\n")
    return {"junk": junk, "other": other, "bad_npy": bad_npy,
            "bad_csv": bad_csv, "neg_csv": neg_csv,
            "missing": tmp_path / "missing.json", "out": tmp_path / "o.json"}


PREDICT = ["predict", "--downtime-limit", "300ms"]

BAD = {
    "negative bandwidth": PREDICT + ["--bandwidth=-100MiB/s"],
    "negative bare bandwidth": PREDICT + ["--bandwidth", "-5"],
    "zero bandwidth": PREDICT + ["--bandwidth", "0"],
    "nan bandwidth": PREDICT + ["--bandwidth", "nan"],
    "nan downtime": ["predict", "--bandwidth", "1e8", "--downtime-limit",
                     "NaN"],
    "bad unit": PREDICT + ["--bandwidth", "100 furlongs"],
    "confidence 1.5": ["plan", "--confidence", "1.5"],
    "confidence nan": ["plan", "--confidence", "nan"],
    "deadline nan": ["plan", "--deadline", "nan"],
    "max rounds 0": ["plan", "--max-rounds", "0"],
    "runs 0": ["simulate", "--bandwidth", "1e8", "--downtime-limit", "1",
               "--runs", "0"],
    "missing file": ["plan", "--profile", "{missing}"],
    "corrupt file": ["plan", "--profile", "{junk}"],
    "other json format": ["profile", "show", "--profile", "{other}"],
    "unknown builtin": ["plan", "--profile", "builtin:no-such"],
    "unknown model": ["plan", "--model", "no-such-model"],
    "overwrite": ["profile", "convert", "{other}", "{junk}"],
    "corrupt npy": ["profile", "convert", "{bad_npy}", "{out}"],
    "bad csv header": ["profile", "convert", "{bad_csv}", "{out}"],
    "negative csv rate": ["profile", "convert", "{neg_csv}", "{out}"],
    "unknown output type": ["profile", "convert", "{other}", "x.txt"],
    "missing config": ["--config-file", "{missing}", "plan"],
    "usage: no command": [],
    "usage: unknown command": ["bogus"],
    "usage: missing option": ["predict", "--bandwidth", "1e8"],
    "usage: bad choice": PREDICT + ["--bandwidth", "1e8", "--dirty-log",
                                    "lazy"],
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input(capsys, bad_files, case):
    argv = [a.format(**bad_files) for a in BAD[case]]
    code, out, err = run(capsys, *argv)
    assert_one_error_line(code, out, err)


def test_error_messages_say_what(capsys, bad_files):
    _, _, err = run(capsys, "plan", "--profile", "builtin:no-such")
    assert "builtin:default" in err       # lists the available ones
    _, _, err = run(capsys, "plan", "--model", "no-such-model")
    assert "precopy" in err and "montecarlo" in err
    _, _, err = run(capsys, "plan", "--confidence", "1.5")
    assert "--confidence" in err
    _, _, err = run(capsys, "predict", "--downtime-limit", "1",
                    "--bandwidth=-5")
    assert "--bandwidth" in err and "negative" in err
    _, _, err = run(capsys, "profile", "convert", str(bad_files["other"]),
                    str(bad_files["junk"]))
    assert "--force" in err


def test_bad_config_value(capsys, tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("[rtmig]\nmax_rounds = many\n")
    assert_one_error_line(*run(capsys, "--config-file", conf, "plan"))


def test_help_exits_zero(capsys):
    code, out, err = run(capsys, "--help")
    assert code == 0 and "predict" in out and "plan" in out
    code, out, err = run(capsys, "plan", "--help")
    assert code == 0 and "--fail-infeasible" in out


@pytest.mark.parametrize("argv, message", [
    (["profile", "capture", "--coarse", "--qmp", "/x", "--trace-file", "/y",
      "--output", "o.json"], "--coarse needs --domain"),
    (["profile", "capture", "--coarse", "--domain", "g", "--bandwidth",
      "8MB/s", "--output", "o.json"], "--bandwidth goes with a probe"),
    (["profile", "capture", "--coarse", "--domain", "g", "--rounds", "3",
      "--output", "o.json"], "--rounds goes with a probe"),
    (["profile", "capture", "--coarse", "--domain", "g", "--duration",
      "1.5s", "--output", "o.json"], "whole seconds from 1 to 60"),
    (["profile", "capture", "--coarse", "--domain", "g", "--duration",
      "61s", "--output", "o.json"], "whole seconds from 1 to 60"),
    (["profile", "capture", "--domain", "g", "--first-pass-bandwidth",
      "1kB/s", "--output", "o.json"],
     "--first-pass-bandwidth: '1kB/s' is outside the probe bandwidth"),
    (["experiment", "validate", "--workloads", "video,bogus"],
     "--workloads: unknown bogus"),
    (["experiment", "validate", "--bandwidths", "8MiB/s,100kB/s"],
     "below 1 MiB/s"),
    (["experiment", "validate", "--bandwidths", "0.5"],
     "--bandwidths: 0.5 is below 1 MiB/s"),
    (["experiment", "validate", "--bandwidths", "5,fast"],
     "--bandwidths: invalid value 'fast'; expected whole MiB/s as 8"),
    (["experiment", "validate", "--repetitions", "0"], "--repetitions"),
    (["experiment", "validate", "--downtime-limit", "0s"],
     "--downtime-limit"),
    (["experiment", "validate", "--calibration-runs", "-1"],
     "--calibration-runs"),
    (["experiment", "calibrate", "--repetitions", "0"], "--repetitions"),
    (["experiment", "calibrate", "--repetitions", "1001"], "--repetitions"),
    (["experiment", "calibrate", "--output", "."], "is a directory"),
    (["experiment", "calibrate", "--output", "no/such/c.json"],
     "no such directory"),
    (["experiment", "calibrate", "--link", "wobbly"], "--link"),
    (["experiment", "validate", "--calibration", "missing.json"],
     "--calibration: missing.json: No such file"),
    (["predict", "--bandwidth", "100MiB/s", "--downtime-limit", "300ms",
      "--link-rate", "10MiB/s"], "link_rate"),
    (["predict", "--bandwidth", "100MiB/s", "--downtime-limit", "300ms",
      "--setup-time", "-1s"], "--setup-time"),
])
def test_capture_experiment_and_settings_bad_input(capsys, tmp_path,
                                                   monkeypatch, argv,
                                                   message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert_one_error_line(code, out, err)
    assert message in err, err


def test_setup_time_and_link_rate_reach_the_prediction(capsys):
    code, out, err = run(capsys, "predict", "--bandwidth", "100MiB/s",
                         "--downtime-limit", "300ms", "--json")
    base = json.loads(out)
    code, out, err = run(capsys, "predict", "--bandwidth", "100MiB/s",
                         "--downtime-limit", "300ms", "--setup-time", "0.5s",
                         "--link-rate", "1GiB/s", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["settings"]["setup_time"] == 0.5
    assert doc["settings"]["link_rate"] == 2 ** 30
    assert base["settings"]["link_rate"] is None
    # about a tenth of the downtime at ten times the rate; the total loses
    # that and gains the setup time
    assert doc["downtime_s"]["mean"] < base["downtime_s"]["mean"] / 5
    saved = base["downtime_s"]["mean"] - doc["downtime_s"]["mean"]
    assert doc["total_time_s"]["mean"] == pytest.approx(
        base["total_time_s"]["mean"] + 0.5 - saved, rel=1e-6)


def test_experiment_bandwidths_bare_numbers_are_mib_per_s():
    # --help says whole MiB/s: "5" was read as 5 bytes/s and refused.
    from rtmig_nova.cli.experiment import _bandwidths
    assert _bandwidths("5, 8") == [5 * 2 ** 20, 8 * 2 ** 20]
    assert _bandwidths("5,100Mbit/s") == [5 * 2 ** 20, 12.5e6]
