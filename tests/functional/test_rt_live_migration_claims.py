"""During a live migration Nova claims the flavor's resources on the
destination while the source still holds them (the migration record is the
source's consumer): the rtmig classes are claimed and freed the same way."""

from lxml import etree

import fixtures

from rtmig_nova.model import flavor as rtflavor
from tests.functional import base

CPU = rtflavor.CPU_CLASS
NET = rtflavor.NET_CLASS


class RTLiveMigrationClaimsTest(base.RTMigNovaBase):

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Domain.migrateToURI3',
            self._migrate_stub))
        self.seen = None

    def _allocations(self, consumer):
        return self.placement.get('/allocations/%s' % consumer).body[
            'allocations']

    def _migrate_stub(self, domain, destination, params, flags):
        # Mid-migration: what Placement holds for the instance and for the
        # migration record, by provider.
        uuid = etree.fromstring(params['destination_xml']).find(
            './uuid').text
        migration = self.admin_api.api_get(
            '/os-migrations?instance_uuid=%s' % uuid).body[
            'migrations'][-1]['uuid']
        self.seen = {'instance': self._allocations(uuid),
                     'migration': self._allocations(migration)}
        self.computes['compute2'].driver._host.get_connection().createXML(
            params['destination_xml'], 'fake')
        conn = self.computes['compute1'].driver._host.get_connection()
        conn.lookupByUUIDString(uuid).complete_job()

    def test_rt_classes_held_on_both_hosts_during_migration(self):
        self.start_rt_computes(2, cpus=4)
        src = self.compute_rp_uuids['compute1']
        dst = self.compute_rp_uuids['compute2']
        specs = rtflavor.flavor_properties(2, {
            'rtmig:vcpu_reservation': '3ms/10ms',
            'rtmig:net_rate': '10MB/s',
            'rtmig:migration_deadline': '60s',
            'rtmig:max_downtime': '300ms'})
        fl = self.make_flavor('rt', 2, specs)
        server = self._create_server(image_uuid=base.IMAGE_UUID,
                                     flavor_id=fl, networks='none',
                                     host='compute1')
        self._run_periodics()
        want = {CPU: 600, NET: 80000}

        self._live_migrate(server, host='compute2', api=self.admin_api)
        self.assertIsNotNone(self.seen, 'migrateToURI3 was not called')
        held_src = self.seen['migration'][src]['resources']
        held_dst = self.seen['instance'][dst]['resources']
        self.assertEqual(want, {rc: held_src[rc] for rc in want})
        self.assertEqual(want, {rc: held_dst[rc] for rc in want})
        self.assertNotIn(dst, self.seen['migration'])
        self.assertNotIn(src, self.seen['instance'])

        # Afterwards the source is free and the destination holds it.
        self.assertEqual('compute2', self.server_host(server))
        after = self._allocations(server['id'])
        self.assertEqual([dst], list(after))
        usages = self.placement.get(
            '/resource_providers/%s/usages' % src).body['usages']
        self.assertEqual(0, usages[CPU])
        self.assertEqual(0, usages[NET])
