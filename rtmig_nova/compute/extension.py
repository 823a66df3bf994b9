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

"""What the rtmig driver shim adds to Nova's libvirt driver for admission:
the host's real-time capacity in Placement, its ledger in the compute-node
stats, and the last word on a VM that lands here.

- :meth:`RTComputeExtension.update_provider_tree` *merges* the two rtmig
  inventories and the ``CUSTOM_RTMIG_HOST`` trait into the tree the
  libvirt driver computed (its VCPU, MEMORY_MB, DISK_GB and traits stay).
- :meth:`RTComputeExtension.stats` is the ledger the scheduler filter
  reads: the host's capacity and, per real-time instance on it, its vCPU
  reservations, network rate and planned migration time away.
- :meth:`RTComputeExtension.check_spawn` re-checks, under a host-wide lock
  and with the instances Nova has claimed on this host, that a real-time VM
  about to spawn fits; if the scheduler decided on a ledger that was out of
  date, Nova's ``ComputeResourcesUnavailable`` makes the compute
  reschedule the build to another host.
- :meth:`RTComputeExtension.guest_started`, :meth:`prepare_arrival`,
  :meth:`arrived`, :meth:`release_vm` and :meth:`reconcile_vms` keep the
  instances' own vCPU reservations
  (:mod:`~rtmig_nova.compute.vm_reservation`) in step with where they run.
"""

from nova import exception
from nova import objects
from nova.compute import task_states
from nova.compute import utils as compute_utils
from oslo_concurrency import lockutils
from oslo_log import log as logging

from rtmig_nova import conf
from rtmig_nova import planning
from rtmig_nova.compute import host_facts
from rtmig_nova.compute import vm_reservation
from rtmig_nova.model import flavor
from rtmig_nova.model import ledger
from rtmig_nova.scheduler import ledgers

LOG = logging.getLogger(__name__)
CONF = conf.CONF
# One lock for every decision that adds a real-time VM to this host.
ADMISSION_LOCK = "rtmig-admission"


def host_capacity(group, online_cpus):
    """:class:`~rtmig_nova.model.ledger.HostCapacity` from the ``[rtmig]``
    options ``group`` and the host's ``online_cpus`` count."""
    cpus = group.rt_cpu_count or online_cpus
    return ledger.HostCapacity(
        cpus=int(cpus), bound=host_facts.rt_bound(),
        link=group.link_capacity,
        migration_link=group.link_capacity * group.migration_link_share,
        migration_cpu=group.migration_cpu,
        max_evacuation=group.max_evacuation_time)


