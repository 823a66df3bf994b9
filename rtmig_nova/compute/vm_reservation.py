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

"""A real-time instance's own CPU reservation on the host that runs it:
SCHED_DEADLINE with its flavor's ``rtmig:vcpu_reservation`` (runtime per
period, deadline = period) on each vCPU thread of its QEMU, as one
all-or-nothing :class:`~rtmig_nova.enforce.reservation.Reservation`
labelled ``nova-vm HOST UUID`` in ``[rtmig] reservation_state_dir``.

- **Spawn**: applied once the domain runs; a refusal fails the build (Nova
  then cleans up and reschedules).
- **Arrival by live migration**: ``pre_live_migration`` starts a watcher
  that applies it as soon as the incoming QEMU's vCPU threads exist
  (libvirt starts that QEMU when the migration's transfer begins, paused
  until the switch-over), so it is in place when the guest resumes here;
  ``post_live_migration_at_destination`` waits for the watcher.
- **Departure and deletion**: released when the instance is destroyed here
  (deletion, a rolled-back arrival), when it has left by live migration,
  and by :meth:`RTVMReservations.reconcile` for any instance no longer on
  this host (the destination of a migration may never hear of a rollback).

A thread that has ended is never touched by an undo (its start time is
recorded), so a release after QEMU has exited only removes the record.
"""

import threading
import time

from oslo_log import log as logging

from rtmig_nova import conf
from rtmig_nova.enforce import deadline
from rtmig_nova.enforce import libvirt_controls
from rtmig_nova.enforce import reservation

LOG = logging.getLogger(__name__)
CONF = conf.CONF

LABEL_PREFIX = "nova-vm {host} "
NS = 1_000_000_000
# How often the arrival watcher looks for the incoming vCPU threads, s.
ARRIVAL_POLL = 0.05


def vcpu_deadline(request):
    """(runtime, deadline, period) ns of a vCPU under ``request`` (an
    :class:`~rtmig_nova.model.flavor.RTRequest`): deadline = period."""
    runtime = int(round(request.runtime * NS))
    period = int(round(request.period * NS))
    return runtime, period, period


def vcpu_steps(tids, request):
    """The reservation steps of vCPU threads ``tids`` under ``request``:
    :func:`vcpu_deadline` on each, reclaiming idle CPU time if the flavor
    asks for it (``rtmig:vcpu_reclaim``)."""
    flags = deadline.SCHED_FLAG_RECLAIM if request.reclaim else 0
    return reservation.deadline_steps(tids, vcpu_deadline(request), flags)


class VMReservationError(RuntimeError):
    """The instance's reservation could not be applied (nothing of it
    stays applied); one line."""


