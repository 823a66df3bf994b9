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

"""The ``[rtmig]`` oslo.config options: the defaults of the model
settings, read once per run."""

import dataclasses
import os
import re

from rtmig_nova import bounds
from rtmig_nova.cli.errors import CliError

# The [rtmig] values the command reads, and their bounds: oslo.config
# checks min and max, these checks add the open ends (confidence > 0).
_BOUNDS = {"check_interval": bounds.CHECK_INTERVAL,
           "switchover_time": bounds.SWITCHOVER_TIME,
           "send_queue_cap": bounds.SEND_QUEUE_CAP,
           "setup_time": bounds.SETUP_TIME,
           "setup_time_sd": bounds.SETUP_TIME,
           "send_rate_sd": bounds.LOG_SPREAD,
           "max_rounds": bounds.MAX_ROUNDS,
           "confidence": bounds.CONFIDENCE,
           "cpu_cost_per_page": bounds.CPU_COST_PER_PAGE,
           "cpu_margin": bounds.CPU_MARGIN,
           "deadline_period": bounds.DEADLINE_PERIOD,
           "cgroup_period": bounds.CGROUP_PERIOD_US}
# oslo.config's ConfigFileValueError names the option and embeds the repr
# of a LocationInfo; the message keeps the option and the reason only.
_VALUE_ERROR = re.compile(r"Value for option (\S+) from .*? is not valid: "
                          r"(.*)$", re.S)


@dataclasses.dataclass
class Defaults:
    """The [rtmig] option values, read once."""
    model: str
    dirty_log: str
    send_order: str
    qemu_version: str
    check_interval: float
    switchover_time: float
    send_queue_cap: int
    setup_time: float
    setup_time_sd: float
    send_rate_sd: float
    max_rounds: int
    confidence: float
    cpu_cost_per_page: float
    cpu_margin: float
    deadline_period: float
    cgroup_period: int
    default_profile: str
    reservation_state_dir: str


def load_defaults(config_file=None):
    """Read the [rtmig] options from ``config_file`` (or only their
    defaults).  oslo.config never searches /etc or ~ here."""
    from oslo_config import cfg

    from rtmig_nova import conf

    files = []
    if config_file is not None:
        if not os.path.isfile(config_file):
            raise CliError(f"--config-file: {config_file}: no such file")
        if os.path.getsize(config_file) > bounds.MAX_CONFIG_BYTES:
            raise CliError(f"--config-file: {config_file}: larger than "
                           f"{bounds.fmt('size', bounds.MAX_CONFIG_BYTES)}")
        files = [config_file]
    where = f"--config-file: {config_file}: [rtmig]" if files else "[rtmig]"
    try:
        # No search of /etc or ~, and no OS_RTMIG__* environment variables:
        # the defaults are the options' own or those of config_file.
        conf.CONF(args=[], project="rtmig-nova", default_config_files=files,
                  default_config_dirs=[], use_env=False)
        group = conf.CONF.rtmig
        values = {f.name: getattr(group, f.name)
                  for f in dataclasses.fields(Defaults)}
    except cfg.ConfigFileValueError as e:
        m = _VALUE_ERROR.match(str(e))
        if m:
            name, why = m.group(1), m.group(2)
            if name in _BOUNDS:
                why += f"; allowed: {_BOUNDS[name].range_text}"
            raise CliError(f"{where} {name}: {why}") from None
        raise CliError(
            f"--config-file: {conf.without_location_repr(e)}") from None
    except cfg.Error as e:
        raise CliError(
            f"--config-file: {conf.without_location_repr(e)}") from None
    except (UnicodeDecodeError, ValueError) as e:
        # oslo.config's parser reads text: bytes that are not UTF-8.
        raise CliError(f"--config-file: {config_file}: not a config file "
                       f"({str(e)[:100]})") from None
    finally:
        # Leave the global CONF as found (tests call main() repeatedly).
        conf.CONF.clear()
    for name, bound in _BOUNDS.items():
        if values[name] is None:
            raise CliError(f"{where} {name}: empty value; allowed: "
                           f"{bound.range_text}")
        bound.check(values[name], f"{where} {name}")
    return Defaults(**values)
