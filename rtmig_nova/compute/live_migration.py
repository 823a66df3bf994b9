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

"""What the rtmig driver shim adds to Nova's libvirt driver for the live
migration of a real-time instance (one whose flavor has ``rtmig:`` specs);
other instances migrate exactly as Nova migrates them.

- :meth:`RTLiveMigration.check_destination` (destination, in
  ``check_can_live_migrate_destination``): the instance and its own
  migration away must fit this host's ledger, with the migrations already
  coming in counted, under the same lock as a spawn.  Otherwise Nova's
  ``MigrationPreCheckError``: the conductor tries its next host, and a
  migration forced to this host fails with the instance untouched.
- :meth:`RTLiveMigration.plan` (source, in
  ``check_can_live_migrate_source`` and again when the migration starts):
  the model's plan from the first of ``[rtmig] migration_profile_sources``
  that has a profile (:mod:`~rtmig_nova.compute.profile_sources`: the
  instance's captured profile, libvirt's dirty rate of the running domain,
  the flavor's ``rtmig:profile``), at the host's migration link share.
  An infeasible plan refuses the migration before anything changes
  (``NoValidHost``: no destination can help).
- :class:`RTGuest` (source, for the migration's duration): Nova's Guest
  with the plan's bandwidth in ``migrateToURI3``, the plan's downtime limit
  set once and kept (Nova's downtime steps would raise it past
  ``rtmig:max_downtime``), and neither auto-converge (it throttles the
  vCPUs) nor post-copy (its downtime is unbounded).

Notifications (oslo.messaging on Nova's notification transport, publisher
``rtmig.HOST``, priority INFO):

- ``rtmig.migration.plan``: instance_uuid, profile_source (the source's
  name: ``instance``, ``dirty_rate``, ``flavor``), profile (its file,
  flavor reference or measurement), bandwidth_bytes_per_s, downtime_limit_s,
  deadline_s, max_downtime_s, confidence, probability,
  predicted_total_time_s (at the confidence), predicted_downtime_s (at the
  confidence), migration_cpu_share.
- ``rtmig.migration.end``: instance_uuid, outcome (``completed`` or
  ``failed``), the plan's predictions and measured total_time_s,
  downtime_s (None when libvirt did not say), memory_bytes, deadline_met,
  final_bandwidth_bytes_per_s, replans.
- ``rtmig.migration.replan``: the closed loop's decisions
  (:mod:`~rtmig_nova.compute.closed_loop`): instance_uuid, observed, the
  new plan, decision, applied.
- ``rtmig.admission.reject``: instance_uuid, host, stage (``destination``,
  ``plan`` or ``reserve``), reason.

While the migration runs, the closed loop re-plans it from libvirt's job
stats (``[rtmig] replan``): more bandwidth within the host's reserved
share, or an early abort.
"""

import dataclasses
import functools
import ipaddress
import socket
import threading
import time

from lxml import etree
from nova import exception
from nova import rpc
from nova.compute import utils as compute_utils
from oslo_concurrency import lockutils
from oslo_log import log as logging

from rtmig_nova import conf
from rtmig_nova import planning
from rtmig_nova.compute import closed_loop
from rtmig_nova.compute import profile_sources
from rtmig_nova.enforce import deadline
from rtmig_nova.enforce import libvirt_controls
from rtmig_nova.enforce import netshape
from rtmig_nova.enforce import reservation
from rtmig_nova.model import flavor
from rtmig_nova.model import ledger

LOG = logging.getLogger(__name__)
CONF = conf.CONF

EVENT_PLAN = "rtmig.migration.plan"
EVENT_END = "rtmig.migration.end"
EVENT_REJECT = "rtmig.admission.reject"
MIB = libvirt_controls.MIB
# How this service labels its reservations (state files in [rtmig]
# reservation_state_dir), so that it releases only its own.
LABEL_PREFIX = "nova-live-migration {host} "
# What a stepped downtime would get instead of the plan's, and what would
# turn a bounded pre-copy into an unbounded one.
_LIBVIRT_FLAGS_STRIPPED = ("VIR_MIGRATE_AUTO_CONVERGE", "VIR_MIGRATE_POSTCOPY")


