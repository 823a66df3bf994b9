"""The closed loop on real Nova in-process: a fake libvirt whose job stats
are scripted (a send slower than planned, a dirty rate that jumps, a
stall) makes the running migration's bandwidth rise within the host's
reserved share, or the migration abort early, and everything is released
whatever happens."""

import threading
import time

import fixtures
import numpy  # noqa: F401  (before Nova's test base poisons os.uname)
from nova.tests.fixtures import libvirt as fakelibvirt

from rtmig_nova import conf
from rtmig_nova import planning
from rtmig_nova.enforce import deadline
from rtmig_nova.enforce import netshape
from rtmig_nova.enforce import reservation
from rtmig_nova.model import replan
from rtmig_nova.model import sizing
from rtmig_nova.model.precopy import send_rate
from tests.functional import live_migration_base

CONF = conf.CONF
MIB = 2 ** 20
# Job seconds per real second: the 60 s deadline of RT_SPECS passes in 3 s.
TIME_SCALE = 20.0


class JobScript:
    """libvirt job stats of a pre-copy that runs at ``share(E)`` of the
    send rate QEMU has at the speed libvirt was last given (E: job
    seconds), first over all of RAM, then in epochs of ``epoch`` job
    seconds re-sending what ``dirty(E)`` pages per epoch the guest
    writes."""

    def __init__(self, test, profile, share, dirty=None, epoch=0.5):
        self.test, self.profile = test, profile
        self.share, self.dirty, self.epoch = share, dirty, epoch
        self.wire = sizing.first_pass_bytes(profile)
        self.lock = threading.Lock()
        self.t0 = None
        self.last = 0.0
        self.processed = 0.0
        self.first_pass_end = None

    def stats(self, dom):
        if dom._job_type != fakelibvirt.VIR_DOMAIN_JOB_UNBOUNDED:
            return {'type': dom._job_type}
        with self.lock:
            now = time.monotonic()
            if self.t0 is None:
                self.t0 = now
            e = (now - self.t0) * TIME_SCALE
            speed = self.test.speeds[-1] * MIB
            rate = self.share(e) * send_rate(speed, self.profile.page_size)
            self.processed += rate * (e - self.last)
            self.last = e
            ps = self.profile.page_size
            left = max(1 - self.processed / self.wire, 0.0)
            out = {'type': dom._job_type, 'time_elapsed': int(e * 1000),
                   'memory_processed': int(self.processed),
                   'memory_page_size': ps, 'memory_total':
                   self.profile.memory_bytes}
            if left > 0 or self.dirty is None:
                out.update(memory_remaining=int(
                    left * self.profile.memory_bytes), memory_iteration=1)
                return out
            if self.first_pass_end is None:
                self.first_pass_end = e
            pages = self.dirty(e)
            out.update(
                memory_iteration=2 + int((e - self.first_pass_end) /
                                         self.epoch),
                memory_remaining=int(pages * ps),
                memory_dirty_rate=int(pages / self.epoch))
            return out


