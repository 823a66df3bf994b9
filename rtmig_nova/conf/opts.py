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

"""Entry point of oslo-config-generator (namespace ``rtmig_nova``).

Each module in :data:`_CONF_MODULES` has a ``list_opts()`` that returns
``{group: [opts]}``; the options of one group may come from several modules.
A new option module is added to the tuple.
"""

import collections

from rtmig_nova.conf import model
from rtmig_nova.conf import nova

_CONF_MODULES = (
    model,
    nova,
)


def list_opts():
    """Return ``[(group, [opts]), ...]`` for every rtmig-nova option."""
    groups = {}
    by_name = collections.OrderedDict()
    for module in _CONF_MODULES:
        for group, opts in module.list_opts().items():
            name = getattr(group, 'name', group)
            groups.setdefault(name, group)
            by_name.setdefault(name, []).extend(opts)
    return [(groups[name], opts) for name, opts in by_name.items()]
