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

"""The flavor contract of a real-time VM (pure): ``rtmig:`` extra specs and
the Placement requests that go with them.

One declarative table, :data:`SPECS`, states every key, its form, its
bounds and its meaning; Nova's API validators
(:mod:`rtmig_nova.api.extra_specs`), the scheduler filter, the compute's
ledger and ``rtmig flavor`` all read specs through :func:`parse_specs`, so
they agree on what a real-time flavor asks for.  A flavor with no
``rtmig:`` key is not real-time.

Placement units (integers, see docs/nova.md):

- :data:`CPU_CLASS` ``CUSTOM_RTMIG_CPU_MILLI``: 1/1000 of one CPU's time;
  a vCPU reserving runtime Q every period P takes ceil(1000 Q / P).
- :data:`NET_CLASS` ``CUSTOM_RTMIG_NET_KBPS``: 1000 bit/s (125 bytes/s,
  Neutron's unit for minimum bandwidth); a rate r bytes/s takes
  ceil(8 r / 1000).
- :data:`HOST_TRAIT` ``CUSTOM_RTMIG_HOST``: the compute runs rtmig-nova.
"""

import dataclasses
import math
import re

from rtmig_nova import bounds
from rtmig_nova import units

PREFIX = "rtmig:"
CPU_CLASS = "CUSTOM_RTMIG_CPU_MILLI"
NET_CLASS = "CUSTOM_RTMIG_NET_KBPS"
HOST_TRAIT = "CUSTOM_RTMIG_HOST"
CPU_UNITS_PER_CPU = 1000
NET_BYTES_PER_UNIT = 125.0          # 1 kbit/s

# Bounds at the point of entry, from rtmig_nova.bounds (the command line
# and the planner use the same).  SCHED_DEADLINE refuses runtimes under
# 1024 ns; the CFS bandwidth controller takes periods of 1 ms to 1 s.
MIN_RUNTIME = bounds.DEADLINE_TIME.low                  # s
MIN_PERIOD = bounds.CGROUP_PERIOD.low                   # s
MAX_PERIOD = bounds.CGROUP_PERIOD.high                  # s
MAX_NET_RATE = bounds.NET_RATE.high                     # bytes/s
MIN_DEADLINE = bounds.DEADLINE.low                      # s
MAX_DEADLINE = bounds.DEADLINE.high                     # s
MIN_DOWNTIME = bounds.MAX_DOWNTIME.low                  # s: whole ms
MAX_DOWNTIME = bounds.MAX_DOWNTIME.high                 # s: QEMU's maximum
MAX_CONFIDENCE = bounds.CONFIDENCE.high                # as the planner's
MAX_PROFILE_NAME = 255
_PROFILE_NAME = re.compile(r"(builtin:)?[A-Za-z0-9][A-Za-z0-9._-]*")
_RESERVATION = re.compile(r"\s*([^/\s]+)\s*/\s*([^/\s]+)\s*")
_EPS = 1e-9


class SpecError(ValueError):
    """A ``rtmig:`` extra spec is malformed, out of bounds or inconsistent;
    the message names the key."""


@dataclasses.dataclass(frozen=True)
class RTRequest:
    """What a real-time flavor asks for (SI units).

    :ivar runtime: CPU time each vCPU is guaranteed per period, s
    :ivar period: the reservation period, s
    :ivar net_rate: the VM's own reserved network rate, bytes/s (0: none)
    :ivar deadline: a live migration must end within this, s
    :ivar max_downtime: longest pause of the guest in a migration, s
    :ivar confidence: probability with which both must hold
    :ivar profile: dirty profile to plan with (``builtin:NAME`` or a name
        known to the hosts) when no capture of the instance exists
    :ivar reclaim: whether each vCPU may run beyond its runtime on CPU
        time no reservation is using (SCHED_DEADLINE's reclaiming), taken
        from best-effort threads; False: the runtime is also a cap
    """
    runtime: float
    period: float
    net_rate: float
    deadline: float
    max_downtime: float
    confidence: float
    profile: str
    reclaim: bool = False

    @property
    def utilisation(self):
        """Share of one CPU each vCPU reserves."""
        return self.runtime / self.period

    @property
    def cpu_units_per_vcpu(self):
        return cpu_units(self.utilisation)


def _reservation(text, key):
    m = _RESERVATION.fullmatch(text)
    if not m:
        raise SpecError(f"{key}: expected RUNTIME/PERIOD as 2ms/10ms, got "
                        f"{text!r}")
    runtime = _duration(m.group(1), key + " runtime")
    period = _duration(m.group(2), key + " period")
    if not MIN_PERIOD <= period <= MAX_PERIOD:
        raise SpecError(f"{key}: period {units.format_duration(period)} "
                        f"outside {units.format_duration(MIN_PERIOD)}.."
                        f"{units.format_duration(MAX_PERIOD)}")
    if runtime < MIN_RUNTIME:
        raise SpecError(f"{key}: runtime {units.format_duration(runtime)} "
                        "below SCHED_DEADLINE's least runtime, 1024 ns")
    if runtime > period:
        raise SpecError(f"{key}: runtime {units.format_duration(runtime)} "
                        f"exceeds period {units.format_duration(period)}: "
                        "a vCPU cannot reserve more than one CPU")
    return runtime, period


