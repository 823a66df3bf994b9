"""The model variants, by name.

Each variant is a class with a ``name`` and a method
``predict(profile, settings, horizon=None) -> Prediction`` (``settings`` a
:class:`~rtmig_nova.model.precopy.MigrationSettings`; ``horizon`` seconds
after which a predictor may stop following paths and report them as not
converged).  Constructors take keyword arguments only and must work with
none; the simulator's are ``runs``, ``seed`` and ``progress``.  The variants
are published as stevedore plugins in the ``rtmig_nova.models`` namespace
(see setup.cfg); third-party models follow the same contract.  This module
is their pure implementation and also offers them by name without stevedore.
"""

import dataclasses

from rtmig_nova.model import analytic
from rtmig_nova.model import baselines
from rtmig_nova.model import montecarlo
from rtmig_nova.model import uncertainty


class PrecopyModel:
    """Per-page stochastic model of QEMU pre-copy (the default)."""
    name = "precopy"

    def predict(self, profile, settings, horizon=None):
        return analytic.predict(profile, settings, horizon=horizon,
                                model_name=self.name)


class GeometricModel:
    """Average-dirty-rate geometric model (Liu et al., HPDC 2011)."""
    name = "geometric"

    def predict(self, profile, settings, horizon=None):
        return baselines.geometric(profile, settings)


class QemuEstimateModel:
    """QEMU's expected-downtime estimate (remaining / bandwidth)."""
    name = "qemu-estimate"

    def predict(self, profile, settings, horizon=None):
        return baselines.qemu_estimate(profile, settings)


class MonteCarloModel:
    """Page-level Monte-Carlo simulation (slow; the reference)."""
    name = "montecarlo"

    def __init__(self, runs=1000, seed=None, progress=None):
        self.runs, self.seed, self.progress = runs, seed, progress

    def predict(self, profile, settings, horizon=None):
        return montecarlo.simulate(profile, settings, runs=self.runs,
                                   seed=self.seed, progress=self.progress,
                                   model_name=self.name)


BUILTIN = {cls.name: cls for cls in
           (PrecopyModel, GeometricModel, QemuEstimateModel,
            MonteCarloModel)}


def run(predictor, profile, settings, horizon=None, surrogate=None):
    """``predictor.predict`` with the uncertainty of the write intensity
    and of the host's send rate mixed in (:mod:`.uncertainty`) and the
    settings' setup time (s; normal with ``setup_time`` and
    ``setup_time_sd``, independent of the rest) added to the total time:
    models describe QEMU's migration from its first page on, given the
    profile and the send rate, so what lies outside that is applied here,
    once for all of them (third-party models included).  ``horizon`` is
    in total-time seconds; ``surrogate``: see :func:`.uncertainty.mixed`."""
    setup = settings.setup_time
    if horizon is not None:
        horizon = max(horizon - setup, settings.check_interval)
    sd_s, sd_e = uncertainty.spreads(profile, settings)
    if max(sd_s, sd_e) > uncertainty.NEGLIGIBLE_SD:
        pred = uncertainty.mixed(
            lambda p, st, h: predictor.predict(p, st, horizon=h),
            profile, settings, sd_s, sd_e, horizon, surrogate)
    else:
        pred = predictor.predict(profile, settings, horizon=horizon)
    if setup or settings.setup_time_sd:
        total = pred.total_time.plus_normal(setup, settings.setup_time_sd)
        pred = dataclasses.replace(pred, total_time=total)
    return pred


def get(model):
    """A model instance from a name or an instance (returned as is)."""
    if isinstance(model, str):
        try:
            return BUILTIN[model]()
        except KeyError:
            raise ValueError(f"model must be one of {sorted(BUILTIN)}, "
                             f"got {model!r}") from None
    if not callable(getattr(model, "predict", None)):
        raise ValueError("model must be a model name or have a predict() "
                         "method")
    return model
