"""Live migration of real-time servers on real Nova in-process (API,
conductor, scheduler, Placement, computes on rtmig's driver shim over
Nova's fake libvirt): the plan reaches libvirt, the destination check
refuses what does not fit, an infeasible plan refuses before anything
changes, and the rtmig notifications say so."""

import os
import subprocess
import time

import fixtures
from lxml import etree
from nova.tests.fixtures import libvirt as fakelibvirt
from nova.virt.libvirt import migration as libvirt_migration
from oslo_messaging.notify import _impl_test

from rtmig_nova import conf
from rtmig_nova import planning
from rtmig_nova.enforce import deadline
from rtmig_nova.enforce import netshape
from rtmig_nova.enforce import reservation
from rtmig_nova.enforce import send_queue
from rtmig_nova.model import DirtyProfile
from rtmig_nova.model import flavor as rtflavor
from tests.functional import base
from tests.functional import live_migration_base

CONF = conf.CONF


class RTLiveMigrationTest(live_migration_base.RTLiveMigrationBase):

    def test_the_plan_reaches_libvirt_and_is_kept(self):
        self.flags(enforce_vcpu_reservation=True, group='rtmig')
        self.start_rt_computes(2, cpus=4)
        server = self.boot_rt('compute1')
        # the VM's own reservation, since its spawn
        self.assert_vcpus_reserved('compute1', server)
        self._run_periodics()
        self._live_migrate(server, api=self.admin_api)
        self.assertEqual('compute2', self.server_host(server))

        pl = self.expected_plan()
        self.assertTrue(pl.feasible)
        (uuid, params, flags), = self.migrate_calls
        self.assertEqual(server['id'], uuid)
        # on a libvirt connection of the source's own, closed after
        self.assertEqual([['compute1', True]], self.migration_connections)
        want_mib = round(pl.bandwidth / 2 ** 20)
        # the plan's bandwidth, not Nova's [libvirt] live_migration_bandwidth
        self.assertEqual(want_mib, params['bandwidth'])
        self.assertNotEqual(CONF.libvirt.live_migration_bandwidth,
                            params['bandwidth'])
        self.assertLessEqual(params['bandwidth'] * 2 ** 20,
                             CONF.rtmig.link_capacity
                             * CONF.rtmig.migration_link_share)
        self.assertFalse(flags & fakelibvirt.VIR_MIGRATE_AUTO_CONVERGE)
        self.assertTrue(flags & fakelibvirt.VIR_MIGRATE_LIVE)
        # the downtime limit is the plan's from start to end: Nova's step
        # to 500 ms never reached libvirt
        want_ms = round(pl.downtime_limit * 1000)
        self.assertLessEqual(want_ms, 300)
        self.assertEqual([want_ms], sorted(set(
            self.during[0]['downtimes'])))

        plan, = self.notifications('rtmig.migration.plan')
        self.assertEqual(server['id'], plan['instance_uuid'])
        self.assertEqual('flavor', plan['profile_source'])
        self.assertEqual(pl.bandwidth, plan['bandwidth_bytes_per_s'])
        self.assertEqual(pl.downtime_limit, plan['downtime_limit_s'])
        self.assertLessEqual(plan['predicted_total_time_s'], 60)
        end, = self.notifications('rtmig.migration.end')
        self.assertEqual('completed', end['outcome'])
        self.assertTrue(end['deadline_met'])
        self.assertGreaterEqual(end['total_time_s'], 1.2)
        self.assertEqual([], self.notifications('rtmig.admission.reject'))

        # The source's reservation, mid-way: the migration thread's CPU in
        # the emulator cgroup, the speed, one state file; none left after.
        during, = self.during
        self.assertEqual(pl.cpu.quota_us, during['cpu']['emulator_quota'])
        self.assertEqual(pl.cpu.cgroup_period_us,
                         during['cpu']['emulator_period'])
        self.assertEqual(1, len(during['state_files']))
        self.assertEqual([want_mib], during['speeds'])
        self.assertEqual([], self.migration_state_files())
        # the migration thread under SCHED_DEADLINE with the plan's CPU
        # once it ran, and back to what it was after
        thread = during['thread']
        self.assertEqual(deadline.SCHED_DEADLINE, thread.policy)
        self.assertEqual((pl.cpu.runtime_ns, pl.cpu.deadline_ns,
                          pl.cpu.period_ns),
                         (thread.runtime_ns, thread.deadline_ns,
                          thread.period_ns))
        # reclaiming ([rtmig] migration_thread_reclaim, on by default)
        self.assertEqual(deadline.SCHED_FLAG_RECLAIM,
                         thread.flags & deadline.SCHED_FLAG_RECLAIM)
        self.assertEqual(deadline.SCHED_OTHER,
                         deadline.get_attr(self.migration_thread).policy)
        # its stream's unsent bytes capped (no HTB class here: not paced)
        # while it ran, and given back
        self.assertEqual([[CONF.rtmig.send_queue_cap,
                           send_queue.UNLIMITED_PACING]],
                         [s[2:] for s in during['stream']])
        self.assertEqual([[send_queue.UNSET, send_queue.UNLIMITED_PACING]],
                         [s[2:] for s in self.stream_options()])
        # the VM's reservation went with it: held on the destination (in
        # place when post_live_migration_at_destination returned), released
        # on the source
        self.assert_vcpus_reserved('compute2', server)
        self.assert_vcpus_free('compute1', server)
        self.assertEqual(['nova-vm compute2 ' + server['id']],
                         self.state_labels())
        # ... and the temporary quota, in the source's live XML then, is
        # not in the destination's definition
        self.assertIn('<emulator_quota>', during['live_xml'])
        dest = etree.fromstring(params['destination_xml'])
        self.assertIsNone(dest.find('./cputune/emulator_quota'))
        self.assertEqual(dest.find('./uuid').text, server['id'])

    def test_the_migration_thread_capped_without_reclaim(self):
        # [rtmig] migration_thread_reclaim = False: the same runtime, as a
        # hard cap (no SCHED_FLAG_RECLAIM)
        self.flags(migration_thread_reclaim=False, group='rtmig')
        self.start_rt_computes(2, cpus=4)
        server = self.boot_rt('compute1')
        self._live_migrate(server, api=self.admin_api)
        self.assertEqual('compute2', self.server_host(server))
        pl = self.expected_plan()
        thread = self.during[0]['thread']
        self.assertEqual(deadline.SCHED_DEADLINE, thread.policy)
        self.assertEqual(0, thread.flags & deadline.SCHED_FLAG_RECLAIM)
        self.assertEqual(pl.cpu.runtime_ns, thread.runtime_ns)
        self.assertEqual(deadline.SCHED_OTHER,
                         deadline.get_attr(self.migration_thread).policy)

    def test_a_failed_migration_releases_the_reservation(self):
        self.flags(enforce_vcpu_reservation=True, group='rtmig')
        self.start_rt_computes(2, cpus=4)
        server = self.boot_rt('compute1')
        self.fail_migration = True
        self._live_migrate(server, api=self.admin_api,
                           migration_expected_state='failed')
        self.assertEqual('compute1', self.server_host(server))
        during, = self.during
        self.assertNotEqual(-1, during['cpu']['emulator_quota'])
        # the source domain is back as it was: no quota, libvirt's speed
        # and downtime defaults, no state file
        self.assertEqual(-1, self.cpu[server['id']]['emulator_quota'])
        self.assertEqual(8796093022207, self.speeds[-1])
        self.assertEqual(300, self.downtimes[-1])
        self.assertEqual([], self.migration_state_files())
        end, = self.notifications('rtmig.migration.end')
        self.assertEqual('failed', end['outcome'])
        self.assertFalse(end['deadline_met'])
        # the VM keeps its reservation on the source; the destination's
        # arrival watcher was stopped by the rollback, holding nothing
        self.assert_vcpus_reserved('compute1', server)
        self.assertEqual(['nova-vm compute1 ' + server['id']],
                         self.state_labels())
        # Nova did not tell the destination (it casts
        # rollback_live_migration_at_destination only in some cases): its
        # arrival watcher stops at the next resource update
        watchers = self.computes['compute2'].driver._rtmig.vms._watchers
        self.assertEqual([server['id']], list(watchers))
        self._run_periodics()
        self.assertEqual({}, watchers)

    def test_an_operator_abort_rolls_everything_back(self):
        # openstack server migration abort: Nova's live_migration_abort on
        # the source, abortJob on the domain mid-way
        self.flags(enforce_vcpu_reservation=True, group='rtmig')
        self.start_rt_computes(2, cpus=4)
        server = self.boot_rt('compute1')
        self.migration_seconds = 30
        self.admin_api.post_server_action(
            server['id'],
            {'os-migrateLive': {'host': None, 'block_migration': 'auto'}})
        self.assertTrue(self.migrating.wait(30))
        migration = self._wait_for_migration_status(server, ['running'])
        time.sleep(1.0)         # Nova's monitor: the thread's reservation
        self.admin_api.microversion = '2.24'
        self.admin_api.api_delete('/servers/%s/migrations/%s'
                                  % (server['id'], migration['id']))
        self._wait_for_migration_status(server, ['cancelled'])
        self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual('compute1', self.server_host(server))
        during, = self.during
        self.assertEqual(deadline.SCHED_DEADLINE, during['thread'].policy)
        # aborted on the driver's connection, not the migration's, which
        # is closed
        self.assertEqual([['compute1', True]], self.migration_connections)
        # the source back as it was, the VM keeping its own reservation;
        # nothing on the destination once it hears of it (or reconciles)
        self.assertEqual(-1, self.cpu[server['id']]['emulator_quota'])
        self.assertEqual(8796093022207, self.speeds[-1])
        self.assertEqual(300, self.downtimes[-1])
        self.assertEqual(deadline.SCHED_OTHER,
                         deadline.get_attr(self.migration_thread).policy)
        self._run_periodics()
        self.assertEqual(['nova-vm compute1 ' + server['id']],
                         self.state_labels())
        self.assert_vcpus_reserved('compute1', server)
        end, = self.notifications('rtmig.migration.end')
        self.assertEqual('failed', end['outcome'])

    def test_a_refused_setting_rolls_back_before_the_migration(self):
        self.start_rt_computes(2, cpus=4)
        server = self.boot_rt('compute1')

        def refuse(dom, params, flags=0):
            # a quota is refused; putting back "no quota" works
            if params.get('emulator_quota', -1) != -1:
                raise fakelibvirt.make_libvirtError(
                    fakelibvirt.libvirtError,
                    'cgroup CPU controller not mounted',
                    error_code=fakelibvirt.VIR_ERR_OPERATION_INVALID,
                    error_domain=fakelibvirt.VIR_FROM_QEMU)
            self.cpu[dom.UUIDString()].update(params)
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Domain.setSchedulerParametersFlags',
            refuse))
        self._live_migrate(server, api=self.admin_api,
                           migration_expected_state='failed')
        self.assertEqual('compute1', self.server_host(server))
        self.assertEqual([], self.migrate_calls)
        # the speed and downtime step, applied first, was undone
        want_mib = round(self.expected_plan().bandwidth / 2 ** 20)
        self.assertEqual([want_mib, 8796093022207], self.speeds)
        self.assertEqual(300, self.downtimes[-1])
        self.assertEqual([], self.migration_state_files())
        reject, = self.notifications('rtmig.admission.reject')
        self.assertEqual('reserve', reject['stage'])
        self.assertIn('cgroup CPU controller not mounted', reject['reason'])

    def test_a_kernel_refusing_sched_deadline_aborts_the_migration(self):
        # A migration thread pinned to one CPU (as an emulatorpin would
        # pin it): SCHED_DEADLINE needs an affinity spanning the root
        # domain, so the kernel refuses with EPERM.
        if len(os.sched_getaffinity(0)) < 2:
            self.skipTest('needs two CPUs to pin a thread narrower')
        os.sched_setaffinity(self.migration_thread,
                             {min(os.sched_getaffinity(0))})
        self.start_rt_computes(2, cpus=4)
        server = self.boot_rt('compute1')
        self._live_migrate(server, api=self.admin_api,
                           migration_expected_state='cancelled')
        self.assertEqual('compute1', self.server_host(server))
        self.assertEqual(deadline.SCHED_OTHER,
                         self.during[0]['thread'].policy)
        reject, = self.notifications('rtmig.admission.reject')
        self.assertEqual('reserve', reject['stage'])
        self.assertIn('SCHED_DEADLINE of the migration thread',
                      reject['reason'])
        self.assertIn('migration aborted', reject['reason'])
        # everything the source held is undone: no quota, libvirt's
        # defaults, no state file
        self.assertEqual(-1, self.cpu[server['id']]['emulator_quota'])
        self.assertEqual(8796093022207, self.speeds[-1])
        self.assertEqual([], self.migration_state_files())
        # the instance fault says why (the API shows faults only of
        # servers in ERROR)
        from nova import context as nova_context
        from nova import objects
        faults = objects.InstanceFaultList.get_by_instance_uuids(
            nova_context.get_admin_context(), [server['id']])
        self.assertIn('SCHED_DEADLINE', faults[0].message)

    def test_the_migration_stream_gets_its_htb_class(self):
        ifname = self.dummy_interface()
        self.flags(migration_interface=ifname, group='rtmig')
        self.start_rt_computes(2, cpus=4)
        server = self.boot_rt('compute1')
        self._live_migrate(server, api=self.admin_api)
        self.assertEqual('compute2', self.server_host(server))
        want_mib = round(self.expected_plan().bandwidth / 2 ** 20)
        want = reservation.migration_shaping(
            ifname, CONF.rtmig.link_capacity, want_mib * 2 ** 20,
            (49152, 49215)).migration.rate
        htb = {row['role']: row for row in self.during[0]['htb']}
        self.assertAlmostEqual(want, htb['migration']['rate'], delta=1)
        self.assertEqual(CONF.rtmig.link_capacity, htb['link']['rate'])
        self.assertIn('default', htb)
        # QEMU's stream: its unsent bytes capped, paced at the class's
        # payload rate while it ran; both given back
        [[_, _, cap, pacing]] = self.during[0]['stream']
        self.assertEqual(CONF.rtmig.send_queue_cap, cap)
        self.assertAlmostEqual(netshape.payload_rate(want), pacing, delta=2)
        self.assertEqual([[send_queue.UNSET, send_queue.UNLIMITED_PACING]],
                         [s[2:] for s in self.stream_options()])
        # the interface is back to the kernel's default qdisc
        self.assert_unshaped(ifname)
        self.assertEqual([], self.migration_state_files())

    def test_a_foreign_qdisc_refuses_the_migration(self):
        ifname = self.dummy_interface()
        subprocess.run(['tc', 'qdisc', 'add', 'dev', ifname, 'root',
                        'handle', '7:', 'tbf', 'rate', '1mbit', 'burst',
                        '32kbit', 'latency', '400ms'], check=True)
        self.flags(migration_interface=ifname, group='rtmig')
        self.start_rt_computes(2, cpus=4)
        server = self.boot_rt('compute1')
        self._live_migrate(server, api=self.admin_api,
                           migration_expected_state='failed')
        self.assertEqual('compute1', self.server_host(server))
        self.assertEqual([], self.migrate_calls)
        reject, = self.notifications('rtmig.admission.reject')
        self.assertEqual('reserve', reject['stage'])
        self.assertIn('did not create', reject['reason'])
        # the foreign qdisc untouched; the speed and CPU steps undone
        out = subprocess.run(['tc', 'qdisc', 'show', 'dev', ifname],
                             capture_output=True, text=True,
                             check=True).stdout
        self.assertIn('qdisc tbf 7:', out)
        self.assertEqual(-1, self.cpu[server['id']]['emulator_quota'])
        self.assertEqual([], self.migration_state_files())

    def test_a_refused_vcpu_reservation_fails_the_build_cleanly(self):
        # vCPU threads pinned to one CPU (as a vcpupin would pin them):
        # SCHED_DEADLINE needs an affinity spanning the root domain
        if len(os.sched_getaffinity(0)) < 2:
            self.skipTest('needs two CPUs to pin a thread narrower')
        self.flags(enforce_vcpu_reservation=True, group='rtmig')
        self.pin_new_vcpus = True
        self.start_rt_computes(2, cpus=4)
        server = self._create_server(
            image_uuid=base.IMAGE_UUID, flavor_id=self.flavor,
            networks='none', expected_state='ERROR')
        self.assertIn('Exceeded maximum number of retries',
                      self.fault_message(server))
        self.assertEqual([], self.state_labels())
        for procs in self.vcpu_procs.values():       # tried on both hosts
            for p in procs:
                self.assertEqual(deadline.SCHED_OTHER,
                                 deadline.get_attr(p.pid).policy)
        self.assertEqual(2, len(self.vcpu_procs))

    def test_a_hard_reboot_reserves_the_new_vcpus(self):
        self.flags(enforce_vcpu_reservation=True, group='rtmig')
        self.start_rt_computes(1, cpus=4)
        server = self.boot_rt('compute1')
        before = self.vcpu_pids('compute1', server)
        self.assert_vcpus_reserved('compute1', server)
        self._reboot_server(server, hard=True)
        after = self.vcpu_pids('compute1', server)
        self.assertNotEqual(before, after)          # a new QEMU
        self.assert_vcpus_reserved('compute1', server)
        self.assertEqual(['nova-vm compute1 ' + server['id']],
                         self.state_labels())

    def test_a_vm_reservation_left_behind_is_released(self):
        # A destination that never heard of a rollback keeps the record of
        # an instance that is not there: the next resource update drops it.
        self.flags(enforce_vcpu_reservation=True, group='rtmig')
        self.start_rt_computes(2, cpus=4)
        server = self.boot_rt('compute1')
        from rtmig_nova.enforce import reservation as res_mod
        res_mod.Reservation([], self.state_dir,
                            label='nova-vm compute2 ' + server['id']).apply()
        self._run_periodics()
        self.assertEqual(['nova-vm compute1 ' + server['id']],
                         self.state_labels())
        self.assert_vcpus_reserved('compute1', server)

    def test_a_leftover_reservation_is_released_by_the_compute(self):
        # A compute that died mid-migration left its state file; the
        # restarted service (here: the next resource update) undoes it.
        from rtmig_nova.enforce import reservation
        self.start_rt_computes(2, cpus=4)
        server = self.boot_rt('compute1')
        conn = self.computes['compute1'].driver._host.get_connection()
        steps = reservation.migration_steps(
            'qemu:///system', server['id'], 8 * 2 ** 20, 0.05,
            cpu={'emulator_period': 100000, 'emulator_quota': 5000},
            connect=lambda uri: conn)
        other = reservation.Reservation(
            [], self.state_dir, label='somebody else')
        other.apply()
        reservation.Reservation(
            steps, self.state_dir,
            label='nova-live-migration compute1 ' + server['id'],
            connect=lambda uri: conn).apply()
        self.assertEqual(5000, self.cpu[server['id']]['emulator_quota'])
        self._run_periodics()
        self.assertEqual(-1, self.cpu[server['id']]['emulator_quota'])
        self.assertEqual(['somebody else'], self.state_labels())

    def test_a_stock_server_migrates_as_nova_migrates_it(self):
        self.start_rt_computes(2, cpus=4)
        plain = self.make_flavor('plain', 1)
        server = self._create_server(
            image_uuid=base.IMAGE_UUID, flavor_id=plain, networks='none',
            host='compute1')
        self._live_migrate(server, api=self.admin_api)
        self.assertEqual('compute2', self.server_host(server))
        (_uuid, params, flags), = self.migrate_calls
        self.assertEqual(CONF.libvirt.live_migration_bandwidth,
                         params['bandwidth'])
        self.assertTrue(flags & fakelibvirt.VIR_MIGRATE_AUTO_CONVERGE)
        nova_steps = {ms for _, ms in libvirt_migration.downtime_steps(1.0)}
        self.assertTrue(self.downtimes)
        self.assertLessEqual(set(self.downtimes), nova_steps)
        self.assertEqual([], _impl_test.NOTIFICATIONS)

    def test_the_captured_profile_of_the_instance_is_preferred(self):
        self.start_rt_computes(2, cpus=4)
        server = self.boot_rt('compute1')
        # an idle 1 GiB guest: far less to send than the flavor's 4 GiB
        # video profile
        path = os.path.join(self.profile_dir, server['id'] + '.json')
        DirtyProfile.from_aggregate_rate(2 ** 30, 1e6).save(path)
        self._live_migrate(server, api=self.admin_api)
        pl = self.expected_plan(path)
        flavor_pl = self.expected_plan()
        self.assertLess(pl.bandwidth, flavor_pl.bandwidth)
        plan, = self.notifications('rtmig.migration.plan')
        self.assertEqual('instance', plan['profile_source'])
        self.assertEqual(path, plan['profile'])
        (_uuid, params, _flags), = self.migrate_calls
        self.assertEqual(round(pl.bandwidth / 2 ** 20), params['bandwidth'])

    def _fake_dirty_rate(self, mib_per_s):
        # libvirt's dirty-rate calculation, which Nova's fake lacks: a
        # start resets the result (as QEMU does); the result, measured at
        # once here, reads back through getAllDomainStats (None: never).
        self.dirty_rate_calcs = []             # (uuid, seconds)
        status = {}

        def start(dom, seconds, flags=0):
            self.dirty_rate_calcs.append((dom.UUIDString(), seconds))
            status[dom.UUIDString()] = 1 if mib_per_s is None else 2

        def all_stats(conn, stats=0, flags=0):
            out = []
            for dom in conn._vms.values():
                values = {'dirtyrate.calc_status':
                          status.get(dom.UUIDString(), 0)}
                if values['dirtyrate.calc_status'] == 2:
                    values['dirtyrate.megabytes_per_second'] = mib_per_s
                out.append((dom, values))
            return out
        for cls, name, fn in (
                (fakelibvirt.Domain, 'startDirtyRateCalc', start),
                (fakelibvirt.Domain, 'connect', lambda dom: dom._connection),
                (fakelibvirt.Connection, 'getAllDomainStats', all_stats)):
            self.useFixture(fixtures.MockPatchObject(cls, name, new=fn,
                                                     create=True))

    def test_a_dirty_rate_measured_before_the_migration_plans_it(self):
        self.start_rt_computes(2, cpus=4)
        server = self.boot_rt('compute1')
        self._fake_dirty_rate(3)
        self._live_migrate(server, api=self.admin_api)
        self.assertEqual('compute2', self.server_host(server))
        # started once, at the source's check; read as the migration starts
        self.assertEqual([(server['id'], 1)], self.dirty_rate_calcs)
        from rtmig_nova.capture import dirtyrate
        memory = 64 * 2 ** 20                  # the flavor's RAM
        profile = dirtyrate.coarse_profile(3 * 2 ** 20, memory, 1,
                                           server['id'])
        link = CONF.rtmig.link_capacity * CONF.rtmig.migration_link_share
        pl = planning.migration_plan_of(self.request, link, CONF.rtmig,
                                        profile)
        self.assertTrue(pl.feasible)
        self.assertNotEqual(self.expected_plan().bandwidth, pl.bandwidth)
        plan, = self.notifications('rtmig.migration.plan')
        self.assertEqual('dirty_rate', plan['profile_source'])
        self.assertIn('3 MiB/s over 1 s of %d bytes' % memory,
                      plan['profile'])
        self.assertEqual(pl.bandwidth, plan['bandwidth_bytes_per_s'])
        (_uuid, params, _flags), = self.migrate_calls
        self.assertEqual(round(pl.bandwidth / 2 ** 20), params['bandwidth'])

    def test_a_dirty_rate_that_never_comes_falls_back_to_the_flavor(self):
        self.start_rt_computes(2, cpus=4)
        server = self.boot_rt('compute1')
        self._fake_dirty_rate(None)
        self._live_migrate(server, api=self.admin_api)
        self.assertEqual('compute2', self.server_host(server))
        self.assertEqual(1, len(self.dirty_rate_calcs))
        plan, = self.notifications('rtmig.migration.plan')
        self.assertEqual('flavor', plan['profile_source'])
        (_uuid, params, _flags), = self.migrate_calls
        self.assertEqual(round(self.expected_plan().bandwidth / 2 ** 20),
                         params['bandwidth'])

    def test_an_infeasible_plan_refuses_before_anything_changes(self):
        self.start_rt_computes(2, cpus=4)
        server = self.boot_rt('compute1')
        # captured since: 8 GiB dirtied at 2 GB/s, beyond any link share
        path = os.path.join(self.profile_dir, server['id'] + '.json.gz')
        DirtyProfile.from_aggregate_rate(8 * 2 ** 30, 2e9).save(path)
        # NOTE: Nova's CastAsCallFixture brings the conductor's
        # NoValidHost back to the API as an error 500 (Nova's own tests of
        # refused live migrations expect the same).
        self.admin_api.api_post(
            '/servers/%s/action' % server['id'],
            {'os-migrateLive': {'host': None, 'block_migration': 'auto'}},
            check_response_status=[500])
        self._wait_for_state_change(server, 'ACTIVE')
        self._wait_for_migration_status(server, ['error'])
        self.assertEqual('compute1', self.server_host(server))
        self.assertEqual([], self.migrate_calls)
        self.assertEqual([], self.downtimes)
        reject, = self.notifications('rtmig.admission.reject')
        self.assertEqual('plan', reject['stage'])
        self.assertIn('cannot be migrated within', reject['reason'])
        self.assertEqual([], self.notifications('rtmig.migration.plan'))
        # Placement holds the server on the source only, as before
        allocs = self.placement.get(
            '/allocations/%s' % server['id']).body['allocations']
        self.assertEqual([self.compute_rp_uuids['compute1']], list(allocs))

    def test_a_plan_that_fails_at_the_start_rolls_back(self):
        # The checks pass; then, before the source starts, a capture
        # replaces the profile with one no link share can carry.
        self.start_rt_computes(2, cpus=4)
        server = self.boot_rt('compute1')
        path = os.path.join(self.profile_dir, server['id'] + '.json')
        from nova.virt.rtmig import driver as rtmig_driver
        original = rtmig_driver.RTLibvirtDriver.pre_live_migration

        def pre_live_migration(drv, *args, **kwargs):
            DirtyProfile.from_aggregate_rate(8 * 2 ** 30, 2e9).save(path)
            return original(drv, *args, **kwargs)
        self.useFixture(fixtures.MonkeyPatch(
            'nova.virt.rtmig.driver.RTLibvirtDriver.pre_live_migration',
            pre_live_migration))
        self._live_migrate(server, api=self.admin_api,
                           migration_expected_state='failed')
        self.assertEqual('compute1', self.server_host(server))
        self.assertEqual('ACTIVE', self.admin_api.get_server(
            server['id'])['status'])
        self.assertEqual([], self.migrate_calls)
        self.assertEqual([], self.migration_state_files())
        reject, = self.notifications('rtmig.admission.reject')
        self.assertEqual('plan', reject['stage'])
        # Placement: back on the source only
        allocs = self.placement.get(
            '/allocations/%s' % server['id']).body['allocations']
        self.assertEqual([self.compute_rp_uuids['compute1']], list(allocs))

    def test_a_forced_destination_without_room_refuses(self):
        # two servers fill compute2's two RT CPUs; Placement has room
        self.start_rt_computes(2, cpus=4)
        for _ in range(2):
            self.boot_rt('compute2')
        server = self.boot_rt('compute1')
        self._run_periodics()
        self.admin_api.microversion = '2.67'   # the last with "force"
        # an error 500 under Nova's CastAsCallFixture, as above
        self.admin_api.api_post(
            '/servers/%s/action' % server['id'],
            {'os-migrateLive': {'host': 'compute2', 'block_migration': 'auto',
                                'force': True}},
            check_response_status=[500])
        self._wait_for_state_change(server, 'ACTIVE')
        self._wait_for_migration_status(server, ['error'])
        self.assertEqual('compute1', self.server_host(server))
        self.assertEqual([], self.migrate_calls)
        reject, = self.notifications('rtmig.admission.reject')
        self.assertEqual('destination', reject['stage'])
        self.assertEqual('compute2', reject['host'])

    def test_a_destination_on_a_stale_ledger_is_skipped_for_the_next(self):
        self.start_rt_computes(3, cpus=4)
        # the scheduler's choice is the headroom weigher's (not RAM's)
        self.flags(headroom_weight_multiplier=100.0, group='rtmig')
        server = self.boot_rt('compute1')
        self.boot_rt('compute3')              # compute3 looks fuller ...
        self._run_periodics()
        for _ in range(2):                    # ... than compute2, which is
            self.boot_rt('compute2')          # full since its last report
        self._live_migrate(server, api=self.admin_api)
        self.assertEqual('compute3', self.server_host(server))
        reject, = self.notifications('rtmig.admission.reject')
        self.assertEqual(('destination', 'compute2'),
                         (reject['stage'], reject['host']))
        (_uuid, params, _flags), = self.migrate_calls
        self.assertEqual(round(self.expected_plan().bandwidth / 2 ** 20),
                         params['bandwidth'])


class RTLiveMigrationReclaimTest(live_migration_base.RTLiveMigrationBase):
    """A flavor with ``rtmig:vcpu_reclaim=true``: its vCPU reclaims idle
    CPU time under its reservation, from spawn and on the destination."""

    rt_specs = {**live_migration_base.RT_SPECS,
                'rtmig:vcpu_reclaim': 'true'}

    def test_the_vcpu_reclaims_on_both_hosts(self):
        self.flags(enforce_vcpu_reservation=True, group='rtmig')
        self.start_rt_computes(2, cpus=4)
        server = self.boot_rt('compute1')
        self.assertTrue(self.request.reclaim)
        self.assert_vcpus_reserved('compute1', server)      # with the flag
        self._live_migrate(server, api=self.admin_api)
        self.assertEqual('compute2', self.server_host(server))
        self.assert_vcpus_reserved('compute2', server)
        self.assert_vcpus_free('compute1', server)
        # the flag changes what the vCPU may use, not what it claims
        usages = self._get_provider_usages(
            self._get_provider_uuid_by_host('compute2'))
        self.assertEqual(500, usages[rtflavor.CPU_CLASS])