@dataclasses.dataclass
class MigrationPlan:
    """The plan one live migration runs with.

    :ivar bandwidth: bytes/s (whole MiB/s, libvirt's unit)
    :ivar downtime_limit: QEMU's downtime limit, s (whole ms)
    :ivar predicted_time: total time at the confidence, s
    :ivar predicted_downtime: downtime at the confidence, s
    :ivar cpu: the migration thread's
        :class:`~rtmig_nova.model.sizing.CpuReservation`
    :ivar model_plan: the model's :class:`~rtmig_nova.model.sizing.Plan`
    :ivar dirty_profile: the
        :class:`~rtmig_nova.model.profile.DirtyProfile` planned from (for
        the closed loop; None: not loaded)
    """
    instance_uuid: str
    request: flavor.RTRequest
    profile_source: str
    profile: str
    bandwidth: float
    downtime_limit: float
    probability: float
    predicted_time: float
    predicted_downtime: float
    cpu: object = None
    model_plan: object = dataclasses.field(default=None, repr=False)
    dirty_profile: object = dataclasses.field(default=None, repr=False)

    @classmethod
    def of(cls, instance_uuid, request, profile_source, profile, pl,
           dirty_profile=None):
        """The plan of the model's :class:`~rtmig_nova.model.sizing.Plan`
        ``pl`` (feasible) of ``dirty_profile``, with its predictions at the
        confidence."""
        q = request.confidence
        return cls(instance_uuid, request, profile_source, profile,
                   float(pl.bandwidth), float(pl.downtime_limit),
                   float(pl.probability),
                   float(pl.prediction.total_time.quantile(q)),
                   float(pl.prediction.downtime.quantile(q)), pl.cpu, pl,
                   dirty_profile)

    @property
    def bandwidth_mib(self):
        """The bandwidth in libvirt's unit, MiB/s, as the reservation's
        migration step sets it."""
        return libvirt_controls.migration_params(self.bandwidth)["bandwidth"]

    @property
    def qemu_version(self):
        """The QEMU release the plan was made for ("MAJOR.MINOR"), or None
        (no model plan: the models' default)."""
        if self.model_plan is None:
            return None
        return (self.model_plan.settings or {}).get("qemu_version")

    @property
    def downtime_limit_ms(self):
        """The downtime limit in libvirt's unit, ms (at least 1), as the
        reservation's migration step sets it."""
        return max(1, libvirt_controls.downtime_ms(self.downtime_limit))

    def payload(self):
        r = self.request
        return {"instance_uuid": self.instance_uuid,
                "profile_source": self.profile_source,
                "profile": self.profile,
                "bandwidth_bytes_per_s": self.bandwidth,
                "downtime_limit_s": self.downtime_limit,
                "deadline_s": r.deadline,
                "max_downtime_s": r.max_downtime,
                "confidence": r.confidence,
                "probability": self.probability,
                "predicted_total_time_s": self.predicted_time,
                "predicted_downtime_s": self.predicted_downtime,
                "migration_cpu_share": (self.cpu.share if self.cpu
                                        else None),
                "qemu_version": self.qemu_version}


def instance_request(instance):
    """The instance's :class:`~rtmig_nova.model.flavor.RTRequest`, or None
    for an instance without ``rtmig:`` specs.

    :raises MigrationPreCheckError: its specs are malformed
    """
    try:
        return flavor.parse_specs(dict(instance.flavor.extra_specs or {}))
    except flavor.SpecError as e:
        raise exception.MigrationPreCheckError(
            reason=f"rtmig: instance {instance.uuid}: {e}")


def _notifier(host):
    """An oslo.messaging notifier on Nova's notification transport, with
    the ``[oslo_messaging_notifications]`` driver and topics (Nova's own
    legacy notifier refuses event types it does not know)."""
    import oslo_messaging
    return oslo_messaging.Notifier(
        rpc.NOTIFICATION_TRANSPORT, publisher_id=f"rtmig.{host}",
        serializer=rpc.RequestContextSerializer(rpc.JsonPayloadSerializer()))


