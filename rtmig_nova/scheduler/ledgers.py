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

"""The real-time ledger each rtmig compute publishes in its compute-node
stats (key :data:`STATS_KEY`), parsed once per published version.

Where it comes from: the compute's driver (nova/virt/rtmig) builds it from
the instances it hosts at every resource update
(:mod:`rtmig_nova.compute.extension`); Nova copies the driver's ``stats``
into the ComputeNode record and the scheduler's HostState, so the filter and
the weigher read it without a database query or an API call per host.
"""

from rtmig_nova.model import ledger

STATS_KEY = "rtmig_ledger"

# host uuid -> (published text, HostLedger or LedgerError)
_CACHE = {}
_MAX = 100000


def host_ledger(host_state):
    """The :class:`~rtmig_nova.model.ledger.HostLedger` a host published,
    or the :class:`~rtmig_nova.model.ledger.LedgerError` saying why there
    is none."""
    raw = (host_state.stats or {}).get(STATS_KEY)
    key = host_state.uuid
    hit = _CACHE.get(key)
    # Equal text, not the same object: HostState.stats is rebuilt from the
    # database at every compute update, and mostly says the same.
    if hit is not None and hit[0] == raw:
        return hit[1]
    if raw is None:
        result = ledger.LedgerError(
            "the host publishes no rtmig ledger (its compute_driver is not "
            "rtmig.RTLibvirtDriver, or it has not reported yet)")
    else:
        try:
            result = ledger.HostLedger.from_json(raw)
        except ledger.LedgerError as e:
            result = e
    if len(_CACHE) >= _MAX:
        _CACHE.clear()
    _CACHE[key] = (raw, result)
    return result