class RTVMReservations:
    """The vCPU reservations of the real-time instances on one host."""

    def __init__(self, host):
        self.host = host
        self._lock = threading.Lock()
        self._watchers = {}     # uuid -> (thread, stop Event, result box)
        # one reserve or release at a time (the arrival watcher and the
        # driver's calls may meet): each sees the others' records
        self._apply_lock = threading.Lock()

    @property
    def label_prefix(self):
        return LABEL_PREFIX.format(host=self.host)

    def _records(self, uuid=None):
        try:
            docs = reservation.load(CONF.rtmig.reservation_state_dir)
        except reservation.ReservationError as e:
            LOG.error("rtmig: %s", e)
            return []
        out = []
        for doc in docs:
            label = doc.get("label", "")
            if label.startswith(self.label_prefix) and (
                    uuid is None or label[len(self.label_prefix):] == uuid):
                out.append(doc)
        return out

    def reserve(self, instance, request, dom, connect=None):
        """Apply ``request``'s SCHED_DEADLINE to every vCPU thread of the
        running libvirt domain ``dom`` of ``instance``, all or nothing; a
        reservation held already for it is released first.

        :raises VMReservationError: the threads cannot be found, or a
            thread is refused (the ones before it undone)
        """
        if not CONF.rtmig.enforce_vcpu_reservation:
            return None
        with self._apply_lock:
            return self._reserve(instance, request, dom, connect)

    def _reserve(self, instance, request, dom, connect):
        if dom is None:
            raise VMReservationError(f"instance {instance.uuid} has no "
                                     f"domain here")
        try:
            tids = libvirt_controls.vcpu_threads(dom)
        except (libvirt_controls.LibvirtError, ValueError,
                libvirt_controls._libvirt_of(dom).libvirtError) as e:
            raise VMReservationError(f"vCPU threads of instance "
                                     f"{instance.uuid}: {e}") from None
        if len(tids) != instance.flavor.vcpus:
            raise VMReservationError(
                f"instance {instance.uuid}: {len(tids)} vCPU threads, its "
                f"flavor has {instance.flavor.vcpus}")
        self._release(instance.uuid, connect)
        res = reservation.Reservation(
            vcpu_steps(tids, request),
            CONF.rtmig.reservation_state_dir,
            label=self.label_prefix + instance.uuid, connect=connect)
        try:
            res.apply()
        except (reservation.ReservationError, OSError) as e:
            raise VMReservationError(
                f"SCHED_DEADLINE of instance {instance.uuid}'s vCPUs: "
                f"{e}") from None
        LOG.info("rtmig: vCPU threads %s under SCHED_DEADLINE %d/%d/%d ns%s",
                 ",".join(map(str, tids)), *vcpu_deadline(request),
                 " (reclaiming)" if request.reclaim else "",
                 instance=instance)
        return res

    def release(self, uuid, connect=None):
        """Undo the reservations held for instance ``uuid`` here; failures
        are logged (the record stays for :meth:`reconcile`)."""
        with self._apply_lock:
            self._release(uuid, connect)

    def _release(self, uuid, connect):
        for doc in self._records(uuid):
            try:
                reservation.release(doc["id"],
                                    CONF.rtmig.reservation_state_dir, connect)
            except (reservation.ReservationError, OSError) as e:
                LOG.error("rtmig: could not release reservation %s: %s",
                          doc["id"], e)

    def reconcile(self, here, connect=None):
        """Release the reservations of instances not in ``here`` (the UUIDs
        of the instances on this host, arriving ones included), and stop
        the arrival watchers of the others.  Returns the UUIDs released."""
        with self._lock:
            stale = [self._watchers.pop(uuid) for uuid in
                     list(self._watchers) if uuid not in here]
        for _thread, stop, _box in stale:
            stop.set()          # an arrival rolled back without telling us
        gone = sorted({doc["label"][len(self.label_prefix):]
                       for doc in self._records()} - set(here))
        for uuid in gone:
            LOG.warning("rtmig: releasing the vCPU reservation of instance "
                        "%s, which is not on this host", uuid)
            self.release(uuid, connect)
        return gone

    # -- arrival by live migration ----------------------------------------

    def watch_arrival(self, instance, request, lookup, timeout,
                      connect=None):
        """Apply the reservation of ``instance`` as soon as its incoming
        domain (``lookup()``: the libvirt domain, or None while it does not
        exist) has all its vCPU threads, within ``timeout`` s, in a thread
        of its own; :meth:`arrived` waits for it."""
        if not CONF.rtmig.enforce_vcpu_reservation:
            return
        stop = threading.Event()
        box = {}

        def watch():
            until = time.monotonic() + timeout
            last = None
            while not stop.is_set() and time.monotonic() < until:
                dom = lookup()
                if dom is not None:
                    try:
                        if len(libvirt_controls.vcpu_threads(dom)) == \
                                instance.flavor.vcpus:
                            box["res"] = self.reserve(instance, request, dom,
                                                      connect)
                            return
                    except (libvirt_controls.LibvirtError, ValueError,
                            libvirt_controls._libvirt_of(dom).libvirtError
                            ) as e:
                        last = e        # QEMU not up yet
                    except VMReservationError as e:
                        box["error"] = e
                        return
                stop.wait(ARRIVAL_POLL)
            if not stop.is_set():
                box["error"] = VMReservationError(
                    f"instance {instance.uuid}: its vCPU threads did not "
                    f"appear here within {timeout:g} s"
                    + (f" ({last})" if last else ""))

        thread = threading.Thread(target=watch, daemon=True,
                                  name=f"rtmig-arrival-{instance.uuid}")
        with self._lock:
            old = self._watchers.pop(instance.uuid, None)
            self._watchers[instance.uuid] = (thread, stop, box)
        if old is not None:
            old[1].set()
        thread.start()

    def arrived(self, instance, request, dom, timeout, connect=None):
        """The migration of ``instance`` (now the running domain ``dom``
        here) has ended: wait up to ``timeout`` s for its watcher, and
        apply the reservation now if the watcher did not.

        :raises VMReservationError: it cannot be applied
        """
        with self._lock:
            watcher = self._watchers.pop(instance.uuid, None)
        if watcher is not None:
            thread, stop, box = watcher
            thread.join(timeout)
            stop.set()
            if "res" in box:
                return box["res"]
            if thread.is_alive():
                # stuck in a libvirt call: it may still reserve; never two
                raise VMReservationError(
                    f"instance {instance.uuid}: the arrival watcher did "
                    f"not finish in {timeout:g} s")
            if "error" in box:
                LOG.warning("rtmig: %s; applying it now", box["error"],
                            instance=instance)
        return self.reserve(instance, request, dom, connect)

    def cancel_arrival(self, instance, connect=None):
        """The arrival of ``instance`` was rolled back: stop its watcher and
        release what it applied."""
        with self._lock:
            watcher = self._watchers.pop(instance.uuid, None)
        if watcher is not None:
            watcher[1].set()
            watcher[0].join(5)
        self.release(instance.uuid, connect)
