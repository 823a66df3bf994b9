"""In-process real-Nova functional test base (API, conductor, scheduler,
Placement, computes on Nova's fake libvirt), with the Nova 34 test traps
fixed.  testtools-style: run with stestr/subunit, not pytest collection
(see tests/test_nova_functional.py)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import fixtures

import nova
from nova import conf
from nova.tests.fixtures import libvirt as fakelibvirt
from nova.tests.functional.api import client
from nova.tests.functional.libvirt import base
from nova.virt.libvirt import host as libvirt_host

CONF = conf.CONF

# GlanceFixture's image1; passing it explicitly keeps _build_server from
# switching the shared client to microversion 2.35 to list images.
IMAGE_UUID = '155d900f-4e14-4e4c-a73d-069cbf4541e6'

# Before any test patches it: the real one reads the fake getCPUMap, so the
# online CPUs follow each compute's HostInfo instead of a fixed range(16).
_REAL_GET_ONLINE_CPUS = libvirt_host.Host.get_online_cpus
_FAKE_GET_INFO = fakelibvirt.Connection.getInfo


def find_api_paste_ini():
    """The api-paste.ini the nova wheel installed (under <prefix>/etc/nova,
    not beside the package where Nova's config fixture looks)."""
    pkg = os.path.dirname(nova.__file__)
    candidates = [os.path.join(p, 'etc', 'nova', 'api-paste.ini')
                  for p in (sys.prefix, sys.base_prefix)]
    # <prefix>/lib/pythonX.Y/site-packages/nova -> <prefix>
    candidates.append(os.path.join(pkg, '..', '..', '..', '..',
                                   'etc', 'nova', 'api-paste.ini'))
    candidates.append(os.path.join(pkg, '..', 'etc', 'nova', 'api-paste.ini'))
    for c in candidates:
        if os.path.isfile(c):
            return os.path.abspath(c)
    raise RuntimeError('api-paste.ini not found in %s' % candidates)


def _get_info_mib(self):
    # Real libvirt's getInfo()[1] is MiB; the fake returns kB, which made
    # the compute report 1024x its memory (MEMORY_MB).
    info = _FAKE_GET_INFO(self)
    info[1] = self.host_info.kB_mem // 1024
    return info


# What the recorded calls return: real libvirt's defaults for a QEMU
# domain (no speed limit, 300 ms, no CFS quota).
_FAKE_RETURNS = {
    'migrateGetMaxSpeed': 8796093022207,        # MiB/s
    'migrateGetMaxDowntime': 300,               # ms
    'schedulerParameters': {},
    'schedulerParametersFlags': {'vcpu_period': 100000, 'vcpu_quota': -1,
                                 'emulator_period': 100000,
                                 'emulator_quota': -1},
}


class RTMigFunctionalBase(base.ServersTestBase):
    # >= 2.86 so flavor extra specs are validated by the API; both the
    # admin and the project client get it (ADMIN_API is False).
    microversion = '2.86'
    # Loaded by nova.virt's importer, so it must live under nova.virt.
    COMPUTE_DRIVER = 'libvirt.LibvirtDriver'
    # Class paths or function paths added to available_filters (beside
    # nova.scheduler.filters.all_filters).
    EXTRA_AVAILABLE_FILTERS = []
    # Class names appended to enabled_filters (ServersTestBase mechanism).
    ADDITIONAL_FILTERS = []
    # If set, replaces [filter_scheduler] weight_classes.
    WEIGHT_CLASSES = None

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.MockPatch(
            'nova.virt.libvirt.host.Host.get_online_cpus',
            new=_REAL_GET_ONLINE_CPUS))
        self.useFixture(fixtures.MockPatchObject(
            fakelibvirt.Connection, 'getInfo', new=_get_info_mib))
        # Calls to libvirt APIs the fake Domain lacks: (domain, name, args).
        self.domain_calls = []
        for name in ('migrateSetMaxSpeed', 'migrateGetMaxSpeed',
                     'migrateGetMaxDowntime',
                     'setSchedulerParameters',
                     'setSchedulerParametersFlags', 'schedulerParameters',
                     'schedulerParametersFlags'):
            self.useFixture(fixtures.MockPatchObject(
                fakelibvirt.Domain, name, new=self._recorder(name),
                create=True))

    def _recorder(self, name):
        calls = self.domain_calls

        def method(dom, *args, **kwargs):
            calls.append((dom.name(), name, args + tuple(kwargs.items())))
            return _FAKE_RETURNS.get(name, 0)
        return method

    def _setup_services(self):
        # Runs after Nova's config fixture, before OSAPIFixture loads paste.
        self.flags(api_paste_config=find_api_paste_ini(), group='wsgi')
        # Default quotas (10 instances, 20 cores) would hide host capacity.
        self.flags(instances=-1, cores=-1, ram=-1, group='quota')
        super()._setup_services()

    def _setup_compute_service(self):
        # Computes are started by the test (start_rt_computes).
        self.flags(compute_driver=self.COMPUTE_DRIVER)

    def _setup_scheduler_service(self):
        fs = CONF.filter_scheduler
        self.flags(available_filters=(['nova.scheduler.filters.all_filters']
                                      + list(self.EXTRA_AVAILABLE_FILTERS)),
                   enabled_filters=(list(fs.enabled_filters)
                                    + list(self.ADDITIONAL_FILTERS)),
                   group='filter_scheduler')
        if self.WEIGHT_CLASSES is not None:
            self.flags(weight_classes=list(self.WEIGHT_CLASSES),
                       group='filter_scheduler')
        return self.start_service('scheduler')

    def _get_connection(self, host_info=None, pci_info=None, mdev_info=None,
                        vdpa_info=None, libvirt_version=None,
                        qemu_version=None, hostname=None):
        # As ServersTestBase's, without its 15-CPU cap (that cap only
        # matched its range(16) get_online_cpus mock, replaced in setUp).
        return fakelibvirt.Connection(
            'qemu:///system',
            version=libvirt_version or fakelibvirt.FAKE_LIBVIRT_VERSION,
            hv_version=qemu_version or fakelibvirt.FAKE_QEMU_VERSION,
            host_info=host_info or fakelibvirt.HostInfo(
                cpu_nodes=2, cpu_sockets=1, cpu_cores=2, cpu_threads=2),
            pci_info=pci_info, mdev_info=mdev_info, vdpa_info=vdpa_info,
            hostname=hostname)

    # -- helpers -----------------------------------------------------------

    def start_rt_computes(self, n, cpus=4, mem_mb=16384):
        """Start compute1..computeN, each one NUMA node of `cpus` CPUs."""
        names = []
        for i in range(1, n + 1):
            info = fakelibvirt.HostInfo(
                cpu_nodes=1, cpu_sockets=1, cpu_cores=cpus, cpu_threads=1,
                kB_mem=mem_mb * 1024)
            names.append(self.start_compute('compute%d' % i, host_info=info))
        return names

    def make_flavor(self, name, vcpus, extra_specs=None, memory_mb=64,
                    disk=1):
        """Flavor with tiny RAM/disk (so vCPUs are the limit), its extra
        specs set through the real (validating) API; returns its id."""
        flavor_id = self._create_flavor(
            name=name, vcpu=vcpus, memory_mb=memory_mb, disk=disk,
            ephemeral=0)
        if extra_specs:
            self.admin_api.post_extra_spec(
                flavor_id, {'extra_specs': extra_specs})
        return flavor_id

    def set_flavor_specs_expect_400(self, flavor_id, specs):
        """Set extra specs expecting HTTP 400; returns its message text."""
        try:
            self.admin_api.post_extra_spec(
                flavor_id, {'extra_specs': specs})
        except client.OpenStackApiException as e:
            self.assertEqual(400, e.response.status_code, str(e))
            body = e.response.text
            try:
                return json.loads(body)['badRequest']['message']
            except (ValueError, KeyError, TypeError):
                return body
        self.fail('extra specs %r were accepted' % (specs,))

    def boot(self, flavor_id, wait_for='ACTIVE', name=None):
        """Boot from image (explicit uuid: no microversion switch), no
        network; returns the server as the admin API shows it."""
        return self._create_server(
            name=name, image_uuid=IMAGE_UUID, flavor_id=flavor_id,
            networks='none', expected_state=wait_for)

    def server_host(self, server):
        # OS-EXT-SRV-ATTR:* is admin-only: ask the admin client.
        return self.admin_api.get_server(server['id'])[
            'OS-EXT-SRV-ATTR:host']

    def fault_message(self, server):
        s = self.admin_api.get_server(server['id'])
        return s.get('fault', {}).get('message')

    def run_periodics(self):
        """update_available_resource on every compute (Nova's helper)."""
        self._run_periodics()


