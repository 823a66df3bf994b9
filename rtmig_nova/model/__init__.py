"""The pure core: dirty-page profiles, pre-copy models and sizing.

Only numpy and scipy are used here: no OpenStack, libvirt or system calls.
Units are SI throughout: bytes, seconds, bytes/s, writes/s.

>>> from rtmig_nova.model import DirtyProfile, predict, plan
>>> profile = DirtyProfile.from_rates(rates, page_size=4096)
>>> pred = predict(profile, bandwidth=100e6, downtime_limit=0.3)
>>> pred.total_time.mean, pred.downtime.quantile(0.95), pred.converges
>>> pl = plan(profile, deadline=10, max_downtime=0.3, confidence=0.95,
...           link_capacity=1.25e9)
>>> pl.feasible, pl.reason, pl.bandwidth, pl.downtime_limit, pl.cpu_share
"""

from rtmig_nova.model import montecarlo as _montecarlo
from rtmig_nova.model import variants as _variants
from rtmig_nova.model.distribution import Distribution
from rtmig_nova.model.precopy import MigrationSettings
from rtmig_nova.model.prediction import Prediction
from rtmig_nova.model.profile import DirtyProfile, ProfileError
from rtmig_nova.model.sizing import CpuReservation, Plan, plan

__all__ = ["DirtyProfile", "ProfileError", "Distribution",
           "MigrationSettings", "Prediction", "Plan", "CpuReservation",
           "predict", "plan", "simulate", "MODELS"]

MODELS = tuple(_variants.BUILTIN)


def predict(profile, bandwidth, downtime_limit, model="precopy", **settings):
    """Predict one migration of ``profile``.

    :param bandwidth: migration bandwidth, bytes/s
    :param downtime_limit: QEMU downtime-limit, seconds
    :param model: a name from :data:`MODELS` or a model object
    :param settings: further :class:`MigrationSettings` fields: dirty_log
        (``"sync"``/``"clear"``), order (``"address"``/``"rate"``),
        check_interval (s), switchover_time (s), max_rounds, setup_time (s)
    :returns: :class:`Prediction`
    """
    st = MigrationSettings(bandwidth=bandwidth,
                           downtime_limit=downtime_limit, **settings)
    return _variants.run(_variants.get(model), profile, st)


def simulate(profile, bandwidth, downtime_limit, runs=1000, seed=None,
             progress=None, **settings):
    """Page-level Monte-Carlo simulation of ``runs`` migrations.

    Same arguments as :func:`predict`; ``progress(done, total)`` is called
    after each run.
    """
    st = MigrationSettings(bandwidth=bandwidth,
                           downtime_limit=downtime_limit, **settings)
    return _montecarlo.simulate(profile, st, runs=runs, seed=seed,
                                progress=progress)