class RTLiveMigration:
    """Live-migration side of one compute service; ``admission`` is its
    :class:`~rtmig_nova.compute.extension.RTComputeExtension`."""

    def __init__(self, admission, host, get_guest=None):
        """``get_guest(instance)``: Nova's ``Guest`` of a local instance
        (the driver's ``Host.get_guest``), for the sources that measure it.

        :raises profile_sources.SourceError: ``[rtmig]
            migration_profile_sources`` names a source not installed
        """
        self.admission = admission
        self.host = host
        self._get_guest = get_guest
        self._shaping_lock = threading.Lock()
        self._shaped = None     # uuid of the migration shaped now
        self._notifier = _notifier(host)
        self.sources = profile_sources.load(
            CONF.rtmig.migration_profile_sources)

    @property
    def capacity(self):
        return self.admission.capacity

    def _notify_reject(self, context, instance, stage, reason):
        LOG.info("rtmig: refusing live migration (%s): %s", stage, reason,
                 instance=instance)
        self._notifier.info(context, EVENT_REJECT, {
            "instance_uuid": instance.uuid, "host": self.host,
            "stage": stage, "reason": reason})

    def _reject(self, context, instance, stage, reason,
                error=exception.MigrationPreCheckError):
        self._notify_reject(context, instance, stage, reason)
        raise error(reason=f"rtmig: {reason}")

    # -- destination -------------------------------------------------------

    def check_destination(self, context, instance, nodename):
        """Admit the incoming ``instance`` to this host's ledger.

        :raises MigrationPreCheckError: it does not fit (per CPU, network,
            or the host's evacuation headroom), or its specs are malformed
        """
        request = instance_request(instance)
        if request is None:
            return
        need = planning.evacuation_need(
            request, self.capacity.migration_link, CONF.rtmig,
            getattr(self.admission, "qemu_version", None))
        with lockutils.lock(self.admission.LOCK):
            led = self.admission.host_ledger(context, self.host, nodename,
                                             skip=instance.uuid)
            why = ledger.admit_vm(led, instance.flavor.vcpus, request, need)
        if why:
            self._reject(context, instance, "destination",
                         f"{self.host} cannot take instance "
                         f"{instance.uuid}: {why}")

    # -- source --------------------------------------------------------------

    def _guest(self, instance):
        if self._get_guest is None:
            return None
        try:
            return self._get_guest(instance)
        except exception.InstanceNotFound:
            return None

    def plan(self, context, instance, starting=False):
        """The :class:`MigrationPlan` of migrating ``instance`` away, or
        None for an instance without ``rtmig:`` specs.  The profile is the
        first :mod:`~rtmig_nova.compute.profile_sources` source's that has
        one;
        at the checks each source asked may start a measurement, which
        the plan made as the migration is ``starting`` waits for (and
        sends as ``rtmig.migration.plan``).

        :raises NoValidHost: no feasible plan (the reason says which
            limit), after an ``rtmig.admission.reject`` notification; Nova's
            conductor then sets the migration to ``error`` and leaves the
            instance ACTIVE where it is
        """
        request = instance_request(instance)
        if request is None:
            return None
        guest = self._guest(instance)
        found = None
        for src in self.sources:
            if not starting:
                src.prepare(instance, guest)
            found = src.find(instance, request, guest, wait=starting)
            if found is not None:
                break
        if found is None:
            self._reject(context, instance, "plan",
                         f"instance {instance.uuid}: none of the profile "
                         f"sources {', '.join(s.name for s in self.sources)} "
                         f"has a profile", exception.NoValidHost)
        dirty_profile = found.profile
        # the QEMU that will migrate it: this host's
        host_qemu = None if guest is None else \
            libvirt_controls.hypervisor_version(guest._domain)
        try:
            if found.profile is None:
                pl = planning.migration_plan(
                    request, self.capacity.migration_link, CONF.rtmig,
                    profile_ref=found.ref, host_version=host_qemu)
                dirty_profile = planning.plan_profile(request, CONF.rtmig,
                                                      found.ref)
            else:
                pl = planning.migration_plan_of(
                    request, self.capacity.migration_link, CONF.rtmig,
                    found.profile, host_version=host_qemu)
        # The source's plan holds for every destination: NoValidHost ends
        # the conductor's search at once (MigrationPreCheckError would make
        # it try, and plan for, every other host).
        except planning.PlanningError as e:
            self._reject(context, instance, "plan",
                         f"instance {instance.uuid}: profile {found.ref}: "
                         f"{e}", exception.NoValidHost)
        if not pl.feasible:
            self._reject(context, instance, "plan",
                         f"instance {instance.uuid} cannot be migrated "
                         f"within rtmig:migration_deadline="
                         f"{request.deadline:g}s and rtmig:max_downtime="
                         f"{request.max_downtime:g}s over "
                         f"{self.capacity.migration_link:.4g} B/s: "
                         f"{pl.reason}", exception.NoValidHost)
        mp = MigrationPlan.of(instance.uuid, request, found.source,
                              found.ref, pl, dirty_profile)
        if starting:
            self._notifier.info(context, EVENT_PLAN, mp.payload())
            LOG.info("rtmig: live migration at %d MiB/s, downtime limit "
                     "%d ms (profile: %s)", mp.bandwidth_mib,
                     mp.downtime_limit_ms, found.ref, instance=instance)
        return mp

    # -- the source's reservation --------------------------------------------

    @property
    def label_prefix(self):
        return LABEL_PREFIX.format(host=self.host)

    def _refuse_reservation(self, context, instance, reason):
        reason = f"reserving on {self.host}: {reason}"
        self._notify_reject(context, instance, "reserve", reason)
        compute_utils.add_instance_fault_from_exc(
            context, instance,
            exception.MigrationError(reason=f"rtmig: {reason}"))

    def _thread_deadline(self, mp):
        """The plan's SCHED_DEADLINE triple for the migration thread, or
        None (no CPU in the plan, or ``[rtmig] migration_thread_deadline``
        off)."""
        if mp.cpu is None or not CONF.rtmig.migration_thread_deadline:
            return None
        return reservation.migration_thread_deadline(mp.cpu)

    @staticmethod
    def _thread_flags():
        """``SCHED_FLAG_*`` of the migration thread's SCHED_DEADLINE:
        reclaiming unless ``[rtmig] migration_thread_reclaim`` is off."""
        return deadline.SCHED_FLAG_RECLAIM \
            if CONF.rtmig.migration_thread_reclaim else 0

    def _shaping(self, mp, dest, migrate_data):
        """The HTB plan of the migration's stream on ``[rtmig]
        migration_interface``, or None (no interface set)."""
        ifname = CONF.rtmig.migration_interface
        if not ifname:
            return None
        ports = (CONF.rtmig.migration_port_min, CONF.rtmig.migration_port_max)
        if ports[0] > ports[1]:
            raise ValueError(f"[rtmig] migration_port_min {ports[0]} > "
                             f"migration_port_max {ports[1]}")
        # the class carries what libvirt enforces: whole MiB/s
        return reservation.migration_shaping(
            ifname, CONF.rtmig.link_capacity, mp.bandwidth_mib * MIB, ports,
            migration_peer(dest, migrate_data), qemu_version=mp.qemu_version)

    def _new_reservation(self, instance, steps, connect):
        return reservation.Reservation(
            steps, CONF.rtmig.reservation_state_dir,
            label=self.label_prefix + instance.uuid, connect=connect)

    def reserve_source(self, context, instance, mp, guest, uri, connect,
                       dest=None, migrate_data=None):
        """Apply, all or nothing, the source's reservation for the
        migration ``mp`` of ``instance`` to ``dest`` (Nova's destination
        host and migrate_data): libvirt's migration speed and downtime
        limit, the migration thread's CPU (the emulator cgroup's CFS
        bandwidth) and, with ``[rtmig] migration_interface``, the HTB class
        of the migration's stream.  ``guest`` (an :class:`RTGuest`) learns
        the domain's settings from before, so that they, not the temporary
        ones, go into the destination's definition, and puts the migration
        thread under SCHED_DEADLINE once it runs
        (:meth:`reserve_migration_thread`).  Returns the list of
        :class:`~rtmig_nova.enforce.reservation.Reservation` held, for
        :meth:`release`.

        A step that fails (the ones before it undone), or SCHED_DEADLINE
        parameters the kernel's bounds refuse, return None after an
        ``rtmig.admission.reject`` notification and an instance fault: the
        caller rolls the migration back (Nova puts an instance whose
        driver ``live_migration`` raises in ERROR).
        """
        dl = self._thread_deadline(mp)
        if dl is not None:
            try:
                deadline.validate_deadline(*dl)
            except ValueError as e:
                self._refuse_reservation(
                    context, instance, f"SCHED_DEADLINE of the migration "
                    f"thread: {e}")
                return None
        try:
            shaping = self._shaping(mp, dest, migrate_data)
            if shaping is not None:
                netshape.validate(shaping)
        except ValueError as e:
            self._refuse_reservation(context, instance, f"shaping: {e}")
            return None
        if shaping is not None and not self._take_interface(instance):
            self._refuse_reservation(
                context, instance, f"shaping: {shaping.ifname} carries the "
                f"migration of instance {self._shaped} (one shaped "
                f"migration at a time)")
            return None
        cpu = reservation.migration_thread_cpu(mp.cpu) if mp.cpu else None
        lv = libvirt_controls._libvirt_of(guest._domain)
        try:
            guest.remember_cputune(cpu or {})
            res = self._new_reservation(
                instance, reservation.migration_steps(
                    uri, instance.uuid, mp.bandwidth, mp.downtime_limit,
                    cpu=cpu, shaping=shaping, connect=connect), connect)
            res.apply()
        except (reservation.ReservationError, OSError, lv.libvirtError,
                etree.LxmlError) as e:
            self._give_interface(instance)
            self._refuse_reservation(context, instance, e)
            return None
        held = [res]
        cap = CONF.rtmig.send_queue_cap
        pacing = None if shaping is None else \
            reservation.migration_pacing(shaping)
        if dl is not None or cap or pacing:
            guest.when_running = functools.partial(
                self.reserve_migration_thread, context, instance, guest, dl,
                held, connect, cap, migration_peer(dest, migrate_data),
                (CONF.rtmig.migration_port_min,
                 CONF.rtmig.migration_port_max), pacing)
        if CONF.rtmig.replan and mp.model_plan is not None and \
                mp.dirty_profile is not None:
            guest.closed_loop = closed_loop.ClosedLoop(
                self, context, instance, mp, guest, held, uri, connect,
                shaping)
        return held

    def notify(self, context, event_type, payload):
        """Send ``event_type`` (INFO) on this service's notifier."""
        self._notifier.info(context, event_type, payload)

    def raise_bandwidth(self, instance, mp, guest, bandwidth, held, uri,
                        connect, shaping=None):
        """Raise the running migration ``mp`` of ``instance`` to
        ``bandwidth`` bytes/s (whole MiB/s): libvirt's migration speed, the
        migration thread's SCHED_DEADLINE runtime for it (if it runs under
        it) and the migration's HTB class (``shaping``, the plan's) with
        the stream's pacing, as one reservation over the ones ``held``
        (added to them: released with them, last first).  Returns None,
        or why it was refused (nothing changed).

        The emulator cgroup's CFS quota stays: libvirt changes it only
        outside a migration job ("cannot acquire state change lock (held
        by monitor=remoteDispatchDomainMigratePerform3Params)" after 30 s),
        and it does not throttle a SCHED_DEADLINE thread (CFS bandwidth
        control is the fair class's).  Without SCHED_DEADLINE the quota
        caps the thread: :meth:`raise_cpu_limit` says how far."""
        from rtmig_nova.model import sizing
        steps = reservation.migration_steps(
            uri, instance.uuid, bandwidth, mp.downtime_limit,
            connect=connect)
        lv = libvirt_controls._libvirt_of(guest._domain)
        try:
            thread_deadline = pacing = None
            peer, ports = None, netshape.MIGRATION_PORTS
            if self._thread_deadline(mp) is not None:
                pl = mp.model_plan
                thread_deadline = reservation.migration_thread_deadline(
                    sizing.cpu_reservation(
                        bandwidth, mp.dirty_profile.page_size,
                        pl.cpu_cost_per_page, pl.cpu_margin,
                        mp.cpu.period_ns / 1e9, mp.cpu.cgroup_period_us,
                        mp.qemu_version or sizing.DEFAULT_QEMU_VERSION))
            if shaping is not None:
                raised = reservation.migration_shaping(
                    shaping.ifname, shaping.link_rate,
                    libvirt_controls.migration_params(bandwidth)["bandwidth"]
                    * MIB, shaping.migration.match.dst_ports,
                    shaping.migration.match.peer, shaping.netns,
                    qemu_version=mp.qemu_version)
                netshape.validate(raised)
                steps.append(reservation.ShapingRateStep(
                    shaping.ifname, shaping.netns,
                    netshape.migration_rates(raised)))
                # the stream's pacing follows its class
                pacing = reservation.migration_pacing(raised)
                peer = shaping.migration.match.peer
                ports = tuple(shaping.migration.match.dst_ports)
            # the cap set when the migration started stays: only re-paced
            steps += reservation.running_migration_steps(
                guest._domain, thread_deadline, None, peer, ports, pacing,
                self._thread_flags())
            res = self._new_reservation(instance, steps, connect)
            res.apply()
        except (reservation.ReservationError, ValueError, OSError,
                libvirt_controls.LibvirtError, lv.libvirtError) as e:
            return str(e)
        held.append(res)
        return None

    def raise_cpu_limit(self, mp):
        """The share of a CPU the migration thread of ``mp`` may get when
        its bandwidth is raised: the host's migration CPU under
        SCHED_DEADLINE, else the emulator cgroup's quota (it stays, see
        :meth:`raise_bandwidth`)."""
        if mp.cpu is None or self._thread_deadline(mp) is not None:
            return self.capacity.migration_cpu
        return min(mp.cpu.quota_us / mp.cpu.cgroup_period_us,
                   self.capacity.migration_cpu)

    def abort_late(self, context, instance, guest, reason):
        """Abort the running migration of ``guest`` because the closed loop
        found it cannot meet its deadline (``reason``): Nova rolls it back
        and the instance goes on running here; an instance fault says
        why."""
        reason = f"live migration aborted early: {reason}"
        LOG.warning("rtmig: %s", reason, instance=instance)
        try:
            guest.abort_job()
        except libvirt_controls._libvirt_of(guest._domain).libvirtError as e:
            LOG.error("rtmig: could not abort the migration: %s", e,
                      instance=instance)
        compute_utils.add_instance_fault_from_exc(
            context, instance,
            exception.MigrationError(reason=f"rtmig: {reason}"))

    def reserve_migration_thread(self, context, instance, guest, dl, held,
                                 connect, send_cap=0, peer=None,
                                 ports=netshape.MIGRATION_PORTS,
                                 pacing=None):
        """What the migration of ``guest`` needs reserved once it runs
        (:func:`reservation.running_migration_steps`), added to ``held``:
        SCHED_DEADLINE ``dl`` (runtime, deadline, period ns; None: none)
        on QEMU's migration thread, and on its stream to ``peer`` at
        ``ports`` a cap of ``send_cap`` unsent bytes (``[rtmig]
        send_queue_cap``; 0: none) and TCP pacing at ``pacing`` bytes/s
        (its HTB class's payload rate; None: not paced).  Returns False
        while the thread does not exist yet (ask again), True once done:
        applied, or refused, in which case the migration is aborted (Nova
        rolls it back) after an ``rtmig.admission.reject`` notification
        and an instance fault."""
        try:
            steps = reservation.running_migration_steps(
                guest._domain, dl, send_cap, peer, ports, pacing,
                self._thread_flags())
        except (libvirt_controls.LibvirtError,
                libvirt_controls._libvirt_of(guest._domain).libvirtError) \
                as e:
            return self._abort(context, instance, guest, e)
        if not steps:
            return False
        res = self._new_reservation(instance, steps, connect)
        try:
            res.apply()
        except (reservation.ReservationError, OSError) as e:
            return self._abort(context, instance, guest, e)
        held.append(res)
        if dl is not None:
            LOG.info("rtmig: migration thread %s under SCHED_DEADLINE "
                     "%d/%d/%d ns%s", ",".join(str(s.tid) for s in steps
                                               if s.kind == "deadline"),
                     *dl, " (reclaiming)" if self._thread_flags() else "",
                     instance=instance)
        if send_cap or pacing:
            LOG.info("rtmig: migration stream: unsent bytes capped at %s, "
                     "paced at %s bytes/s", send_cap or "-",
                     "-" if pacing is None else "%.0f" % pacing,
                     instance=instance)
        return True

    def _abort(self, context, instance, guest, error):
        self._refuse_reservation(
            context, instance, f"the running migration's reservation "
            f"(SCHED_DEADLINE of the migration thread, the stream's "
            f"unsent-bytes cap): {error}; migration aborted")
        try:
            guest.abort_job()
        except libvirt_controls._libvirt_of(guest._domain).libvirtError as e:
            LOG.error("rtmig: could not abort the migration: %s", e,
                      instance=instance)
        return True

    def _take_interface(self, instance):
        with self._shaping_lock:
            if self._shaped not in (None, instance.uuid):
                return False
            self._shaped = instance.uuid
            return True

    def _give_interface(self, instance):
        with self._shaping_lock:
            if self._shaped == instance.uuid:
                self._shaped = None

    def release(self, held, connect, instance=None):
        """Undo the reservations ``held`` (of ``instance``'s migration),
        last first; a failure is logged (the record stays for
        :meth:`reconcile`), not raised: the migration's outcome stands."""
        try:
            for res in reversed(held):
                try:
                    reservation.release(res.ident, res.state_dir, connect)
                except (reservation.ReservationError, OSError) as e:
                    LOG.error("rtmig: could not release reservation %s: "
                              "%s", res.ident, e)
        finally:
            if instance is not None:
                self._give_interface(instance)

    def reconcile(self, active, connect):
        """Release this service's reservations of instances not migrating
        now (``active``: their UUIDs): what a crash or a failed release
        left.  Returns the reservation ids released."""
        released = []
        try:
            docs = reservation.load(CONF.rtmig.reservation_state_dir)
        except reservation.ReservationError as e:
            LOG.error("rtmig: %s", e)
            return released
        for doc in docs:
            label = doc.get("label", "")
            if not label.startswith(self.label_prefix) or \
                    label[len(self.label_prefix):] in active:
                continue
            try:
                reservation.release(doc["id"],
                                    CONF.rtmig.reservation_state_dir,
                                    connect)
                released.append(doc["id"])
                LOG.warning("rtmig: released leftover reservation %s (%s)",
                            doc["id"], label)
            except (reservation.ReservationError, OSError) as e:
                LOG.error("rtmig: could not release leftover reservation "
                          "%s: %s", doc["id"], e)
        return released

    def plan_at_start(self, context, instance):
        """:meth:`plan` again as the migration starts (the profile may have
        changed since the checks): ``(plan or None, refused)``.  A refusal
        leaves an instance fault; the caller rolls the migration back, as
        the driver's ``live_migration`` must not raise (Nova would put the
        instance in ERROR)."""
        try:
            return self.plan(context, instance, starting=True), False
        except (exception.NoValidHost,
                exception.MigrationPreCheckError) as e:
            compute_utils.add_instance_fault_from_exc(context, instance, e)
            return None, True

    def ended(self, context, instance, mp, guest, started):
        """Send ``rtmig.migration.end``: the plan against what happened to
        the migration of ``guest`` (an :class:`RTGuest`; ``started``:
        time.monotonic() at its start)."""
        total = time.monotonic() - started
        stats = guest.rtmig_stats()
        completed = stats.get("completed", False)
        payload = mp.payload()
        loop = guest.closed_loop
        payload.update({
            "final_bandwidth_bytes_per_s":
                loop.bandwidth if loop is not None else mp.bandwidth,
            "replans": len(loop.decisions) if loop is not None else 0,
            "outcome": "completed" if completed else "failed",
            "total_time_s": total,
            "downtime_s": stats.get("downtime_s"),
            "memory_bytes": stats.get("memory_bytes"),
            "deadline_met": bool(completed and
                                 total <= mp.request.deadline)})
        self._notifier.info(context, EVENT_END, payload)