class RTComputeExtension:
    """Admission side of one compute service (its options read once, at
    start, as Nova's drivers read theirs)."""

    LOCK = ADMISSION_LOCK

    def __init__(self, online_cpus, host=None, get_guest=None,
                 qemu_version=None):
        """``get_guest(instance)``: Nova's ``Guest`` of a local instance
        (the driver's ``Host.get_guest``); ``qemu_version``: this host's
        QEMU as libvirt reports it (``virConnectGetVersion``; None: not
        known), which ``[rtmig] qemu_version = auto`` plans for.

        :raises ValueError: an ``[rtmig]`` option of nova.conf outside its
            bounds (the compute does not start)"""
        conf.check_options(CONF)
        self.capacity = host_capacity(CONF.rtmig, online_cpus)
        self.host = host
        self._get_guest = get_guest
        self.qemu_version = qemu_version
        self.vms = vm_reservation.RTVMReservations(host)
        LOG.info("rtmig: real-time capacity %s", self.capacity)

    def update_provider_tree(self, provider_tree, nodename):
        inventory = provider_tree.data(nodename).inventory
        inventory.update(self.capacity.inventories())
        provider_tree.update_inventory(nodename, inventory)
        provider_tree.add_traits(nodename, flavor.HOST_TRAIT)

    def _entries(self, instances, skip=None):
        entries = []
        for inst in instances:
            if inst.uuid == skip:
                continue
            fl = inst.flavor
            try:
                request = flavor.parse_specs(dict(fl.extra_specs or {}))
            except flavor.SpecError as e:
                # Counted at the largest it could be: never under-booked.
                LOG.warning("rtmig: instance %s has malformed rtmig specs "
                            "(%s); counted as one full CPU per vCPU",
                            inst.uuid, e)
                entries.append(ledger.VMEntry(
                    inst.uuid, fl.vcpus, self.capacity.bound, 0.0,
                    float("inf")))
                continue
            if request is None:
                continue
            need = planning.evacuation_need(
                request, self.capacity.migration_link, CONF.rtmig,
                self.qemu_version)
            entries.append(ledger.VMEntry(
                inst.uuid, fl.vcpus, request.utilisation, request.net_rate,
                need.time))
        return entries

    def host_ledger(self, context, host, nodename, skip=None):
        """The :class:`~rtmig_nova.model.ledger.HostLedger` of ``nodename``:
        the instances on it and those migrating or resizing to it (Nova
        moves ``instance.host`` only when they arrive), ``skip`` (a UUID)
        left out."""
        instances = list(objects.InstanceList.get_by_host_and_node(
            context, host, nodename, expected_attrs=["flavor"]))
        instances += self._incoming(context, host, nodename,
                                    {i.uuid for i in instances})
        return ledger.HostLedger(self.capacity,
                                 self._entries(instances, skip))

    @staticmethod
    def _incoming(context, host, nodename, here):
        out = []
        for m in objects.MigrationList.get_in_progress_by_host_and_node(
                context, host, nodename):
            if m.dest_compute != host or m.dest_node != nodename or \
                    m.instance_uuid in here:
                continue
            try:
                inst = objects.Instance.get_by_uuid(
                    context, m.instance_uuid,
                    expected_attrs=["flavor"])
            except exception.InstanceNotFound:
                continue
            if m.migration_type == "resize" and inst.new_flavor:
                inst.flavor = inst.new_flavor
            here.add(inst.uuid)
            out.append(inst)
        return out

    def stats(self, context, host, nodename):
        """``{STATS_KEY: ledger JSON}`` for the driver's resources."""
        led = self.host_ledger(context, host, nodename)
        LOG.debug("rtmig: ledger of %s: %d RT VMs, %.3g CPUs free, "
                  "evacuation %.4g s", nodename, len(led.vms), led.cpu_free,
                  led.evacuation_time)
        return {ledgers.STATS_KEY: led.to_json()}

    def check_spawn(self, context, instance, host, nodename):
        """:raises ComputeResourcesUnavailable: the instance's real-time
        reservations no longer fit here (Nova reschedules the build)."""
        fl = instance.flavor
        try:
            request = flavor.parse_specs(dict(fl.extra_specs or {}))
        except flavor.SpecError as e:
            raise exception.ComputeResourcesUnavailable(
                reason=f"rtmig: {e}")
        if request is None:
            return
        need = planning.evacuation_need(
            request, self.capacity.migration_link, CONF.rtmig,
            self.qemu_version)
        with lockutils.lock(ADMISSION_LOCK):
            led = self.host_ledger(context, host, nodename,
                                   skip=instance.uuid)
            why = ledger.admit_vm(led, fl.vcpus, request, need)
        if why:
            LOG.info("rtmig: refusing instance %s here: %s", instance.uuid,
                     why)
            raise exception.ComputeResourcesUnavailable(
                reason=f"rtmig: {why}")

    # -- the instances' own vCPU reservations ------------------------------

    @staticmethod
    def _request(instance):
        try:
            return flavor.parse_specs(dict(instance.flavor.extra_specs or {}))
        except flavor.SpecError:
            return None         # refused at the API and at check_spawn

    def _domain(self, instance):
        try:
            return self._get_guest(instance)._domain
        except (exception.InstanceNotFound, exception.InternalError):
            return None

    def guest_started(self, context, instance, guest):
        """Nova has just started a QEMU for ``instance`` here (Nova's
        ``Guest`` ``guest``, running or paused: spawn, hard reboot, power
        on, resume, rescue, resize, rebuild): reserve its vCPUs, whose
        threads are new.

        :raises ComputeResourcesUnavailable: refused during a spawn
            (nothing stays applied); Nova cleans the guest up and
            reschedules the build.  Refused otherwise, an instance fault
            says why and the instance runs unreserved (raising would put
            it in ERROR).
        """
        request = self._request(instance)
        if request is None or not guest.is_active():
            return          # a stopped instance's snapshot: no QEMU
        try:
            self.vms.reserve(instance, request, guest._domain)
        except vm_reservation.VMReservationError as e:
            if instance.task_state == task_states.SPAWNING:
                LOG.warning("rtmig: %s", e, instance=instance)
                raise exception.ComputeResourcesUnavailable(
                    reason=f"rtmig: {e}")
            LOG.error("rtmig: %s: the instance runs without its "
                      "reservation", e, instance=instance)
            compute_utils.add_instance_fault_from_exc(
                context, instance,
                exception.ComputeResourcesUnavailable(reason=f"rtmig: {e}"))

    def prepare_arrival(self, context, instance):
        """``instance`` is about to arrive by live migration: reserve its
        vCPUs as soon as the incoming QEMU has them (within its migration
        deadline and a minute for Nova's own steps)."""
        request = self._request(instance)
        if request is None:
            return
        self.vms.watch_arrival(instance, request,
                               lambda: self._domain(instance),
                               request.deadline + 60.0)

    def arrived(self, context, instance):
        """``instance`` has arrived: its reservation is in place when this
        returns, or else an instance fault says why (the guest runs
        here already; raising would put it in ERROR)."""
        request = self._request(instance)
        if request is None:
            return
        try:
            self.vms.arrived(instance, request, self._domain(instance),
                             timeout=5.0)
        except vm_reservation.VMReservationError as e:
            LOG.error("rtmig: %s: the instance runs here without its "
                      "reservation", e, instance=instance)
            compute_utils.add_instance_fault_from_exc(
                context, instance,
                exception.ComputeResourcesUnavailable(reason=f"rtmig: {e}"))

    def release_vm(self, instance, arriving=False):
        """``instance`` is gone from here (destroyed, left, or its arrival
        rolled back): release its reservation."""
        if arriving:
            self.vms.cancel_arrival(instance)
        else:
            self.vms.release(instance.uuid)

    def reconcile_vms(self, context, host, nodename):
        """Release the reservations of instances no longer on this node
        (nor arriving); returns their UUIDs."""
        instances = list(objects.InstanceList.get_by_host_and_node(
            context, host, nodename, expected_attrs=["flavor"]))
        here = {i.uuid for i in instances}
        self._incoming(context, host, nodename, here)
        return self.vms.reconcile(here)
