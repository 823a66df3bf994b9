"""Live migration of real-time servers on real Nova in-process (API,
conductor, scheduler, Placement, computes on rtmig's driver shim over
Nova's fake libvirt): the plan reaches libvirt, the destination check
refuses what does not fit, an infeasible plan refuses before anything
changes, and the rtmig notifications say so."""

import os
import shutil
import tempfile
import time

import fixtures
from lxml import etree
from nova.tests.fixtures import libvirt as fakelibvirt
from nova.virt.libvirt import migration as libvirt_migration
from oslo_messaging.notify import _impl_test

from rtmig_nova import conf
from rtmig_nova import planning
from rtmig_nova.model import DirtyProfile
from rtmig_nova.model import flavor as rtflavor
from tests.functional import base

CONF = conf.CONF
# One vCPU of 0.5: one such server per RT CPU (the kernel's bound is 0.95),
# while Placement's CUSTOM_RTMIG_CPU_MILLI (1850 free) would take three.
RT_SPECS = {
    'rtmig:vcpu_reservation': '5ms/10ms',
    'rtmig:net_rate': '10MB/s',
    'rtmig:migration_deadline': '60s',
    'rtmig:max_downtime': '300ms'}


class RTLiveMigrationTest(base.RTMigNovaBase):
    WEIGHT_CLASSES = ['nova.scheduler.weights.all_weighers',
                      'rtmig_nova.scheduler.weights.RTHeadroomWeigher']

    def setUp(self):
        super().setUp()
        _impl_test.reset()
        self.addCleanup(_impl_test.reset)
        self.flags(driver=['test'], group='oslo_messaging_notifications')
        # Nova would add auto-converge and step the downtime from 166 ms
        # up to 500 ms (3 s per GB of RAM and disk between steps).
        self.flags(live_migration_permit_auto_converge=True,
                   live_migration_downtime=500,
                   live_migration_downtime_steps=3,
                   live_migration_downtime_delay=3, group='libvirt')
        self.profile_dir = tempfile.mkdtemp(prefix='rtmig-inst-profiles-')
        self.addCleanup(shutil.rmtree, self.profile_dir, True)
        self.flags(instance_profile_dir=self.profile_dir, group='rtmig')
        self.migrate_calls = []          # (source host, params, flags)
        self.downtimes = []              # ms, as libvirt was told
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Domain.migrateToURI3',
            self._migrate))
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Domain.migrateSetMaxDowntime',
            lambda dom, ms: self.downtimes.append(ms)))
        specs = rtflavor.flavor_properties(1, RT_SPECS)
        self.flavor = self.make_flavor('rt', 1, specs)
        self.request = rtflavor.parse_specs(RT_SPECS)

    def _migrate(self, domain, destination, params, flags):
        # Runs in Nova's migration thread: stay "running" long enough for
        # the monitor (every 0.5 s) to apply its downtime steps, then
        # complete on the destination's fake connection.
        uuid = etree.fromstring(params['destination_xml']).find(
            './uuid').text
        dest = destination.split('//')[1].split('/')[0]
        self.migrate_calls.append((uuid, dict(params), flags))
        domain._job_type = fakelibvirt.VIR_DOMAIN_JOB_UNBOUNDED
        time.sleep(1.2)
        self.computes[dest].driver._host.get_connection().createXML(
            params['destination_xml'], 'fake')
        domain.complete_job()

    def notifications(self, event_type):
        return [msg['payload'] for _ctx, msg, _prio, _retry
                in _impl_test.NOTIFICATIONS
                if msg['event_type'] == event_type]

    def boot_rt(self, host):
        return self._create_server(
            image_uuid=base.IMAGE_UUID, flavor_id=self.flavor,
            networks='none', host=host)

    def expected_plan(self, profile_ref=None):
        link = CONF.rtmig.link_capacity * CONF.rtmig.migration_link_share
        return planning.migration_plan(self.request, link, CONF.rtmig,
                                       profile_ref=profile_ref)

    def test_the_plan_reaches_libvirt_and_is_kept(self):
        self.start_rt_computes(2, cpus=4)
        server = self.boot_rt('compute1')
        self._run_periodics()
        self._live_migrate(server, api=self.admin_api)
        self.assertEqual('compute2', self.server_host(server))

        pl = self.expected_plan()
        self.assertTrue(pl.feasible)
        (uuid, params, flags), = self.migrate_calls
        self.assertEqual(server['id'], uuid)
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
        self.assertEqual([want_ms], sorted(set(self.downtimes)))

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
