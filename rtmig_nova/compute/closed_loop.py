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

"""The closed loop of a running real-time live migration, on the source.

Nova's monitor reads the migration's job every 0.5 s (through
:class:`~rtmig_nova.compute.live_migration.RTGuest`); every ``[rtmig]
replan_interval`` the loop reads libvirt's job stats too, turns them into
a :class:`~rtmig_nova.model.replan.Observation` and lets the model decide
(:func:`~rtmig_nova.model.replan.replan`): keep the plan, raise the
bandwidth (a reservation layered on the migration's, applied all or
nothing and released with it), or abort (two readings in a row).  Every
decision other than keeping the plan is sent as
``rtmig.migration.replan``."""

import time

from oslo_log import log as logging

from rtmig_nova import conf
from rtmig_nova.enforce import libvirt_controls
from rtmig_nova.model import replan

LOG = logging.getLogger(__name__)
CONF = conf.CONF

EVENT_REPLAN = "rtmig.migration.replan"
# Readings in a row that must say "abort" before the migration is aborted.
ABORT_READINGS = 2


class ClosedLoop:
    """The loop of one migration: ``lm`` is its
    :class:`~rtmig_nova.compute.live_migration.RTLiveMigration`, ``mp`` its
    plan, ``guest`` its RTGuest, ``held`` its reservations (a raise adds
    one), ``uri``/``connect`` how the reservations reach libvirt,
    ``shaping`` the HTB plan of its stream (or None)."""

    def __init__(self, lm, context, instance, mp, guest, held, uri, connect,
                 shaping=None, clock=time.monotonic):
        self.lm, self.context, self.instance = lm, context, instance
        self.mp, self.guest, self.held = mp, guest, held
        self.uri, self.connect, self.shaping = uri, connect, shaping
        self.clock = clock
        self.bandwidth = mp.bandwidth
        pl = mp.model_plan
        self.settings = pl.prediction.settings
        self.ceiling = max(replan.bandwidth_ceiling(
            lm.capacity.migration_link, lm.raise_cpu_limit(mp),
            mp.dirty_profile.page_size, pl.cpu_cost_per_page, pl.cpu_margin,
            qemu_version=self.settings.qemu_version), self.bandwidth)
        # the plan's own, for every reading
        self.calibration = replan.calibrate(mp.dirty_profile, self.settings,
                                            mp.predicted_time)
        self.decisions = []         # Replan, as sent
        self.done = False
        self._next = 0.0
        self._last = None           # (elapsed s, processed bytes)
        self._iteration = 0
        self._epoch_start = 0.0     # elapsed s at the epoch's first sight
        self._epoch_time = None
        self._aborts = 0
        self._sent = ("keep", self.bandwidth)

    def poll(self):
        """One of Nova's job readings while the migration runs: act on it
        if ``replan_interval`` has passed since the last."""
        # Not before the migration thread's reservation is in place (its
        # runtime is what a raise changes).
        if self.done or self.guest.when_running is not None:
            return
        now = self.clock()
        if now < self._next:
            return
        self._next = now + CONF.rtmig.replan_interval
        lv = libvirt_controls._libvirt_of(self.guest._domain)
        try:
            stats = self.guest._domain.jobStats()
        except lv.libvirtError as e:
            LOG.debug("rtmig: no job stats for the closed loop: %s", e,
                      instance=self.instance)
            return
        if stats.get("type") != lv.VIR_DOMAIN_JOB_UNBOUNDED:
            return
        obs = self._observe(*replan.job_numbers(stats))
        if obs is not None:
            # off the plan, aim two readings before the deadline: room for
            # one more correction
            self._act(replan.replan(
                self.mp.dirty_profile, self.settings, self.mp.request.deadline,
                self.mp.predicted_time, obs, self.bandwidth, self.ceiling,
                margin=2 * CONF.rtmig.replan_interval,
                calibration=self.calibration), obs)

    def _observe(self, elapsed, remaining, processed, iteration, dirty):
        if iteration != self._iteration:
            # Syncs seen between two readings give the epoch's length (the
            # window of QEMU's dirty rate); the first pass is no epoch.
            if self._iteration >= 2 and iteration > self._iteration:
                self._epoch_time = (elapsed - self._epoch_start) / \
                    (iteration - self._iteration)
            self._iteration, self._epoch_start = iteration, elapsed
        last, self._last = self._last, (elapsed, processed)
        # Until QEMU sends (libvirt's prepare phase, when the destination
        # starts), and on the first reading, there is no rate to judge.
        if last is None or last[1] <= 0 or elapsed <= last[0]:
            return None
        send = (processed - last[1]) / (elapsed - last[0])
        return replan.Observation(elapsed, remaining, processed, iteration,
                                  dirty, send, elapsed - self._epoch_start,
                                  self._epoch_time)

    def _act(self, r, obs):
        if r.decision == replan.ABORT:
            self._aborts += 1
            if self._aborts < ABORT_READINGS:
                return
            if CONF.rtmig.replan_abort:
                self.done = True
                self.lm.abort_late(self.context, self.instance, self.guest,
                                   r.reason)
                self._notify(r, obs, applied=True)
                return
        else:
            self._aborts = 0
        if r.decision == replan.KEEP or r.bandwidth <= self.bandwidth:
            if r.decision != replan.KEEP:
                self._notify(r, obs, applied=False,
                             error="already at the most bandwidth allowed")
            return
        previous = self.bandwidth
        error = self.lm.raise_bandwidth(self.instance, self.mp, self.guest,
                                        r.bandwidth, self.held, self.uri,
                                        self.connect, self.shaping)
        if error is None:
            self.bandwidth = r.bandwidth
            LOG.info("rtmig: migration bandwidth raised from %d to %d "
                     "MiB/s: %s", previous // replan.MIB,
                     r.bandwidth // replan.MIB, r.reason,
                     instance=self.instance)
        else:
            # What the host refused now it refuses later: no more raises.
            self.ceiling = previous
            LOG.warning("rtmig: could not raise the migration bandwidth to "
                        "%d MiB/s: %s", r.bandwidth // replan.MIB, error,
                        instance=self.instance)
        self._notify(r, obs, applied=error is None, error=error,
                     previous=previous)

    def _notify(self, r, obs, applied, error=None, previous=None):
        key = (r.decision, r.bandwidth, applied)
        if key == self._sent:
            return                          # said already
        self._sent = key
        self.decisions.append(r)
        payload = {"instance_uuid": self.instance.uuid,
                   "observed": obs.to_dict(),
                   "previous_bandwidth_bytes_per_s":
                       self.bandwidth if previous is None else previous,
                   "applied": applied, "error": error,
                   "deadline_s": self.mp.request.deadline,
                   "downtime_limit_s": self.mp.downtime_limit}
        payload.update(r.to_dict())
        self.lm.notify(self.context, EVENT_REPLAN, payload)