class RTMigNovaBase(RTMigFunctionalBase):
    """Computes on rtmig's driver shim, the scheduler with rtmig's filter;
    the hosts' kernel RT bound 0.95 whatever this machine's /proc says, 2
    RT CPUs, 0.05 of one kept for the migration thread."""
    COMPUTE_DRIVER = 'rtmig.RTLibvirtDriver'
    EXTRA_AVAILABLE_FILTERS = ['rtmig_nova.scheduler.filters.all_filters']
    ADDITIONAL_FILTERS = ['RTReservationFilter']

    def setUp(self):
        import rtmig_nova.conf  # noqa: F401  ([rtmig] on Nova's CONF)
        from rtmig_nova import virt_shim
        state = virt_shim.status()
        if state != 'installed':
            self.fail('the driver shim is %s: run rtmig-nova-shim install'
                      % state)
        super().setUp()
        self.useFixture(fixtures.MockPatch(
            'rtmig_nova.compute.host_facts.rt_bound', return_value=0.95))
        # reservation state files of the in-process computes: never the
        # host's own /var/lib/rtmig-nova
        self.state_dir = tempfile.mkdtemp(prefix='rtmig-reservations-')
        self.addCleanup(shutil.rmtree, self.state_dir, True)
        self.flags(reservation_state_dir=self.state_dir, group='rtmig')
        self.flags(migration_cpu=0.05, rt_cpu_count=2, group='rtmig')
        # The in-process computes share this machine's kernel, whose
        # deadline bandwidth (0.95 of each real CPU) cannot hold the vCPU
        # reservations of several fake 4-CPU hosts: enforced only by the
        # tests of enforcement.
        self.flags(enforce_vcpu_reservation=False, group='rtmig')
        self.pin_new_vcpus = False
        self._fake_vcpu_threads()
        self.migration_connections = []     # [(host, closed?)]
        self._fake_migration_connection()

    def _fake_migration_connection(self):
        # The shim's connection of its own for migrateToURI3 (Nova's
        # Host._connect): on the fake, a handle on the compute's one fake
        # connection (a new fake Connection would hold no domains) that
        # records that it was opened and closed.
        opened = self.migration_connections

        class Handle:
            def __init__(self, conn):
                self._conn = conn
                self._index = len(opened)
                opened.append([conn.hostname, False])

            def lookupByUUIDString(self, uuid):
                return self._conn.lookupByUUIDString(uuid)

            def close(self):
                opened[self._index][1] = True

        def connect(host, uri, read_only):
            return Handle(host.get_connection())
        self.useFixture(fixtures.MockPatch(
            'nova.virt.libvirt.host.Host._connect', new=connect))

    def _fake_vcpu_threads(self):
        # QEMU's vCPU threads, which Nova's fake libvirt has none of: real
        # processes (a green thread would be this test's own), one per
        # vCPU of each domain on each host, so that the kernel really sets
        # SCHED_DEADLINE on them and puts it back.  Privileged calls run
        # in-process (CI runs as root), as Nova's PrivsepFixture does.
        from rtmig_nova.enforce import privileged
        ctx = privileged.sys_admin_pctxt
        self.addCleanup(ctx.set_client_mode, ctx.client_mode)
        ctx.set_client_mode(False)
        # (host, uuid) -> [Popen] of the domain's latest QEMU; every fake
        # Domain object (a new one for each define: a reboot's new QEMU)
        # gets its own
        self.vcpu_procs = {}
        self._all_vcpu_procs = []

        def vcpu_threads(dom):
            procs = getattr(dom, '_rtmig_vcpu_procs', None)
            if procs is None:
                procs = [subprocess.Popen(['sleep', '300'])
                         for _ in range(int(dom._def['vcpu']['number']))]
                if self.pin_new_vcpus:      # as a vcpupin would
                    for p in procs:
                        os.sched_setaffinity(
                            p.pid, {min(os.sched_getaffinity(0))})
                dom._rtmig_vcpu_procs = procs
                self._all_vcpu_procs += procs
                self.vcpu_procs[(dom._connection.hostname,
                                 dom.UUIDString())] = procs
            return [p.pid for p in procs]
        self.useFixture(fixtures.MockPatch(
            'rtmig_nova.enforce.libvirt_controls.vcpu_threads',
            new=vcpu_threads))
        self.addCleanup(self._stop_vcpu_procs)

    def _stop_vcpu_procs(self):
        for p in self._all_vcpu_procs:
            p.kill()
            p.wait(10)

    def vcpu_pids(self, host, server):
        return [p.pid for p in self.vcpu_procs.get((host, server['id']), [])]

    def state_labels(self):
        """Labels of the reservation state files."""
        labels = []
        for name in sorted(os.listdir(self.state_dir)):
            if name.endswith('.json'):
                with open(os.path.join(self.state_dir, name)) as f:
                    labels.append(json.load(f)['label'])
        return labels

    def migration_state_files(self):
        return [label for label in self.state_labels()
                if label.startswith('nova-live-migration ')]
