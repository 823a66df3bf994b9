"""The scaffold of the live-migration functional tests: real Nova
in-process (API, conductor, scheduler, Placement) with computes on rtmig's
driver shim over Nova's fake libvirt, made to migrate as libvirt does."""

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import fixtures
from lxml import etree
from nova.tests.fixtures import libvirt as fakelibvirt
from oslo_messaging.notify import _impl_test

from rtmig_nova import conf
from rtmig_nova import planning
from rtmig_nova.enforce import deadline
from rtmig_nova.enforce import netshape
from rtmig_nova.enforce import send_queue
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


# A stand-in for QEMU's process: a loopback TCP connection to the first
# free port of libvirt's migration range, both ends its own.
_FAKE_QEMU = """
import socket, time
lo, hi = %d, %d
for port in range(lo, hi + 1):
    listener = socket.socket()
    try:
        listener.bind(("127.0.0.1", port))
        break
    except OSError:
        listener.close()
else:
    raise SystemExit("no free port in %%d-%%d" %% (lo, hi))
listener.listen(1)
stream = socket.create_connection(("127.0.0.1", port))
peer, _ = listener.accept()
print("connected", flush=True)
time.sleep(120)
"""


class RTLiveMigrationBase(base.RTMigNovaBase):
    """Computes on the shim over a libvirt-like fake: migrateToURI3 runs
    for ``migration_seconds`` then completes on the destination's fake
    (or fails, or is aborted); QEMU's migration thread and vCPU threads
    are real processes; the notifications are recorded."""
    WEIGHT_CLASSES = ['nova.scheduler.weights.all_weighers',
                      'rtmig_nova.scheduler.weights.RTHeadroomWeigher']

    # the RT flavor's rtmig: specs (a subclass may change them)
    rt_specs = RT_SPECS

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
        self.migrate_calls = []          # (uuid, params, flags)
        self.during = []                 # what the source held, mid-way
        self.downtimes = []              # ms, as libvirt was told
        self.speeds = []                 # MiB/s, as libvirt was told
        self.cpu = {}                    # uuid -> live CFS parameters
        self.fail_migration = False
        self.migration_seconds = 1.2     # how long a fake migration runs
        self.migrating = threading.Event()
        self._libvirt_like_fake()
        self.migration_thread = self._fake_migration_thread()

    def _fake_migration_thread(self):
        # QEMU's migration thread and stream, which Nova's fake libvirt has
        # none of: a real process's (a green thread would be this test's
        # own), so that the kernel really sets SCHED_DEADLINE on it and
        # the cap on its socket's unsent bytes, and puts them back.  It
        # "exists" while a job runs, as QEMU's does; its stream goes to a
        # port of libvirt's migration range on loopback.
        # (both ends in that process: this one's eventlet-patched sockets
        # do not keep an accepted connection open)
        proc = subprocess.Popen(
            [sys.executable, '-c', _FAKE_QEMU % netshape.MIGRATION_PORTS],
            stdout=subprocess.PIPE, text=True)
        self.addCleanup(proc.wait, 10)
        self.addCleanup(proc.kill)
        self.assertEqual('connected', proc.stdout.readline().strip())
        self.useFixture(fixtures.MockPatch(
            'rtmig_nova.enforce.libvirt_controls.qemu_pid',
            new=lambda dom: proc.pid))

        def qemu_threads(dom):
            running = dom._job_type == fakelibvirt.VIR_DOMAIN_JOB_UNBOUNDED
            return [(proc.pid, 'live_migration')] if running else []
        self.useFixture(fixtures.MockPatch(
            'rtmig_nova.enforce.libvirt_controls.qemu_threads',
            new=qemu_threads))

        def abort(dom):
            dom._job_type = fakelibvirt.VIR_DOMAIN_JOB_CANCELLED
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Domain.abortJob', abort))
        return proc.pid

    def stream_options(self):
        """[[fd, inode, unsent-bytes cap, pacing rate]] of the fake QEMU's
        migration stream (send_queue.read_caps)."""
        return send_queue.read_caps(self.migration_thread, None,
                                    list(netshape.MIGRATION_PORTS))

    def _libvirt_like_fake(self):
        # What real libvirt does and Nova's fake leaves out: migration
        # speed and downtime that read back, live CFS parameters, and a
        # live XML whose <cputune> shows them (Nova builds the
        # destination's definition from it).
        cpu_default = {'emulator_period': 100000, 'emulator_quota': -1,
                       'vcpu_period': 100000, 'vcpu_quota': -1}
        cpu = self.cpu
        xml_desc = fakelibvirt.Domain.XMLDesc

        def patch(name, fn):
            self.useFixture(fixtures.MonkeyPatch(
                'nova.tests.fixtures.libvirt.Domain.' + name, fn))

        def get_cpu(dom, flags=0):
            return dict(cpu.setdefault(dom.UUIDString(), dict(cpu_default)))

        def set_cpu(dom, params, flags=0):
            get_cpu(dom)
            cpu[dom.UUIDString()].update(params)

        def live_xml(dom, flags=0):
            root = etree.fromstring(xml_desc(dom, flags))
            params = get_cpu(dom)
            if params['emulator_quota'] != -1:
                tune = etree.SubElement(root, 'cputune')
                for name in ('emulator_period', 'emulator_quota'):
                    etree.SubElement(tune, name).text = str(params[name])
            return etree.tostring(root, encoding='unicode')

        patch('migrateToURI3', self._migrate)
        patch('migrateSetMaxDowntime',
              lambda dom, ms, flags=0: self.downtimes.append(ms))
        patch('migrateGetMaxDowntime', lambda dom, flags=0: 300)
        patch('migrateSetMaxSpeed',
              lambda dom, mib, flags=0: self.speeds.append(mib))
        patch('migrateGetMaxSpeed', lambda dom, flags=0: 8796093022207)
        patch('schedulerParametersFlags', get_cpu)
        patch('setSchedulerParametersFlags', set_cpu)
        patch('XMLDesc', live_xml)
        specs = rtflavor.flavor_properties(1, self.rt_specs)
        self.flavor = self.make_flavor('rt', 1, specs)
        self.request = rtflavor.parse_specs(self.rt_specs)

    def _migrate(self, domain, destination, params, flags):
        # Runs in Nova's migration thread: stay "running" long enough for
        # the monitor (every 0.5 s) to apply its downtime steps, then
        # complete on the destination's fake connection.
        uuid = etree.fromstring(params['destination_xml']).find(
            './uuid').text
        dest = destination.split('//')[1].split('/')[0]
        self.migrate_calls.append((uuid, dict(params), flags))
        self.during.append({'cpu': dict(self.cpu.get(uuid, {})),
                            'live_xml': domain.XMLDesc(0),
                            'state_files': self.migration_state_files()})
        domain._job_type = fakelibvirt.VIR_DOMAIN_JOB_UNBOUNDED
        self.migrating.set()
        end = time.monotonic() + self.migration_seconds
        while time.monotonic() < end and \
                domain._job_type != fakelibvirt.VIR_DOMAIN_JOB_CANCELLED:
            time.sleep(0.05)
        self.during[-1]['downtimes'] = list(self.downtimes)
        self.during[-1]['speeds'] = list(self.speeds)
        self.during[-1]['thread'] = deadline.get_attr(self.migration_thread)
        self.during[-1]['stream'] = self.stream_options()
        self.during[-1]['cpu_end'] = dict(self.cpu.get(uuid, {}))
        if CONF.rtmig.migration_interface:
            self.during[-1]['htb'] = netshape.show(
                CONF.rtmig.migration_interface)
        if domain._job_type == fakelibvirt.VIR_DOMAIN_JOB_CANCELLED:
            return                  # aborted: migrateToURI3 would raise
        if self.fail_migration:
            # as libvirt reports a migration QEMU gave up on: the monitor
            # sees the job failed and Nova rolls back
            domain.fail_job()
            return
        self.computes[dest].driver._host.get_connection().createXML(
            params['destination_xml'], 'fake')
        domain.complete_job()

    def dummy_interface(self):
        # an interface of this test's own, without an address: no traffic
        # (no dummy driver on these kernels: a veth pair)
        ifname = 'rtmigf%d' % (os.getpid() % 100000)
        subprocess.run(['ip', 'link', 'add', ifname, 'type', 'veth', 'peer',
                        'name', ifname + 'p'], check=True)
        self.addCleanup(subprocess.run, ['ip', 'link', 'del', ifname])
        subprocess.run(['ip', 'link', 'set', ifname, 'up'], check=True)
        return ifname

    def assert_unshaped(self, ifname, timeout=20.0):
        """No shaping left on ``ifname``, within ``timeout`` s: the
        reservation is released after the migration, in the compute's own
        green thread, which may not have run when the API reports the
        server migrated."""
        end = time.monotonic() + timeout
        while netshape.show(ifname) is not None and \
                time.monotonic() < end:
            time.sleep(0.1)
        self.assertIsNone(netshape.show(ifname))

    def notifications(self, event_type):
        return [msg['payload'] for _ctx, msg, _prio, _retry
                in _impl_test.NOTIFICATIONS
                if msg['event_type'] == event_type]

    def no_job(self, host, server):
        """The server's domain on ``host`` reports no job, as libvirt's
        does once an aborted migration has ended (the fake keeps the
        cancelled job, which Nova's monitor of the next migration would
        read before that migration's job starts)."""
        conn = self.computes[host].driver._host.get_connection()
        conn.lookupByUUIDString(server['id'])._job_type = \
            fakelibvirt.VIR_DOMAIN_JOB_NONE

    def notifications_all(self):
        """Event types of every notification sent, in order."""
        return [msg['event_type'] for _ctx, msg, _prio, _retry
                in _impl_test.NOTIFICATIONS]

    def boot_rt(self, host):
        return self._create_server(
            image_uuid=base.IMAGE_UUID, flavor_id=self.flavor,
            networks='none', host=host)

    def expected_plan(self, profile_ref=None):
        link = CONF.rtmig.link_capacity * CONF.rtmig.migration_link_share
        return planning.migration_plan(self.request, link, CONF.rtmig,
                                       profile_ref=profile_ref)

    def assert_vcpus_reserved(self, host, server):
        want = (5_000_000, 10_000_000, 10_000_000)      # RT_SPECS's 5ms/10ms
        pids = self.vcpu_pids(host, server)
        self.assertEqual(1, len(pids))
        flags = deadline.SCHED_FLAG_RECLAIM if self.request.reclaim else 0
        for pid in pids:
            attr = deadline.get_attr(pid)
            self.assertEqual(
                (deadline.SCHED_DEADLINE,) + want + (flags,),
                (attr.policy, attr.runtime_ns, attr.deadline_ns,
                 attr.period_ns, attr.flags))

    def assert_vcpus_free(self, host, server):
        for pid in self.vcpu_pids(host, server):
            self.assertEqual(deadline.SCHED_OTHER,
                             deadline.get_attr(pid).policy)