def migration_peer(dest, migrate_data=None):
    """The address a migration's stream goes to: the destination's
    ``target_connect_addr`` in Nova's migrate_data (its ``[libvirt]
    live_migration_inbound_addr``) if set, else the host name ``dest``,
    resolved; None when it does not resolve (the HTB class then matches by
    port only)."""
    addr = dest
    if migrate_data is not None and "target_connect_addr" in migrate_data \
            and migrate_data.target_connect_addr:
        addr = migrate_data.target_connect_addr
    if not addr:
        return None
    try:
        return str(ipaddress.ip_address(addr))
    except ValueError:
        pass
    try:
        return socket.getaddrinfo(addr, None, type=socket.SOCK_STREAM)[0][4][0]
    except (OSError, UnicodeError) as e:
        LOG.info("rtmig: %s does not resolve (%s): the migration's HTB "
                 "class matches by port only", addr, e)
        return None


def cputune_values(xml, names):
    """``{name: text or None}`` of the ``<cputune>`` children ``names`` of
    the domain XML string ``xml`` (None: absent)."""
    tune = etree.fromstring(xml).find("cputune")
    out = {}
    for name in names:
        elem = tune.find(name) if tune is not None else None
        out[name] = elem.text if elem is not None else None
    return out


def with_cputune(xml, values):
    """The domain XML string ``xml`` with its ``<cputune>`` children set
    to ``values`` (:func:`cputune_values`; None removes one)."""
    root = etree.fromstring(xml)
    tune = root.find("cputune")
    for name, text in values.items():
        elem = tune.find(name) if tune is not None else None
        if text is None:
            if elem is not None:
                tune.remove(elem)
            continue
        if tune is None:
            tune = etree.SubElement(root, "cputune")
        if elem is None:
            elem = etree.SubElement(tune, name)
        elem.text = text
    if tune is not None and len(tune) == 0 and not (tune.text or "").strip():
        root.remove(tune)
    return etree.tostring(root, encoding="unicode")


