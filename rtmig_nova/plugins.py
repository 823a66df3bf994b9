# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""Model plugins, loaded with stevedore.

Models are published as entry points in the ``rtmig_nova.models`` namespace
(see ``[entry_points]`` in setup.cfg): ``precopy``, ``geometric``,
``qemu-estimate`` and ``montecarlo``.  Another package adds a model by
declaring an entry point in the same namespace; its class takes keyword
arguments in ``__init__`` and has ``predict(profile, settings, horizon=None)
-> Prediction`` (see :mod:`rtmig_nova.model.variants`).

The entry points exist only once the package is installed (``pip install
-e .``); there is no fallback to the built-in table here.
"""

from stevedore import driver
from stevedore import exception as stevedore_exc
from stevedore import extension

NAMESPACE = "rtmig_nova.models"

__all__ = ["NAMESPACE", "available", "available_models", "load_model"]


def _ignore(manager, entrypoint, exc):
    """A plugin that fails to import is left out of the list (instead of
    stevedore logging an error on stderr); loading it by name reports why
    it failed."""


def available(namespace):
    """Names of the installed plugins in ``namespace`` that load, sorted."""
    return sorted(extension.ExtensionManager(
        namespace, on_load_failure_callback=_ignore).names())


def available_models():
    """Names of the installed model plugins that load, sorted."""
    return available(NAMESPACE)


def _describe(names):
    if not names:
        return (f"no model plugins are installed in namespace {NAMESPACE!r} "
                "(install rtmig-nova, e.g. pip install -e .)")
    return "available models: " + ", ".join(names)


def load_model(name, **kwargs):
    """Instantiate the model plugin ``name`` with ``kwargs``.

    :raises ValueError: ``name`` is not an installed plugin (the message
        lists the available names), or the plugin failed to load or to
        accept ``kwargs``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, "
                         f"got {name!r}")

    def failed(manager, entrypoint, exc):
        raise ValueError(f"model {name!r} failed to load: "
                         f"{type(exc).__name__}: {exc}") from exc

    try:
        mgr = driver.DriverManager(namespace=NAMESPACE, name=name,
                                   invoke_on_load=True,
                                   invoke_kwds=kwargs,
                                   on_load_failure_callback=failed)
    except stevedore_exc.NoMatches:
        raise ValueError(f"unknown model {name!r}; "
                         f"{_describe(available_models())}") from None
    except stevedore_exc.MultipleMatches:
        raise ValueError(f"model {name!r} is declared by more than one "
                         f"installed package in namespace "
                         f"{NAMESPACE!r}") from None
    return mgr.driver
