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

"""From a flavor's ``rtmig:`` specs to the plan of its migrations, as the
scheduler filter and the compute both need it: profile references resolved
(``builtin:NAME`` or ``[rtmig] profile_dir``), model settings from the
``[rtmig]`` options, results cached (a plan takes milliseconds; the same
flavor is asked for again and again).  numpy is imported only when a
profile is loaded (the ``rtmig`` command imports this module at start)."""

import functools
import os
from importlib import resources

from rtmig_nova.model import ledger

BUILTIN_PREFIX = "builtin:"
_BUILTIN_SUFFIXES = ("-profile.json", "-profile.json.gz")
_NAMED_SUFFIXES = (".json", ".json.gz")


def builtin_profiles():
    """``{NAME: resource}`` of the profiles shipped in rtmig_nova/data."""
    found = {}
    try:
        entries = list(resources.files("rtmig_nova").joinpath(
            "data").iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return found
    for entry in entries:
        for suffix in _BUILTIN_SUFFIXES:
            if entry.name.endswith(suffix):
                found[entry.name[:-len(suffix)]] = entry
    return dict(sorted(found.items()))


def _named_path(name, profile_dir):
    from rtmig_nova.model.profile import ProfileError
    for suffix in _NAMED_SUFFIXES:
        path = os.path.join(profile_dir, name + suffix)
        if os.path.isfile(path):
            return path
    raise ProfileError(f"profile {name!r}: no {name}.json or "
                       f"{name}.json.gz in {profile_dir}")


@functools.lru_cache(maxsize=64)
def _load(ref, profile_dir, stamp):
    from rtmig_nova.model.profile import DirtyProfile, ProfileError
    if ref.startswith(BUILTIN_PREFIX):
        name = ref[len(BUILTIN_PREFIX):]
        available = builtin_profiles()
        if name not in available:
            raise ProfileError(
                f"unknown builtin profile {ref!r}; available: "
                + (", ".join(BUILTIN_PREFIX + n for n in available)
                   or "none"))
        with resources.as_file(available[name]) as path:
            return DirtyProfile.load(path)
    return DirtyProfile.load(_named_path(ref, profile_dir))


def _stamp(ref, profile_dir):
    """What identifies the file behind ``ref`` now: a named profile
    replaced on disk is read again; builtins never change."""
    from rtmig_nova.model.profile import ProfileError
    if ref.startswith(BUILTIN_PREFIX):
        return None
    try:
        st = os.stat(_named_path(ref, profile_dir))
    except OSError as e:
        raise ProfileError(f"profile {ref!r}: {e.strerror}") from None
    return (st.st_mtime_ns, st.st_size)


def load_profile(ref, profile_dir):
    """The DirtyProfile a flavor's ``rtmig:profile`` names.

    :raises ProfileError: unknown, unreadable or malformed (one line)
    """
    return _load(ref, profile_dir, _stamp(ref, profile_dir))


def qemu_version(setting, host_version=None):
    """The QEMU release ("MAJOR.MINOR") plans are made for: ``setting``
    (``[rtmig] qemu_version``, ``--qemu-version``), or with ``auto`` the
    host's ``host_version`` (what libvirt reports: see
    :func:`rtmig_nova.model.precopy.qemu_version`), or without one the
    models' default."""
    from rtmig_nova.model import precopy
    if setting != "auto":
        return precopy.qemu_version(setting)
    if host_version is not None:
        return precopy.qemu_version(host_version)
    return precopy.DEFAULT_QEMU_VERSION


def plan_options(group, host_version=None):
    """Keyword arguments of :func:`rtmig_nova.model.plan` from the
    ``[rtmig]`` option group ``group`` (``CONF.rtmig``) on a host whose
    QEMU is ``host_version`` (None: not known here)."""
    return {
        "qemu_version": qemu_version(group.qemu_version, host_version),
        "model": group.model,
        "cpu_cost_per_page": group.cpu_cost_per_page,
        "cpu_margin": group.cpu_margin,
        "deadline_period": group.deadline_period,
        "cgroup_period_us": group.cgroup_period,
        "dirty_log": group.dirty_log,
        "order": group.send_order,
        "check_interval": group.check_interval,
        "switchover_time": group.switchover_time,
        "setup_time": group.setup_time,
        "setup_time_sd": group.setup_time_sd,
        "send_rate_sd": group.send_rate_sd,
        "max_rounds": group.max_rounds,
        "send_backlog": send_backlog(group.send_queue_cap),
    }


# A write can queue up to one GSO segment (64 KiB) past a socket's cap on
# unsent bytes before it waits: tcp_sendmsg checks the cap between
# segments.
GSO_MAX_BYTES = 64 * 1024


def send_backlog(cap):
    """The :class:`~rtmig_nova.model.precopy.MigrationSettings`
    ``send_backlog`` (bytes) of a host that caps a migration socket's
    unsent bytes at ``cap`` (``[rtmig] send_queue_cap``; 0: no cap, and
    none counted): the cap, a segment a write queues past it, and a
    segment in flight (TCP paced at its HTB class's rate keeps about that
    in the class's queue).  Measured on the testbed at 7 MiB/s, 1461
    samples: unsent p99 130 kB, in flight p99 58 kB, both p99 170 kB,
    against this 192 KiB."""
    return cap + 2 * GSO_MAX_BYTES if cap else 0


def _freeze(options):
    return tuple(sorted(options.items()))


class PlanningError(Exception):
    """No plan can be made: the profile cannot be loaded or the request is
    malformed (one line)."""


@functools.lru_cache(maxsize=256)
def _plan(request, profile_ref, profile_dir, stamp, migration_link,
          frozen_options):
    profile = _load(profile_ref, profile_dir, stamp)
    return ledger.migration_plan(profile, request, migration_link,
                                 dict(frozen_options))


def migration_plan(request, migration_link, group, profile_ref=None,
                   host_version=None):
    """The :class:`~rtmig_nova.model.sizing.Plan` (feasible or not) of a
    live migration of a VM under ``request`` over ``migration_link``
    bytes/s with the ``[rtmig]`` options ``group``, for the profile
    ``profile_ref`` (default: the flavor's ``rtmig:profile``; a path is
    taken as a file, as the per-instance store gives them), by a QEMU
    ``host_version`` (see :func:`qemu_version`).

    :raises PlanningError: the profile cannot be loaded, or no plan can be
        computed from it
    """
    from rtmig_nova.model.profile import ProfileError
    ref, directory = _where(request, group, profile_ref)
    try:
        stamp = _stamp(ref, directory)
        return _plan(request, ref, directory, stamp, float(migration_link),
                     _freeze(plan_options(group, host_version)))
    except ProfileError as e:
        raise PlanningError(str(e)) from None
    except ValueError as e:
        raise PlanningError(f"cannot plan: {e}") from None


def _where(request, group, profile_ref):
    """(name, directory) of the profile ``profile_ref`` (default: the
    flavor's); a path is taken as a file."""
    ref = request.profile if profile_ref is None else profile_ref
    directory = group.profile_dir
    if os.path.isabs(ref):
        directory, ref = os.path.split(ref)
        for suffix in _NAMED_SUFFIXES:
            if ref.endswith(suffix):
                ref = ref[:-len(suffix)]
    return ref, directory


def plan_profile(request, group, profile_ref=None):
    """The :class:`~rtmig_nova.model.profile.DirtyProfile` that
    :func:`migration_plan` plans from for the same arguments (cached).

    :raises PlanningError: it cannot be loaded
    """
    from rtmig_nova.model.profile import ProfileError
    ref, directory = _where(request, group, profile_ref)
    try:
        return _load(ref, directory, _stamp(ref, directory))
    except ProfileError as e:
        raise PlanningError(str(e)) from None


def migration_plan_of(request, migration_link, group, profile,
                      host_version=None):
    """As :func:`migration_plan`, for the
    :class:`~rtmig_nova.model.profile.DirtyProfile` ``profile`` itself (a
    measurement: not cached).

    :raises PlanningError: no plan can be computed from it
    """
    try:
        return ledger.migration_plan(profile, request, float(migration_link),
                                     plan_options(group, host_version))
    except ValueError as e:
        raise PlanningError(f"cannot plan: {e}") from None


def evacuation_need(request, migration_link, group, host_version=None):
    """:class:`~rtmig_nova.model.ledger.EvacuationNeed` of a VM under
    ``request`` at ``migration_link`` bytes/s, with the ``[rtmig]`` options
    ``group``, by a QEMU ``host_version`` (see :func:`qemu_version`); a
    profile that cannot be loaded gives an infeasible need that says
    why."""
    try:
        pl = migration_plan(request, migration_link, group,
                            host_version=host_version)
    except PlanningError as e:
        return ledger.EvacuationNeed(False, str(e), float("inf"),
                                     migration_link, 0.0)
    return ledger.need_of_plan(pl, request)
