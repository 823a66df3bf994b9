"""rtmig_nova.plugins: model plugins through stevedore.

These tests need the package installed (``pip install -e .``): the plugins
are the entry points declared in setup.cfg.
"""

import pytest

from rtmig_nova import plugins
from rtmig_nova.model import DirtyProfile, MigrationSettings, variants

BUILTIN = {"precopy": variants.PrecopyModel,
           "geometric": variants.GeometricModel,
           "qemu-estimate": variants.QemuEstimateModel,
           "montecarlo": variants.MonteCarloModel}


def test_entry_points_are_installed():
    assert set(BUILTIN) <= set(plugins.available_models()), (
        "the rtmig_nova.models entry points are missing: install the "
        "package with pip install -e .")


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_load_each_builtin(name):
    model = plugins.load_model(name)
    assert isinstance(model, BUILTIN[name])
    assert model.name == name


def test_kwargs_reach_the_constructor():
    ticks = []
    model = plugins.load_model("montecarlo", runs=7, seed=3,
                               progress=lambda d, t: ticks.append(d))
    assert (model.runs, model.seed) == (7, 3)
    profile = DirtyProfile.from_rates([0.0] * 60 + [5.0] * 4)
    pred = model.predict(profile, MigrationSettings(bandwidth=1e6,
                                                    downtime_limit=0.05))
    assert ticks == list(range(1, 8))
    assert pred.model == "montecarlo"


def test_loaded_model_predicts():
    profile = DirtyProfile.from_rates([0.0] * 100 + [2.0] * 10)
    pred = plugins.load_model("precopy").predict(
        profile, MigrationSettings(bandwidth=1e6, downtime_limit=0.1))
    assert pred.model == "precopy"
    assert 0.0 <= pred.converges <= 1.0


def test_unknown_name_lists_available():
    with pytest.raises(ValueError) as info:
        plugins.load_model("no-such-model")
    msg = str(info.value)
    assert "no-such-model" in msg
    for name in BUILTIN:
        assert name in msg


@pytest.mark.parametrize("name", ["", None, 3])
def test_bad_name(name):
    with pytest.raises(ValueError):
        plugins.load_model(name)


def test_bad_kwargs_is_a_value_error():
    with pytest.raises(ValueError, match="precopy"):
        plugins.load_model("precopy", runs=5)
