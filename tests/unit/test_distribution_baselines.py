import ast
import math
import pathlib

import numpy as np
import pytest
from scipy import stats

import rtmig_nova.model
from rtmig_nova.model import DirtyProfile, Distribution, predict


def test_mixture_cdf_and_quantile_match_scipy():
    d = Distribution([1.0, 3.0], [0.5, 0.2], [0.3, 0.7])
    for x in (0.0, 1.0, 2.5, 3.1):
        want = 0.3 * stats.norm.cdf(x, 1, 0.5) + 0.7 * stats.norm.cdf(x, 3,
                                                                      0.2)
        assert d.cdf(x) == pytest.approx(want, abs=1e-12)
    for q in (0.05, 0.3, 0.5, 0.95):
        assert d.cdf(d.quantile(q)) == pytest.approx(q, abs=1e-9)
    assert d.mean == pytest.approx(0.3 + 2.1)
    assert d.std == pytest.approx(math.sqrt(
        0.3 * (0.25 + 1.0) + 0.7 * (0.04 + 3.0 ** 2) - 2.4 ** 2))


def test_empirical_and_defect():
    d = Distribution.empirical([1.0, 2.0, 3.0, np.inf])
    assert d.converged == pytest.approx(0.75)
    assert math.isinf(d.mean)
    assert d.quantile(0.5) == 2.0
    assert math.isinf(d.quantile(0.9))
    assert d.cdf(10.0) == pytest.approx(0.75)
    tiny = Distribution([1.0], [0.0], [1.0], defect=1e-9)
    assert tiny.mean == pytest.approx(1.0)
    with pytest.raises(ValueError, match="quantile"):
        d.quantile(1.0)


def test_point_distribution():
    d = Distribution.point(2.5)
    assert d.mean == 2.5 and d.quantile(0.99) == 2.5 and d.std == 0.0
    assert Distribution.point(math.inf).converged == 0.0


def _uniform_guest():
    return DirtyProfile.from_histogram([2.0], [1000], idle_pages=3000)


def test_geometric_baseline_formula():
    prof = _uniform_guest()
    bw, limit = 5e6, 0.05
    pred = predict(prof, bw, limit, model="geometric")
    v = 4000 * 4104
    r = prof.dirty_rate(1.0) / bw
    n = math.ceil(math.log(bw * limit / v) / math.log(r))
    assert pred.rounds.mean == n
    assert pred.total_time.mean == pytest.approx(
        v * (1 - r ** (n + 1)) / (1 - r) / bw)
    assert pred.downtime.mean == pytest.approx(v * r ** n / bw)
    assert pred.total_time.std == 0.0


def test_geometric_baseline_does_not_converge_when_dirtying_outpaces():
    prof = _uniform_guest()
    slow = prof.dirty_rate(1.0) * 0.9
    pred = predict(prof, slow, 0.05, model="geometric")
    assert pred.converges == 0.0 and math.isinf(pred.total_time.mean)


def test_qemu_estimate_baseline():
    prof = _uniform_guest()
    bw = 50e6
    pred = predict(prof, bw, 0.3, model="qemu-estimate")
    first = 4000 * 4104 / bw
    remaining = prof.dirty_rate(1.0) * first
    assert pred.downtime.mean == pytest.approx(remaining / bw)
    assert pred.total_time.mean == pytest.approx(first + remaining / bw)
    assert predict(prof, bw, 1e-4, model="qemu-estimate").converges == 0


def test_coarse_profile_is_flagged_in_predictions():
    prof = DirtyProfile.from_aggregate_rate(2 ** 26, 1e6)
    pred = predict(prof, 50e6, 0.1)
    assert pred.coarse and pred.to_dict()["coarse_profile"]


ALLOWED = {"numpy", "scipy", "math", "json", "gzip", "csv", "io", "re",
           "dataclasses", "fractions", "numbers", "zlib", "rtmig_nova"}
# Pure modules outside the package that the core may use: unit parsing
# (no I/O, see its docstring), the bounds of every input, and the bounded
# reads of files (standard library only).
PURE_OUTSIDE = ("rtmig_nova.units", "rtmig_nova.bounds", "rtmig_nova.safeio")


@pytest.mark.parametrize("paths", ["model", "outside"])
def test_model_package_is_pure(paths):
    root = pathlib.Path(rtmig_nova.model.__file__).parent
    files = root.glob("*.py") if paths == "model" else [
        root.parent / (m.split(".")[1] + ".py") for m in PURE_OUTSIDE]
    for path in files:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            # The bounded file reader may look at what a path is (a pipe
            # is refused before it is read).
            allowed = ALLOWED | ({"os", "stat"} if path.name == "safeio.py"
                                 else set())
            for name in names:
                top = name.split(".")[0]
                assert top in allowed, f"{path.name} imports {name}"
                if top == "rtmig_nova":
                    assert name.startswith("rtmig_nova.model") or \
                        name in PURE_OUTSIDE or (
                            name == "rtmig_nova" and all(
                                "rtmig_nova." + a.name in PURE_OUTSIDE
                                for a in node.names)), \
                        f"{path.name} imports {name}"


def test_support_clips_component_tails():
    d = Distribution([0.9, 1.0], [0.1, 0.05], [0.5, 0.5], support=(0.0, 1.0))
    assert d.cdf(1.0) == pytest.approx(1.0)
    assert d.cdf(-0.1) == 0.0
    assert d.quantile(0.99) <= 1.0
    # Moments of the clipped components, against numerical integration.
    xs = np.linspace(-1, 3, 400001)
    pdf = 0.5 * stats.norm.pdf(xs, 0.9, 0.1) + 0.5 * stats.norm.pdf(xs, 1.0,
                                                                    0.05)
    clipped = np.clip(xs, 0.0, 1.0)
    mean = np.trapezoid(clipped * pdf, xs)
    var = np.trapezoid((clipped - mean) ** 2 * pdf, xs)
    assert d.mean == pytest.approx(mean, rel=1e-6)
    assert d.std == pytest.approx(np.sqrt(var), rel=1e-5)
    s = d.scaled(2.0, 1.0)
    assert s.quantile(0.999) <= 3.0 and s.cdf(0.99) == 0.0


def test_default_plan_downtime_stays_within_the_bound():
    from importlib import resources

    from rtmig_nova.model import plan
    ref = resources.files("rtmig_nova") / "data" / "default-profile.json"
    with resources.as_file(ref) as path:
        prof = DirtyProfile.load(path)
    pl = plan(prof, deadline=60, max_downtime=0.3, link_capacity=125e6)
    assert pl.feasible
    assert pl.prediction.downtime.quantile(0.999) <= 0.3
    assert pl.prediction.downtime.cdf(0.3) >= pl.prediction.converges - 1e-12
