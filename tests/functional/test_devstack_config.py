"""The nova.conf the devstack plugin writes, live: devstack/plugin.sh's
post-config phase runs (with the stand-ins of tests/devstack/stubs.sh)
against the files devstack would have written, then Nova's scheduler and
computes start from what it wrote, not from this test's settings: the
computes run rtmig's driver shim, and the scheduler's RTReservationFilter
refuses what Placement alone would admit."""

import shutil
import tempfile

from oslo_config import cfg

from rtmig_nova import conf
from rtmig_nova.model import flavor as rtflavor
from tests.devstack import phases
from tests.functional import base
from tests.functional import live_migration_base

CONF = conf.CONF


class DevstackConfigTest(base.RTMigNovaBase):
    # what the plugin writes, not these (RTMigNovaBase's) settings
    COMPUTE_DRIVER = None
    EXTRA_AVAILABLE_FILTERS = ADDITIONAL_FILTERS = ()

    def _setup_services(self):
        tree = tempfile.mkdtemp(prefix='rtmig-devstack-')
        self.addCleanup(shutil.rmtree, tree, True)
        # devstack's own settings before the plugin's phase
        before = ('iniset $NOVA_CONF filter_scheduler enabled_filters '
                  'ComputeFilter,ImagePropertiesFilter; '
                  'iniset $NOVA_CPU_CONF DEFAULT compute_driver '
                  'libvirt.LibvirtDriver')
        proc = phases.run_phases(tree, ['stack post-config'],
                                 after_settings='mkdir -p $NOVA_CONF_DIR; '
                                 + before)
        self.assertEqual(0, proc.returncode, proc.stderr)
        self.written = {}
        for name in ('nova.conf', 'nova-cpu.conf'):
            self._load('%s/etc/nova/%s' % (tree, name))
        super()._setup_services()

    def _load(self, path):
        """Sets every option of the ini file ``path`` as oslo.config would
        read it (the services here share the test's CONF)."""
        sections = {}
        cfg.ConfigParser(path, sections).parse()
        for section, options in sections.items():
            group = None if section == 'DEFAULT' else section
            for name, values in options.items():
                opt = CONF._get_opt_info(name, group)['opt']
                value = ([opt.type(v) for v in values] if opt.multi
                         else opt.type(values[-1]))
                self.flags(**{name: value, 'group': group})
                self.written[(section, name)] = value

    def _setup_scheduler_service(self):
        return self.start_service('scheduler')

    def _setup_compute_service(self):
        pass            # started by the test, with the file's driver

    def test_the_plugins_configuration_is_live(self):
        self.assertEqual('rtmig.RTLibvirtDriver',
                         self.written[('DEFAULT', 'compute_driver')])
        self.assertEqual(['ComputeFilter', 'ImagePropertiesFilter',
                          'RTReservationFilter'],
                         self.written[('filter_scheduler',
                                       'enabled_filters')])
        self.start_rt_computes(1, cpus=4)
        driver = self.computes['compute1'].driver
        self.assertEqual('nova.virt.rtmig.driver',
                         type(driver).__module__)
        host_manager = self.scheduler.manager.host_manager
        self.assertEqual(
            ['ComputeFilter', 'ImagePropertiesFilter', 'RTReservationFilter'],
            [type(f).__name__ for f in host_manager.enabled_filters])
        self.assertIn('RTHeadroomWeigher',
                      [type(w).__name__ for w in host_manager.weighers])
        # one 0.5-CPU vCPU per RT CPU (2): Placement's CUSTOM_RTMIG_CPU_MILLI
        # (1850 free) would take a third, the filter does not
        specs = rtflavor.flavor_properties(1, live_migration_base.RT_SPECS)
        flavor = self.make_flavor('rt', 1, specs)
        for _ in range(2):
            self.boot(flavor)
            # the compute publishes its ledger at each resource update
            self.run_periodics()
        refused = self.boot(flavor, wait_for='ERROR')
        self.assertIn('No valid host', self.fault_message(refused))
