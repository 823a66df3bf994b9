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

"""``RTHeadroomWeigher``: prefer hosts with more free real-time CPU.

A positive ``[rtmig] headroom_weight_multiplier`` (the default, 1.0)
spreads real-time VMs over the hosts with the most real-time CPU left; a
negative one packs them.  Requests without ``rtmig:`` specs get weight 0
here.  Enable it in ``[filter_scheduler] weight_classes`` beside Nova's
weighers (``nova.scheduler.weights.all_weighers``).  The per-aggregate
key ``rtmig_headroom_weight_multiplier`` overrides the option.
"""

from nova.scheduler import utils
from nova.scheduler import weights

from rtmig_nova import conf
from rtmig_nova.model import flavor
from rtmig_nova.model import ledger
from rtmig_nova.scheduler import ledgers

CONF = conf.CONF


class RTHeadroomWeigher(weights.BaseHostWeigher):

    def weight_multiplier(self, host_state):
        return utils.get_weight_multiplier(
            host_state, "rtmig_headroom_weight_multiplier",
            CONF.rtmig.headroom_weight_multiplier)

    def _weigh_object(self, host_state, weight_properties):
        if not flavor.is_rt(weight_properties.flavor.extra_specs):
            return 0.0
        led = ledgers.host_ledger(host_state)
        return 0.0 if isinstance(led, ledger.LedgerError) else led.cpu_free