def _parsed(parse, text, key):
    """``parse(text, key)`` with its ValueError as a SpecError."""
    try:
        return parse(text, key)
    except ValueError as e:
        raise SpecError(str(e)) from None


def _duration(text, key):
    """A duration > 0 (the runtime and period of a reservation, checked
    against each other by the caller)."""
    value = _parsed(units.parse_duration, text, key)
    if not value > 0:
        raise SpecError(f"{key}: {text!r} must be more than 0 s")
    return value


def _bounded(bound):
    """The parser of a key whose value is ``bound`` (rtmig_nova.bounds):
    the same check and message as the command line's."""
    return lambda text, key: _parsed(bound.parse, text, key)


def _rate(text, key):
    value = _parsed(units.parse_rate, text, key)
    if value > MAX_NET_RATE:
        raise SpecError(f"{key}: {text!r} above "
                        f"{units.format_rate(MAX_NET_RATE)}")
    return value


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _boolean(text, key):
    """true/yes/on/1 or false/no/off/0, any case (as Nova reads its own
    boolean extra specs)."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise SpecError(f"{key}: expected true or false, got {text[:60]!r}")


def _profile(text, key):
    if len(text) > MAX_PROFILE_NAME or not _PROFILE_NAME.fullmatch(text):
        raise SpecError(f"{key}: expected builtin:NAME or a profile name "
                        "(letters, digits, '.', '_', '-'; no path), got "
                        f"{text[:60]!r}")
    return text


@dataclasses.dataclass(frozen=True)
class Spec:
    """One ``rtmig:`` key: its form, whether a real-time flavor must set
    it, its default, what it means, and its parser (text -> value)."""
    name: str
    form: str
    required: bool
    default: str
    description: str
    parse: object

    @property
    def field(self):
        return self.name[len(PREFIX):]


SPECS = (
    Spec("rtmig:vcpu_reservation", "RUNTIME/PERIOD, e.g. 2ms/10ms", True,
         None,
         "CPU time each vCPU of the VM is guaranteed every period (a "
         "constant-bandwidth server on one physical CPU; runtime at least "
         "1024 ns and at most the period, period 1 ms to 1 s).",
         _reservation),
    Spec("rtmig:vcpu_reclaim", "true or false", False, "false",
         "Whether each vCPU may also run on CPU time that no reservation "
         "on its physical CPU is using (SCHED_DEADLINE's reclaiming, "
         "SCHED_FLAG_RECLAIM), taking it from best-effort tasks: its "
         "runtime stays guaranteed but is no longer a cap.  Shortens the "
         "guest's catch-up after a live migration's switch-over on a "
         "loaded host; admission counts the runtime only either way.",
         _boolean),
    Spec("rtmig:net_rate", "a rate, e.g. 10MB/s or 80Mbit/s", False, "0",
         "Network rate reserved for the VM's own traffic on the host's "
         "link, bytes/s (bits/s with 'bit').",
         _rate),
    Spec("rtmig:migration_deadline", "a duration, e.g. 60s", True, None,
         "A live migration of the VM must finish within this time (1 ms to "
         "one day).",
         _bounded(bounds.DEADLINE)),
    Spec("rtmig:max_downtime", "a duration, e.g. 300ms", True, None,
         "Longest pause of the VM at the switch-over of a live migration "
         "(1 ms to QEMU's maximum downtime-limit, 2000 s).",
         _bounded(bounds.MAX_DOWNTIME)),
    Spec("rtmig:confidence", "a probability, e.g. 0.95 or 95%", False,
         "0.95",
         "Probability with which a migration meets both the deadline and "
         "the downtime bound (more than 0, at most 0.999999: the "
         "planner's bound, as for rtmig plan --confidence).",
         _bounded(bounds.CONFIDENCE)),
    Spec("rtmig:profile", "builtin:NAME or a profile name", False,
         "builtin:default",
         "Dirty-page profile to plan the VM's migrations with when no "
         "capture of the instance exists: builtin:NAME (shipped with "
         "rtmig-nova) or the name of a profile in [rtmig] profile_dir on "
         "the scheduler and compute hosts.",
         _profile),
)
SPEC_BY_NAME = {s.name: s for s in SPECS}


def is_rt(extra_specs):
    """Whether a flavor's extra specs make it a real-time flavor."""
    return any(k.startswith(PREFIX) for k in extra_specs or ())


def check_spec(name, value):
    """Check one ``rtmig:`` key on its own (what Nova's API can see).

    :raises SpecError: unknown key, or a value out of form or bounds
    """
    spec = SPEC_BY_NAME.get(name)
    if spec is None:
        raise SpecError(f"unknown extra spec {name!r}; rtmig: keys are "
                        + ", ".join(SPEC_BY_NAME))
    if not isinstance(value, str):
        raise SpecError(f"{name}: expected a string, got {value!r}")
    return spec.parse(value, name)


