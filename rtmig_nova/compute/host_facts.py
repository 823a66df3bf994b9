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

"""Facts of the compute host that bound its real-time capacity."""

from rtmig_nova.model import admission

RT_RUNTIME = "/proc/sys/kernel/sched_rt_runtime_us"
RT_PERIOD = "/proc/sys/kernel/sched_rt_period_us"


def _read_int(path, default):
    try:
        with open(path) as f:
            return int(f.read(64).strip())
    except (OSError, ValueError):
        return default


def rt_bound():
    """Per-CPU utilisation bound of real-time and deadline tasks:
    ``sched_rt_runtime_us / sched_rt_period_us`` (0.95 by default; the
    kernel's defaults when the files cannot be read)."""
    return admission.rt_bound(
        _read_int(RT_RUNTIME, admission.DEFAULT_RT_RUNTIME_US),
        _read_int(RT_PERIOD, admission.DEFAULT_RT_PERIOD_US))