class RTClosedLoopTest(live_migration_base.RTLiveMigrationBase):

    def setUp(self):
        super().setUp()
        # room above the plan's bandwidth: the CPU kept for migrations
        # (the base's 0.05 pushes about the plan's 60 MiB/s, no more)
        self.flags(replan_interval=0.5, migration_cpu=0.25, group='rtmig')
        self.profile = planning.plan_profile(self.request, CONF.rtmig)

    def script(self, share, dirty=None):
        job = JobScript(self, self.profile, share, dirty)
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Domain.jobStats',
            lambda dom, flags=0: job.stats(dom)))
        return job

    def wait_for_end(self, server, statuses, timeout=30):
        """The server's migration once in one of ``statuses`` (Nova's
        helper waits 5 s, less than these migrations take)."""
        end = time.monotonic() + timeout
        while True:
            try:
                return self._wait_for_migration_status(server, statuses)
            except AssertionError:
                if time.monotonic() > end:
                    raise

    def ceiling_mib(self):
        pl = self.expected_plan()
        return replan.bandwidth_ceiling(
            CONF.rtmig.link_capacity * CONF.rtmig.migration_link_share,
            CONF.rtmig.migration_cpu, self.profile.page_size,
            pl.cpu_cost_per_page, pl.cpu_margin) // MIB

    def assert_all_released(self, server):
        self.assertEqual([], self.migration_state_files())
        self.assertEqual(-1, self.cpu[server['id']]['emulator_quota'])
        self.assertEqual(8796093022207, self.speeds[-1])
        self.assertEqual(deadline.SCHED_OTHER,
                         deadline.get_attr(self.migration_thread).policy)

    def test_a_slower_send_raises_the_bandwidth_within_the_share(self):
        self.start_rt_computes(2, cpus=4)
        server = self.boot_rt('compute1')
        self.migration_seconds = 3.0
        self.script(lambda e: 0.5)
        self._live_migrate(server, api=self.admin_api)
        self.assertEqual('compute2', self.server_host(server))

        pl = self.expected_plan()
        plan_mib = round(pl.bandwidth / MIB)
        speeds = self.during[0]['speeds']
        self.assertEqual(plan_mib, speeds[0])
        self.assertGreater(max(speeds), plan_mib)
        self.assertLessEqual(max(speeds), self.ceiling_mib())
        self.assertEqual(sorted(speeds), speeds)       # only ever raised
        raises = self.notifications('rtmig.migration.replan')
        self.assertTrue(raises)
        first = raises[0]
        self.assertEqual('raise', first['decision'])
        self.assertTrue(first['applied'])
        self.assertEqual(server['id'], first['instance_uuid'])
        self.assertEqual(pl.bandwidth,
                         first['previous_bandwidth_bytes_per_s'])
        self.assertAlmostEqual(0.5, first['efficiency'], delta=0.05)
        self.assertGreater(first['bandwidth_bytes_per_s'], pl.bandwidth)
        self.assertLessEqual(first['predicted_total_time_s'], 60)
        self.assertEqual(pl.downtime_limit, first['downtime_limit_s'])
        for key in ('elapsed_s', 'remaining_bytes', 'processed_bytes',
                    'iteration'):
            self.assertIn(key, first['observed'])
        # the downtime limit stays the plan's throughout
        self.assertEqual({round(pl.downtime_limit * 1000)},
                         set(self.during[0]['downtimes']))
        # the migration thread got the CPU of the raised bandwidth under
        # SCHED_DEADLINE; the emulator cgroup's quota (libvirt would not
        # change it during the migration) stayed the plan's
        raised = sizing.cpu_reservation(
            max(speeds) * MIB, self.profile.page_size, pl.cpu_cost_per_page,
            pl.cpu_margin, pl.cpu.period_ns / 1e9, pl.cpu.cgroup_period_us)
        self.assertEqual(raised.runtime_ns, self.during[0]['thread']
                         .runtime_ns)
        self.assertGreater(raised.runtime_ns, pl.cpu.runtime_ns)
        self.assertEqual(pl.cpu.quota_us,
                         self.during[0]['cpu_end']['emulator_quota'])
        end, = self.notifications('rtmig.migration.end')
        self.assertEqual(max(speeds) * MIB,
                         end['final_bandwidth_bytes_per_s'])
        self.assertEqual(len(raises), end['replans'])
        self.assert_all_released(server)

    def test_a_raise_widens_the_streams_htb_class_in_place(self):
        ifname = self.dummy_interface()
        self.flags(migration_interface=ifname, group='rtmig')
        self.start_rt_computes(2, cpus=4)
        server = self.boot_rt('compute1')
        self.migration_seconds = 3.0
        self.script(lambda e: 0.5)
        self._live_migrate(server, api=self.admin_api)
        top = max(self.during[0]['speeds'])
        self.assertGreater(top, round(self.expected_plan().bandwidth / MIB))
        want = netshape.migration_rates(reservation.migration_shaping(
            ifname, CONF.rtmig.link_capacity, top * MIB, (49152, 49215)))
        htb = {row['role']: row for row in self.during[0]['htb']}
        self.assertAlmostEqual(want['migration'][0],
                               htb['migration']['rate'], delta=1)
        self.assertAlmostEqual(want['default'][0], htb['default']['rate'],
                               delta=1)
        # the stream is re-paced at the widened class's payload rate
        [[_, _, _, pacing]] = self.during[0]['stream']
        self.assertAlmostEqual(netshape.payload_rate(want['migration'][0]),
                               pacing, delta=2)
        self.assert_unshaped(ifname)
        self.assert_all_released(server)

    def test_a_dirty_rate_that_jumps_raises_the_bandwidth(self):
        self.start_rt_computes(2, cpus=4)
        server = self.boot_rt('compute1')
        self.migration_seconds = 5.0
        base = self.profile.dirty_pages(0.5)
        # from the end of the first pass on, 2.5 times the pages per epoch
        self.script(lambda e: 1.0, lambda e: 2.5 * base)
        self.admin_api.post_server_action(
            server['id'],
            {'os-migrateLive': {'host': None, 'block_migration': 'auto'}})
        migration = self.wait_for_end(server, ['completed', 'cancelled'])
        self._wait_for_state_change(server, 'ACTIVE')
        replans = self.notifications('rtmig.migration.replan')
        seen = [r for r in replans
                if r['observed']['dirty_rate_bytes_per_s']]
        self.assertTrue(seen, replans)
        # the first answer to it: more bandwidth, within the share
        first = seen[0]
        self.assertEqual('raise', first['decision'], first['reason'])
        self.assertTrue(first['applied'])
        self.assertGreater(first['write_scale'], 1.5)
        self.assertGreater(first['bandwidth_bytes_per_s'],
                           first['previous_bandwidth_bytes_per_s'])
        speeds = self.during[0]['speeds']
        self.assertLessEqual(max(speeds), self.ceiling_mib())
        # then, if even the ceiling came too late, an abort in time
        aborts = [r for r in replans if r['decision'] == 'abort']
        if migration['status'] == 'cancelled':
            self.assertEqual(1, len(aborts))
            self.assertTrue(aborts[0]['applied'])
            self.assertEqual('compute1', self.server_host(server))
        else:
            self.assertEqual([], aborts)
            self.assertEqual('compute2', self.server_host(server))
        self.assert_all_released(server)

    def test_a_stalled_migration_is_aborted_early(self):
        self.flags(enforce_vcpu_reservation=True, group='rtmig')
        self.start_rt_computes(2, cpus=4)
        server = self.boot_rt('compute1')
        self.migration_seconds = 30
        self.script(lambda e: 1.0 if e < 12 else 0.0)
        started = time.monotonic()
        self.admin_api.post_server_action(
            server['id'],
            {'os-migrateLive': {'host': None, 'block_migration': 'auto'}})
        self.wait_for_end(server, ['cancelled', 'failed', 'error'])
        self._wait_for_state_change(server, 'ACTIVE')
        # aborted by the loop well before the fake's 30 s
        self.assertLess(time.monotonic() - started, 15)
        self.assertEqual('compute1', self.server_host(server))
        abort, = [r for r in self.notifications('rtmig.migration.replan')
                  if r['decision'] == 'abort']
        self.assertTrue(abort['applied'])
        self.assertIn('stalled', abort['reason'])
        from nova import context as nova_context
        from nova import objects
        faults = objects.InstanceFaultList.get_by_instance_uuids(
            nova_context.get_admin_context(), [server['id']])
        self.assertIn('aborted early', faults[0].message)
        end, = self.notifications('rtmig.migration.end')
        self.assertEqual('failed', end['outcome'])
        self.assert_all_released(server)
        self.assert_vcpus_reserved('compute1', server)
        self._run_periodics()           # the destination's watcher stops

    def test_without_sched_deadline_the_quota_caps_the_raise(self):
        # the emulator cgroup's quota caps the thread and stays: no raise
        # beyond what it pushes
        self.flags(migration_thread_deadline=False, group='rtmig')
        self.start_rt_computes(2, cpus=4)
        server = self.boot_rt('compute1')
        self.migration_seconds = 3.0
        self.script(lambda e: 0.5)
        self._live_migrate(server, api=self.admin_api,
                           migration_expected_state='cancelled')
        pl = self.expected_plan()
        cap = replan.bandwidth_ceiling(
            CONF.rtmig.link_capacity * CONF.rtmig.migration_link_share,
            pl.cpu.quota_us / pl.cpu.cgroup_period_us,
            self.profile.page_size, pl.cpu_cost_per_page,
            pl.cpu_margin) // MIB
        self.assertLessEqual(max(self.during[0]['speeds']),
                             max(cap, round(pl.bandwidth / MIB)))
        for r in self.notifications('rtmig.migration.replan'):
            self.assertLessEqual(r['ceiling_bytes_per_s'],
                                 max(cap * MIB, pl.bandwidth))
        self.assert_all_released(server)

    def test_without_the_loop_the_plan_holds(self):
        self.flags(replan=False, group='rtmig')
        self.start_rt_computes(2, cpus=4)
        server = self.boot_rt('compute1')
        self.migration_seconds = 2.0
        self.script(lambda e: 0.5)
        self._live_migrate(server, api=self.admin_api)
        pl = self.expected_plan()
        self.assertEqual([round(pl.bandwidth / MIB)],
                         self.during[0]['speeds'])
        self.assertEqual([], self.notifications('rtmig.migration.replan'))
        self.assert_all_released(server)