def _libvirt():
    # The module Nova's Guest uses (Nova's tests replace it with a fake;
    # they make a plain "import libvirt" fail).
    from nova.virt.libvirt import guest as libvirt_guest
    return libvirt_guest.libvirt


class RTGuest:
    """Nova's ``Guest`` of a migrating real-time instance, running its
    :class:`MigrationPlan`; every other call goes to the wrapped guest."""

    def __init__(self, guest, mp, open_connection=None):
        self._guest = guest
        self.plan = mp
        # () -> a new connection to this host's libvirtd, for migrateToURI3
        # alone: an abortJob on the driver's connection, the one carrying
        # the migration, was once not answered until the migration ended
        # (docs/nova.md); None: the wrapped guest's own connection
        self._open_connection = open_connection
        self._downtime_set = False
        self._last_job = None
        self._cputune = {}          # element -> text before, None: absent
        # Called at each job poll while the migration runs until it
        # returns True (RTLiveMigration.reserve_migration_thread).
        self.when_running = None
        # Its poll() at each job poll while the migration runs.
        self.closed_loop = None

    def remember_cputune(self, params):
        """Record the live ``<cputune>`` elements named in ``params`` (the
        CPU parameters the reservation will change) as they are now."""
        xml = self._guest.get_xml_desc()
        self._cputune = cputune_values(xml, params)

    def __getattr__(self, name):
        return getattr(self._guest, name)

    def migrate(self, destination, migrate_uri=None, migrate_disks=None,
                destination_xml=None, flags=0, bandwidth=0, parallel=0):
        libvirt = _libvirt()
        for name in _LIBVIRT_FLAGS_STRIPPED:
            bit = getattr(libvirt, name)
            if flags & bit:
                LOG.info("rtmig: %s left out of a real-time migration",
                         name)
                flags &= ~bit
        self._pin_downtime()
        if destination_xml and self._cputune:
            # Nova built it from the live XML, temporary settings included
            destination_xml = with_cputune(destination_xml, self._cputune)
        guest, conn = self._guest, None
        if self._open_connection is not None:
            from nova.virt.libvirt import guest as libvirt_guest
            conn = self._open_connection()
            try:
                guest = libvirt_guest.Guest(
                    conn.lookupByUUIDString(self._guest.uuid))
            except Exception:
                conn.close()
                raise
        try:
            return guest.migrate(
                destination, migrate_uri=migrate_uri,
                migrate_disks=migrate_disks, destination_xml=destination_xml,
                flags=flags, bandwidth=self.plan.bandwidth_mib,
                parallel=parallel)
        finally:
            if conn is not None:
                conn.close()

    def _pin_downtime(self):
        if not self._downtime_set:
            self._guest.migrate_configure_max_downtime(
                self.plan.downtime_limit_ms)
            self._downtime_set = True

    def migrate_configure_max_downtime(self, mstime):
        # Nova's downtime steps: the plan's limit stays.
        if mstime != self.plan.downtime_limit_ms:
            LOG.debug("rtmig: keeping the downtime limit at %d ms (not %d)",
                      self.plan.downtime_limit_ms, mstime)
        self._pin_downtime()

    def migrate_start_postcopy(self):
        LOG.warning("rtmig: post-copy refused for a real-time migration "
                    "(its downtime is not bounded); it goes on pre-copy")

    def get_job_info(self):
        info = self._guest.get_job_info()
        self._last_job = info
        running = info.type == _libvirt().VIR_DOMAIN_JOB_UNBOUNDED
        if self.when_running is not None and running and \
                self.when_running():
            self.when_running = None
        if self.closed_loop is not None and running:
            try:
                self.closed_loop.poll()
            except Exception:
                # A fault in the loop must not end Nova's monitor: the plan
                # goes on as it was.
                LOG.exception("rtmig: closed loop stopped; the migration "
                              "goes on at %d MiB/s",
                              self.closed_loop.bandwidth // MIB)
                self.closed_loop = None
        return info

    def rtmig_stats(self):
        """What the migration's job said last: completed (bool), downtime_s,
        memory_bytes."""
        info = self._last_job
        out = {}
        if info is not None:
            out["completed"] = \
                info.type == _libvirt().VIR_DOMAIN_JOB_COMPLETED
            if getattr(info, "downtime", 0):
                out["downtime_s"] = info.downtime / 1000.0
            if getattr(info, "memory_processed", 0):
                out["memory_bytes"] = int(info.memory_processed)
        return out
