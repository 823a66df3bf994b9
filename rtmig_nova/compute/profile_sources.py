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

"""Where the live migration of a real-time instance takes its dirty-page
profile from.

Sources are stevedore plugins in the namespace :data:`NAMESPACE`, asked in
the order of ``[rtmig] migration_profile_sources``; the first that has a
profile wins, and its name goes into the plan and the notifications.
Shipped:

- ``instance``: the instance's captured profile in the per-instance store,
  ``[rtmig] instance_profile_dir/UUID.json[.gz]``.
- ``dirty_rate``: a coarse dirty rate libvirt measures on the running
  domain (``virDomainStartDirtyRateCalc``, ``[rtmig] dirty_rate_seconds``).
  The calculation starts at the source's check and is read when the
  migration starts, which waits for what is left of it, at most
  :data:`DIRTY_RATE_MAX_WAIT`; a result not there by then is left for the
  next source.
- ``flavor``: the flavor's ``rtmig:profile``.

A third-party source subclasses :class:`ProfileSource` and registers an
entry point in the namespace.
"""

import dataclasses
import os
import threading
import time

from oslo_log import log as logging
from stevedore import named

from rtmig_nova import conf
from rtmig_nova import plugins
from rtmig_nova.capture import dirtyrate
from rtmig_nova.capture import probe
from rtmig_nova.enforce import libvirt_controls

LOG = logging.getLogger(__name__)
CONF = conf.CONF

NAMESPACE = "rtmig_nova.migration_extensions"
# How long past its own length a dirty-rate calculation may take to show
# its result, s.
DIRTY_RATE_GRACE = 1.0
# The most a migration's start waits for it, s: the extension's budget for
# the whole start is 1 s (the plan, the checks and the reservation take
# tens of ms).  A result not there by then is left for the next source.
DIRTY_RATE_MAX_WAIT = 0.75
# A calculation started at a check whose migration never started is
# forgotten after this, s.
_STALE_AFTER = 600.0


class SourceError(ValueError):
    """``[rtmig] migration_profile_sources`` names no loadable source."""


@dataclasses.dataclass(frozen=True)
class FoundProfile:
    """A source's profile for one migration.

    :ivar source: the source's name (``instance``, ``dirty_rate``, ...)
    :ivar ref: what the plan says it planned from: a file path, a flavor's
        ``rtmig:profile``, or a description of a measurement
    :ivar profile: the :class:`~rtmig_nova.model.profile.DirtyProfile`
        itself when no file is behind ``ref`` (a measurement), else None
    """
    source: str
    ref: str
    profile: object = None


class ProfileSource:
    """One place a migration's profile can come from; ``name`` is the
    entry point's.  ``guest`` is Nova's ``Guest`` of the instance on this
    host, or None."""

    name = None

    def prepare(self, instance, guest):
        """Start what takes time (called at the source's check; never
        waited for, never raises)."""

    def find(self, instance, request, guest, wait):
        """The :class:`FoundProfile` for ``instance`` (its
        :class:`~rtmig_nova.model.flavor.RTRequest` ``request``), or None
        to let the next source answer.  ``wait``: the migration is
        starting, and what :meth:`prepare` started may be waited for."""
        raise NotImplementedError


class InstanceStore(ProfileSource):
    """The instance's captured profile in ``[rtmig] instance_profile_dir``
    (``rtmig profile capture --domain instance-... --output``)."""

    name = "instance"

    def find(self, instance, request, guest, wait):
        path = instance_profile(instance.uuid,
                                CONF.rtmig.instance_profile_dir)
        return FoundProfile(self.name, path) if path else None


class FlavorProfile(ProfileSource):
    """The flavor's ``rtmig:profile`` (a builtin or ``[rtmig]
    profile_dir``'s)."""

    name = "flavor"

    def find(self, instance, request, guest, wait):
        return FoundProfile(self.name, request.profile)


class LibvirtDirtyRate(ProfileSource):
    """A coarse profile from libvirt's dirty-rate calculation of the
    running domain: one rate spread over its memory (QEMU samples 512
    pages per GiB)."""

    name = "dirty_rate"

    def __init__(self):
        self._lock = threading.Lock()
        self._started = {}      # instance uuid -> (monotonic start, s)

    def prepare(self, instance, guest):
        if guest is None:
            return
        seconds = CONF.rtmig.dirty_rate_seconds
        now = time.monotonic()
        with self._lock:
            for uuid, (at, _s) in list(self._started.items()):
                if now - at > _STALE_AFTER:
                    del self._started[uuid]
            if instance.uuid in self._started:
                return          # a check for another destination: running
        dom = guest._domain
        try:
            dirtyrate.start(dom, seconds)
        except (libvirt_controls._libvirt_of(dom).libvirtError,
                AttributeError, probe.ProbeError) as e:
            LOG.info("rtmig: no dirty-rate calculation (%s)",
                     " ".join(str(e).split()), instance=instance)
            return
        with self._lock:
            self._started[instance.uuid] = (now, seconds)

    def find(self, instance, request, guest, wait):
        with self._lock:
            started = self._started.pop(instance.uuid, None) if wait \
                else self._started.get(instance.uuid)
        if guest is None or started is None:
            return None
        at, seconds = started
        if time.monotonic() - at > _STALE_AFTER:
            return None         # from a check long ago
        dom = guest._domain
        until = min(at + seconds + DIRTY_RATE_GRACE,
                    time.monotonic() + DIRTY_RATE_MAX_WAIT) if wait else 0.0
        try:
            found = dirtyrate.wait(dom, until)
        except (libvirt_controls._libvirt_of(dom).libvirtError,
                AttributeError) as e:
            LOG.info("rtmig: dirty-rate result unreadable (%s)",
                     " ".join(str(e).split()), instance=instance)
            return None
        if found is None:
            if wait:
                LOG.warning("rtmig: the dirty-rate calculation started "
                            "%.2f s ago gave no result in time",
                            time.monotonic() - at, instance=instance)
            return None
        rate, memory = found
        try:
            profile = dirtyrate.coarse_profile(rate, memory, seconds,
                                               instance.uuid)
        except ValueError as e:
            LOG.warning("rtmig: dirty-rate result unusable: %s", e,
                        instance=instance)
            return None
        return FoundProfile(
            self.name, f"libvirt dirty rate {rate / dirtyrate.MIB:.6g} "
            f"MiB/s over {seconds} s of {memory} bytes", profile)


def instance_profile(uuid, directory):
    """Path of the captured profile of instance ``uuid`` in ``directory``,
    or None."""
    for suffix in (".json", ".json.gz"):
        path = os.path.join(directory, uuid + suffix)
        if os.path.isfile(path):
            return path
    return None


def load(names):
    """The sources ``names`` (in that order), each instantiated once.

    :raises SourceError: none given, a name is not in :data:`NAMESPACE`
        (the message lists those that are), or one fails to load
    """
    names = list(names)
    if not names:
        raise SourceError("[rtmig] migration_profile_sources is empty")
    missing = []

    def failed(manager, entrypoint, exc):
        raise SourceError(f"profile source {entrypoint.name!r} failed to "
                          f"load: {type(exc).__name__}: {exc}") from exc

    manager = named.NamedExtensionManager(
        NAMESPACE, names, name_order=True, invoke_on_load=True,
        on_missing_entrypoints_callback=missing.extend,
        on_load_failure_callback=failed)
    if missing:
        raise SourceError(
            "[rtmig] migration_profile_sources: unknown "
            + ", ".join(sorted(missing)) + "; available: "
            + (", ".join(plugins.available(NAMESPACE)) or "none"))
    return [ext.obj for ext in manager]
