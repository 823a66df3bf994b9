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

"""rtmig-nova configuration.

Every option is registered on the global ``CONF`` object here, so that code
only needs ``from rtmig_nova import conf; conf.CONF.rtmig.model``.  Options
live in one module per group; :mod:`rtmig_nova.conf.opts` lists them for
``oslo-config-generator``.
"""

import re

from oslo_config import cfg

from rtmig_nova.conf import model as model_conf
from rtmig_nova.conf import nova as nova_conf

CONF = cfg.CONF

model_conf.register_opts(CONF)
nova_conf.register_opts(CONF)

# oslo.config's messages embed the repr of a LocationInfo; keep the file it
# names
_LOCATION = re.compile(r"LocationInfo\(.*?detail='([^']*)'\)", re.S)


def without_location_repr(e):
    """oslo.config's message of ``e`` with the LocationInfo(...) repr
    replaced by the file it names."""
    return _LOCATION.sub(lambda m: m.group(1), str(e))


def check_options(conf=None):
    """Read every ``[rtmig]`` option of ``conf`` (default :data:`CONF`)
    once.  oslo.config checks a value from a file only when it is read: a
    nova.conf value outside its bounds then stops the service at start,
    naming the option, instead of failing every plan later.

    :raises ValueError: the first bad option, and why
    """
    group = (CONF if conf is None else conf).rtmig
    for name in sorted(group):
        try:
            getattr(group, name)
        except cfg.ConfigFileValueError as e:
            raise ValueError(f"[rtmig] {name}: "
                             f"{without_location_repr(e)}") from None