def parse_specs(extra_specs):
    """The :class:`RTRequest` of a real-time flavor's extra specs, or
    ``None`` for a flavor without ``rtmig:`` keys.

    :raises SpecError: a key is unknown, malformed or out of bounds, or a
        required key is missing
    """
    if not is_rt(extra_specs):
        return None
    values = {}
    for name, value in extra_specs.items():
        if name.startswith(PREFIX):
            values[name] = check_spec(name, value)
    missing = [s.name for s in SPECS if s.required and s.name not in values]
    if missing:
        raise SpecError("a real-time flavor must set " + ", ".join(missing))
    for s in SPECS:
        if s.name not in values:
            values[s.name] = s.parse(s.default, s.name)
    runtime, period = values["rtmig:vcpu_reservation"]
    return RTRequest(runtime=runtime, period=period,
                     net_rate=values["rtmig:net_rate"],
                     deadline=values["rtmig:migration_deadline"],
                     max_downtime=values["rtmig:max_downtime"],
                     confidence=values["rtmig:confidence"],
                     profile=values["rtmig:profile"],
                     reclaim=values["rtmig:vcpu_reclaim"])


def cpu_units(utilisation):
    """Placement units (1/1000 CPU) of a utilisation, rounded up."""
    return int(math.ceil(utilisation * CPU_UNITS_PER_CPU - _EPS))


def net_units(rate):
    """Placement units (kbit/s) of ``rate`` bytes/s, rounded up."""
    return int(math.ceil(rate / NET_BYTES_PER_UNIT - _EPS))


def placement_request(vcpus, request):
    """The ``resources:``/``trait:`` extra specs that must accompany
    ``request`` on a flavor of ``vcpus`` vCPUs."""
    out = {f"resources:{CPU_CLASS}": str(vcpus * request.cpu_units_per_vcpu),
           f"trait:{HOST_TRAIT}": "required"}
    if request.net_rate > 0:
        out[f"resources:{NET_CLASS}"] = str(net_units(request.net_rate))
    return out


def check_placement_request(vcpus, extra_specs):
    """Why a flavor's Placement request disagrees with its ``rtmig:``
    specs (one line), or ``""`` when they agree.  A flavor that requests
    rtmig resources without ``rtmig:`` specs disagrees too."""
    rt_classes = [k for k in extra_specs
                  if k.split(":", 1)[-1] in (CPU_CLASS, NET_CLASS)]
    try:
        request = parse_specs(extra_specs)
    except SpecError as e:
        return str(e)
    if request is None:
        if rt_classes:
            return (f"requests {', '.join(sorted(rt_classes))} without "
                    "rtmig: specs")
        return ""
    want = placement_request(vcpus, request)
    for key, value in want.items():
        have = extra_specs.get(key)
        if have != value:
            return (f"{key}={have!r} disagrees with the rtmig: specs, "
                    f"which need {value!r} (set the flavor with 'rtmig "
                    "flavor')")
    extra = [k for k in rt_classes if k not in want]
    if extra:
        return (f"{', '.join(sorted(extra))} requested, but the rtmig: specs "
                "reserve no such resource")
    return ""


def flavor_properties(vcpus, specs, memory_bytes=None, link_capacity=None):
    """Every extra spec a real-time flavor of ``vcpus`` vCPUs needs: the
    ``rtmig:`` ``specs`` (key -> text, checked) and the matching Placement
    request, so the two cannot disagree.  With ``memory_bytes`` and
    ``link_capacity`` (bytes/s), a deadline shorter than one pass over the
    memory is refused too (every page counted whole: a real-time guest
    that has run a while has written its memory; the scheduler's plan,
    which knows the profile's zero pages, decides per host).

    :raises SpecError: as :func:`parse_specs`, or the deadline is too short
    """
    if isinstance(vcpus, bool) or not isinstance(vcpus, int) or \
            not bounds.VCPUS.contains(vcpus):
        raise SpecError(f"vcpus must be a whole number in "
                        f"{bounds.VCPUS.range_text}, got {vcpus!r}")
    request = parse_specs(specs)
    if request is None:
        raise SpecError("no rtmig: specs given")
    if memory_bytes is not None and link_capacity is not None:
        first = first_pass_time(memory_bytes, link_capacity)
        if first > request.deadline:
            raise SpecError(
                f"rtmig:migration_deadline: "
                f"{units.format_duration(request.deadline)} is shorter than "
                f"one pass over {units.format_bytes(memory_bytes)} at "
                f"{units.format_rate(link_capacity)}, "
                f"{units.format_duration(first)}")
    out = dict(specs)
    out.update(placement_request(vcpus, request))
    return out


def first_pass_time(memory_bytes, link_capacity):
    """Seconds to send ``memory_bytes`` once at ``link_capacity`` bytes/s:
    no migration of that much memory ends sooner."""
    return memory_bytes / link_capacity
