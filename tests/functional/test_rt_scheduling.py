"""Real Nova in-process (API, conductor, scheduler, Placement, computes on
Nova's fake libvirt running rtmig's driver shim): real-time VMs land only
where their reservations fit, race-free through Placement."""

import concurrent.futures
import time

from nova.tests.functional.api import client

from rtmig_nova.model import flavor as rtflavor
from tests.functional import base

CPU = rtflavor.CPU_CLASS
NET = rtflavor.NET_CLASS


class RTSchedulingTest(base.RTMigNovaBase):
    WEIGHT_CLASSES = ['nova.scheduler.weights.all_weighers',
                      'rtmig_nova.scheduler.weights.RTHeadroomWeigher']

    def setUp(self):
        super().setUp()
        # Pack (fill one host before the next), so the order is known.
        self.flags(headroom_weight_multiplier=-1.0, group='rtmig')

    def rt_flavor(self, name, vcpus, reservation, **specs):
        specs = {'rtmig:vcpu_reservation': reservation,
                 'rtmig:migration_deadline': '60s',
                 'rtmig:max_downtime': '300ms', **specs}
        return self.make_flavor(
            name, vcpus, rtflavor.flavor_properties(vcpus, specs))

    def boot_and_refresh(self, flavor_id, wait_for='ACTIVE', **kw):
        server = self._create_server(
            image_uuid=base.IMAGE_UUID, flavor_id=flavor_id,
            networks='none', expected_state=wait_for, **kw)
        # The compute publishes its ledger at each resource update (every
        # periodic in a real deployment).
        self.run_periodics()
        return server

    def usage(self, host):
        return self.placement.get(
            '/resource_providers/%s/usages' % self.compute_rp_uuids[host]
        ).body['usages']

    def test_inventory_is_merged_into_libvirts(self):
        self.start_rt_computes(1, cpus=4)
        rp = self.compute_rp_uuids['compute1']
        inv = self.placement.get(
            '/resource_providers/%s/inventories' % rp).body['inventories']
        # The libvirt driver's own classes stay beside rtmig's.
        for rc in ('VCPU', 'MEMORY_MB', 'DISK_GB'):
            self.assertIn(rc, inv)
        self.assertEqual(2 * 950, inv[CPU]['total'])
        self.assertEqual(50, inv[CPU]['reserved'])
        self.assertEqual(10000000, inv[NET]['total'])        # 10 Gbit/s
        self.assertEqual(4000000, inv[NET]['reserved'])      # 40% kept
        traits = self.placement.get(
            '/resource_providers/%s/traits' % rp, version='1.6').body[
            'traits']
        self.assertIn(rtflavor.HOST_TRAIT, traits)
        self.assertIn('COMPUTE_NET_ATTACH_INTERFACE', traits)

    def test_fill_other_host_then_no_valid_host_and_delete_frees(self):
        self.start_rt_computes(2, cpus=4)
        # 0.6 CPU per vCPU on 2 RT CPUs under the bound 0.95: one VM per
        # CPU, two per host (Placement would take three: 1850 units free,
        # 600 each).
        rt = self.rt_flavor('rt', 1, '6ms/10ms')
        hosts = [self.server_host(self.boot_and_refresh(rt))
                 for _ in range(2)]
        self.assertEqual(1, len(set(hosts)), hosts)
        first = hosts[0]
        other = ({'compute1', 'compute2'} - {first}).pop()
        more = [self.boot_and_refresh(rt) for _ in range(2)]
        self.assertEqual([other] * 2, [self.server_host(s) for s in more])
        self.assertEqual(1200, self.usage(other)[CPU])

        refused = self.boot_and_refresh(rt, wait_for='ERROR')
        fault = self.fault_message(refused)
        self.assertIn('No valid host', fault)
        self.assertIn('rtmig: no host has room', fault)
        self.assertIn('cpu: 1 vCPUs of 0.6 CPU each', fault)
        for host in ('compute1', 'compute2'):
            self.assertEqual(1200, self.usage(host)[CPU])

        # A non-real-time server is not affected.
        plain = self.make_flavor('plain', 2)
        self.assertEqual('ACTIVE', self.boot_and_refresh(plain)['status'])

        # Deleting a real-time server frees its reservation.
        self._delete_server(more[0])
        self.run_periodics()
        again = self.boot_and_refresh(rt)
        self.assertEqual(other, self.server_host(again))

    def test_two_boots_race_for_the_last_slot(self):
        self.start_rt_computes(1, cpus=4)
        # Two VMs of 2 x 0.45 CPU fill the host exactly (1800 of 1850
        # units; per CPU 0.05 + 0.45 + 0.45 = 0.95).
        rt = self.rt_flavor('rt2', 2, '4.5ms/10ms')
        self.boot_and_refresh(rt)
        body = self._build_server(image_uuid=base.IMAGE_UUID,
                                  flavor_id=rt, networks='none')

        def post(i):
            return self.api.post_server({'server': dict(body,
                                                        name='race%d' % i)})
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            servers = list(pool.map(post, range(2)))
        final = [self._wait_until_built(s) for s in servers]
        states = sorted(s['status'] for s in final)
        self.assertEqual(['ACTIVE', 'ERROR'], states)
        self.assertEqual(1800, self.usage('compute1')[CPU])

    def test_compute_refuses_what_a_stale_ledger_let_through(self):
        self.start_rt_computes(1, cpus=4)
        rt = self.rt_flavor('rt', 1, '6ms/10ms')
        # No resource update between the boots: the scheduler still sees
        # an empty ledger and Placement has room for three (1800 of 1850),
        # but only two fit per CPU.  The compute's own check (under its
        # lock, with the instances Nova claimed here) refuses the third,
        # Nova reschedules it and, with no other host, it ends in ERROR
        # (the reason is in the compute log and the build's error event).
        for _ in range(2):
            self._create_server(image_uuid=base.IMAGE_UUID, flavor_id=rt,
                                networks='none')
        third = self._create_server(image_uuid=base.IMAGE_UUID,
                                    flavor_id=rt, networks='none',
                                    expected_state='ERROR')
        self.assertIn('Exhausted all hosts', self.fault_message(third))
        self.assertEqual(1200, self.usage('compute1')[CPU])

    def _wait_until_built(self, server):
        for _ in range(200):
            s = self.api.get_server(server['id'])
            if s['status'] in ('ACTIVE', 'ERROR'):
                return s
            time.sleep(0.1)
        self.fail('server %s still %s' % (server['id'], s['status']))

    def test_fits_by_total_but_not_per_cpu(self):
        self.flags(rt_cpu_count=4, group='rtmig')
        self.start_rt_computes(1, cpus=4)
        self.boot_and_refresh(self.rt_flavor('two', 2, '6ms/10ms'))
        # 3 x 0.5 CPU: 1500 units, 2550 free in Placement; but only two
        # CPUs have 0.5 left (0.6 + 0.6 + 0.05 are taken on three).
        wide = self.rt_flavor('three', 3, '5ms/10ms')
        candidates = self.placement.get(
            '/allocation_candidates?resources=%s:1500' % CPU,
            version='1.10').body['allocation_requests']
        self.assertEqual(1, len(candidates))      # Placement says yes
        refused = self.boot_and_refresh(wide, wait_for='ERROR')
        self.assertIn('cpu: 3 vCPUs of 0.5 CPU each need 3 CPUs',
                      self.fault_message(refused))
        self.assertEqual(1200, self.usage('compute1')[CPU])

    def test_host_without_migration_headroom_is_refused(self):
        # compute1 keeps 500 MB/s for migrations, compute2 only 50 MB/s:
        # the default profile's 4 GiB cannot leave compute2 in 60 s.
        self.flags(link_capacity=125e6, group='rtmig')
        self.start_compute('compute2', host_info=base.fakelibvirt.HostInfo(
            cpu_nodes=1, cpu_sockets=1, cpu_cores=4, cpu_threads=1))
        self.flags(link_capacity=1.25e9, group='rtmig')
        self.start_compute('compute1', host_info=base.fakelibvirt.HostInfo(
            cpu_nodes=1, cpu_sockets=1, cpu_cores=4, cpu_threads=1))
        rt = self.rt_flavor('rt', 1, '1ms/10ms')
        for _ in range(2):
            self.assertEqual('compute1',
                             self.server_host(self.boot_and_refresh(rt)))
        refused = self.boot_and_refresh(rt, wait_for='ERROR',
                                        host='compute2')
        fault = self.fault_message(refused)
        self.assertIn('headroom: the VM could not be migrated away in time',
                      fault)

    def test_a_host_without_rtmig_takes_no_rt_vm(self):
        self.start_rt_computes(1, cpus=4)
        self.flags(compute_driver='libvirt.LibvirtDriver')
        self.start_compute('stock', host_info=base.fakelibvirt.HostInfo(
            cpu_nodes=1, cpu_sockets=1, cpu_cores=4, cpu_threads=1))
        inv = self.placement.get('/resource_providers/%s/inventories'
                                 % self.compute_rp_uuids['stock']).body[
            'inventories']
        self.assertNotIn(CPU, inv)
        rt = self.rt_flavor('rt', 1, '1ms/10ms')
        refused = self.boot_and_refresh(rt, wait_for='ERROR', host='stock')
        self.assertIn('No valid host', self.fault_message(refused))
        self.assertEqual('compute1',
                         self.server_host(self.boot_and_refresh(rt)))
        plain = self.make_flavor('plain', 1)
        self.assertEqual('stock', self.server_host(self.boot_and_refresh(
            plain, host='stock')))

    def test_malformed_and_contradictory_specs_get_400(self):
        fl = self.make_flavor('f', 2)
        for specs, words in [
                ({'rtmig:vcpu_reservation': '12ms/10ms'}, 'exceeds period'),
                ({'rtmig:vcpu_reservation': 'lots'}, 'RUNTIME/PERIOD'),
                ({'rtmig:max_downtime': '1h'}, 'rtmig:max_downtime'),
                ({'rtmig:confidence': '2'}, 'rtmig:confidence'),
                ({'rtmig:profile': '/etc/passwd'}, 'no path'),
                ({'rtmig:deadline': '60s'}, 'rtmig:deadline')]:
            msg = self.set_flavor_specs_expect_400(fl, specs)
            self.assertIn(words, msg)
        self.assertEqual({}, self.admin_api.get_extra_specs(fl))

    def test_inconsistent_flavors_are_refused_with_a_reason(self):
        self.start_rt_computes(1, cpus=4)
        specs = {'rtmig:vcpu_reservation': '1ms/10ms',
                 'rtmig:migration_deadline': '60s',
                 'rtmig:max_downtime': '300ms'}
        # rtmig: specs without the Placement request ...
        bare = self.make_flavor('bare', 1, specs)
        fault = self.fault_message(self.boot_and_refresh(bare, 'ERROR'))
        self.assertIn('the flavor is inconsistent', fault)
        self.assertIn('resources:%s' % CPU, fault)
        # ... a request without specs ...
        req = self.make_flavor('req', 1, {'resources:%s' % CPU: '100'})
        fault = self.fault_message(self.boot_and_refresh(req, 'ERROR'))
        self.assertIn('without rtmig: specs', fault)
        # ... and a profile no host knows.
        nope = self.rt_flavor('nope', 1, '1ms/10ms', **{
            'rtmig:profile': 'no-such-profile'})
        fault = self.fault_message(self.boot_and_refresh(nope, 'ERROR'))
        self.assertIn("profile 'no-such-profile'", fault)
        self.assertEqual(0, self.usage('compute1').get(CPU, 0))

    def test_unknown_rtmig_key_is_refused_by_the_api(self):
        fl = self.make_flavor('g', 1)
        self.assertRaises(client.OpenStackApiException,
                          self.admin_api.post_extra_spec, fl,
                          {'extra_specs': {'rtmig:anything': 'x'}})
