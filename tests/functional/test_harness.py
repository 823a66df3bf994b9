"""Proves the functional harness: computes, a boot, extra spec validation."""

from tests.functional import base


class HarnessTest(base.RTMigFunctionalBase):

    def test_boot_on_one_of_two_computes(self):
        hosts = self.start_rt_computes(2, cpus=4)
        self.assertEqual(['compute1', 'compute2'], hosts)
        rps = self.placement.get('/resource_providers').body[
            'resource_providers']
        self.assertEqual(2, len(rps))
        # MEMORY_MB is the HostInfo's 16 GiB, not 1024x that.
        inv = self.placement.get('/resource_providers/%s/inventories' %
                                 self.compute_rp_uuids['compute1']).body
        self.assertEqual(16384, inv['inventories']['MEMORY_MB']['total'])
        self.assertEqual(4, inv['inventories']['VCPU']['total'])

        flavor = self.make_flavor('f1', 2, {'acme:anything': 'x'})
        server = self.boot(flavor)
        self.assertEqual('ACTIVE', server['status'])
        self.assertIn(self.server_host(server), hosts)
        self.run_periodics()

    def test_extra_spec_validation(self):
        flavor = self.make_flavor('f2', 1)
        # Unknown namespaces pass at 2.86 (rtmig: has its own validator) ...
        self.admin_api.post_extra_spec(
            flavor, {'extra_specs': {'acme:deadline_ms': '300'}})
        self.assertEqual(
            '300', self.admin_api.get_extra_specs(flavor)['acme:deadline_ms'])
        # ... a malformed standard one does not.
        msg = self.set_flavor_specs_expect_400(
            flavor, {'hw:cpu_policy': 'junk'})
        self.assertIn("junk", msg)
