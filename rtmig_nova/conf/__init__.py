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

from oslo_config import cfg

from rtmig_nova.conf import model as model_conf
from rtmig_nova.conf import nova as nova_conf

CONF = cfg.CONF

model_conf.register_opts(CONF)
nova_conf.register_opts(CONF)
