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

"""``RTReservationFilter``: real-time VMs only where their reservations
fit and they can still be migrated away in time.

Enable it with two nova.conf lines::

    [filter_scheduler]
    available_filters = nova.scheduler.filters.all_filters
    available_filters = rtmig_nova.scheduler.filters.all_filters
    enabled_filters = ...,RTReservationFilter

Placement refuses what exceeds the totals (the flavor requests
``CUSTOM_RTMIG_CPU_MILLI`` and ``CUSTOM_RTMIG_NET_KBPS``; claims are
generation-checked, so racing schedulers cannot both take the last
capacity).  This filter checks what Placement cannot see, with the
functions of :mod:`rtmig_nova.model.ledger` that the compute uses too: the
per-CPU fit of the vCPU reservations (partitioned EDF under the kernel's RT
bound) and the migration headroom.  A request without ``rtmig:`` specs
passes at once.
"""

from nova import exception
from nova.scheduler import filters
from oslo_log import log as logging
from stevedore import extension

from rtmig_nova import conf
from rtmig_nova import planning
from rtmig_nova.model import flavor
from rtmig_nova.model import ledger
from rtmig_nova.scheduler import ledgers

LOG = logging.getLogger(__name__)
CONF = conf.CONF
NAMESPACE = "rtmig_nova.scheduler.filters"


def all_filters():
    """The filter classes registered under :data:`NAMESPACE`, for
    ``[filter_scheduler] available_filters``."""
    return [ext.plugin for ext in extension.ExtensionManager(NAMESPACE)]


class _Request:
    """What one scheduling request asks of every host, computed once."""

    def __init__(self, spec_obj):
        self.error = ""
        self.request = None
        fl = spec_obj.flavor
        specs = dict(fl.extra_specs or {})
        self.vcpus = fl.vcpus
        self.error = flavor.check_placement_request(fl.vcpus, specs)
        if not self.error:
            self.request = flavor.parse_specs(specs)
        self._needs = {}

    @property
    def is_rt(self):
        return self.request is not None or bool(self.error)

    def need(self, migration_link):
        """The VM's planned migration away at ``migration_link``: one plan
        per distinct link share, not one per host."""
        need = self._needs.get(migration_link)
        if need is None:
            try:
                need = planning.evacuation_need(self.request,
                                                migration_link, CONF.rtmig)
            except Exception as e:
                # A bug in planning must not become a traceback in the
                # scheduler, nor an admission: the host is refused.
                LOG.error("rtmig: planning the migration of %s failed: "
                          "%s: %s", self.request, type(e).__name__, e)
                need = ledger.EvacuationNeed(
                    False, f"internal error while planning "
                           f"({type(e).__name__})", float("inf"),
                    migration_link, 0.0)
            self._needs[migration_link] = need
        return need


class RTReservationFilter(filters.BaseHostFilter):
    """Admit a real-time VM only where its CPU reservations fit per CPU and
    every real-time VM on the host can still be migrated away in time."""

    # NOTE: a rebuild keeps the host, its claims and the flavor.
    RUN_ON_REBUILD = False

    def __init__(self):
        super().__init__()
        # a bad [rtmig] option stops the scheduler at start, named
        conf.check_options(CONF)
        self._index = 0

    def run_filter_for_index(self, index):
        # NOTE: Nova asks this right before filter_all for the index-th
        # instance of a multi-create; the filter counts the earlier ones as
        # if they had landed on each host (they may have).
        self._index = index
        return True

    def filter_all(self, filter_obj_list, spec_obj):
        from nova.scheduler import utils
        hosts = list(filter_obj_list)
        if not self.RUN_ON_REBUILD and utils.request_is_rebuild(spec_obj):
            return hosts
        req = _Request(spec_obj)
        if not req.is_rt:
            return hosts
        if req.error:
            LOG.info("rtmig: request %(uuid)s refused: %(why)s",
                     {"uuid": spec_obj.instance_uuid, "why": req.error})
            self._refuse(f"rtmig: the flavor is inconsistent: {req.error}")
            return []
        passed, reasons = [], []
        for host_state in hosts:
            why = self._host_reason(host_state, req)
            if why:
                LOG.debug("%(host_state)s fails rtmig reservation "
                          "requirements: %(why)s",
                          {"host_state": host_state, "why": why})
                reasons.append(why)
            else:
                passed.append(host_state)
        if hosts and not passed:
            kinds = sorted({r.split(":", 1)[0] for r in reasons})
            LOG.info("rtmig: no host can take request %(uuid)s: %(why)s",
                     {"uuid": spec_obj.instance_uuid,
                      "why": "; ".join(reasons[:5])})
            self._refuse(f"rtmig: no host has room for the real-time "
                         f"reservations ({', '.join(kinds)}): {reasons[0]}")
        return passed

    def host_passes(self, host_state, spec_obj):
        req = _Request(spec_obj)
        if not req.is_rt:
            return True
        return not req.error and not self._host_reason(host_state, req)

    def _refuse(self, reason):
        # Nothing is claimed yet for the first instance of a request, so
        # the reason can reach the fault; later instances fall back to
        # Nova's own NoValidHost, which cleans up their claims.
        if self._index == 0:
            raise exception.NoValidHost(reason=reason)

    def _host_reason(self, host_state, req):
        led = ledgers.host_ledger(host_state)
        if isinstance(led, ledger.LedgerError):
            return f"ledger: {led}"
        need = req.need(led.capacity.migration_link)
        if self._index:
            led = _with_copies(led, req, need, self._index)
        return ledger.admit_vm(led, req.vcpus, req.request, need)


def _with_copies(led, req, need, copies):
    """``led`` with ``copies`` more VMs of this request on it."""
    extra = [ledger.VMEntry(f"pending-{i}", req.vcpus,
                            req.request.utilisation, req.request.net_rate,
                            need.time) for i in range(copies)]
    return ledger.HostLedger(led.capacity, led.vms + tuple(extra))
