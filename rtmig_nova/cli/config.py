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

from rtmig_nova.cli.errors import CliError


@dataclasses.dataclass
class Defaults:
    """The [rtmig] option values, read once."""
    model: str
    dirty_log: str
    send_order: str
    check_interval: float
    switchover_time: float
    setup_time: float
    setup_time_sd: float
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
        files = [config_file]
    try:
        # No search of /etc or ~, and no OS_RTMIG__* environment variables:
        # the defaults are the options' own or those of config_file.
        conf.CONF(args=[], project="rtmig-nova", default_config_files=files,
                  default_config_dirs=[], use_env=False)
        group = conf.CONF.rtmig
        return Defaults(**{f.name: getattr(group, f.name)
                           for f in dataclasses.fields(Defaults)})
    except cfg.Error as e:
        raise CliError(f"--config-file: {e}") from None
    finally:
        # Leave the global CONF as found (tests call main() repeatedly).
        conf.CONF.clear()
