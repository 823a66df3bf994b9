"""The live-migration plan of a real-time instance and the Guest that runs
it (rtmig_nova.compute.live_migration), without a compute service."""

import types

import libvirt
import pytest

from rtmig_nova import conf
from rtmig_nova import planning
from rtmig_nova.compute import live_migration as lm
from rtmig_nova.compute import profile_sources
from rtmig_nova.model import DirtyProfile
from rtmig_nova.model import flavor

CONF = conf.CONF
SPECS = {'rtmig:vcpu_reservation': '2ms/10ms',
         'rtmig:migration_deadline': '60s', 'rtmig:max_downtime': '300ms'}


class FakeGuest:
    def __init__(self):
        self.calls = []
        self.job = types.SimpleNamespace(
            type=libvirt.VIR_DOMAIN_JOB_UNBOUNDED, downtime=0,
            memory_processed=0)

    def migrate(self, destination, **kwargs):
        self.calls.append(('migrate', destination, kwargs))

    def migrate_configure_max_downtime(self, ms):
        self.calls.append(('downtime', ms))

    def get_job_info(self):
        return self.job

    def name(self):
        return 'instance-00000001'


def _plan(bandwidth=40 * lm.MIB, downtime=0.25):
    return lm.MigrationPlan('u1', flavor.parse_specs(SPECS), 'flavor',
                            'builtin:default', bandwidth, downtime, 0.99,
                            30.0, 0.2)


def test_the_guest_migrates_with_the_plan():
    inner = FakeGuest()
    g = lm.RTGuest(inner, _plan())
    flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_AUTO_CONVERGE
             | libvirt.VIR_MIGRATE_POSTCOPY | libvirt.VIR_MIGRATE_PEER2PEER)
    g.migrate('qemu+tcp://b/system', migrate_uri='tcp://b', flags=flags,
              bandwidth=0, destination_xml='<domain/>', parallel=0)
    assert inner.calls[0] == ('downtime', 250)
    kind, dest, kwargs = inner.calls[1]
    assert (kind, dest, kwargs['bandwidth']) == (
        'migrate', 'qemu+tcp://b/system', 40)
    assert kwargs['flags'] == (libvirt.VIR_MIGRATE_LIVE
                               | libvirt.VIR_MIGRATE_PEER2PEER)
    assert kwargs['destination_xml'] == '<domain/>'
    # Nova's downtime steps do not move the limit; other calls pass on
    g.migrate_configure_max_downtime(500)
    assert [c for c in inner.calls if c[0] == 'downtime'] == [
        ('downtime', 250)]
    g.migrate_start_postcopy()
    assert g.name() == 'instance-00000001'


class FakeDomain:
    def __init__(self, fail=False):
        self.fail = fail
        self.migrated = []

    def UUIDString(self):
        return 'u1'

    def migrateSetMaxDowntime(self, ms, flags=0):
        self.downtime = ms

    def migrateToURI3(self, destination, params, flags):
        if self.fail:
            raise libvirt.libvirtError('migration failed')
        self.migrated.append((destination, params, flags))


class FakeConnection:
    def __init__(self, dom):
        self.dom = dom
        self.closed = False

    def lookupByUUIDString(self, uuid):
        if self.dom is None:
            raise libvirt.libvirtError('Domain not found')
        assert uuid == 'u1'
        return self.dom

    def close(self):
        self.closed = True


@pytest.mark.parametrize('fail', [False, True])
def test_the_guest_migrates_on_a_connection_of_its_own(fail):
    from nova.virt.libvirt import guest as libvirt_guest
    drivers = FakeDomain()
    inner = libvirt_guest.Guest(drivers)
    own = FakeConnection(FakeDomain(fail=fail))
    g = lm.RTGuest(inner, _plan(), lambda: own)
    call = lambda: g.migrate('qemu+tcp://b/system', flags=0,  # noqa: E731
                             destination_xml='<domain/>')
    if fail:
        with pytest.raises(libvirt.libvirtError):
            call()
    else:
        call()
        (dest, params, _flags), = own.dom.migrated
        assert (dest, params['bandwidth']) == ('qemu+tcp://b/system', 40)
    assert drivers.migrated == []       # never on the driver's connection
    assert drivers.downtime == 250      # set there, before the migration
    assert own.closed


def test_a_connection_without_the_domain_is_closed():
    from nova.virt.libvirt import guest as libvirt_guest
    own = FakeConnection(None)
    g = lm.RTGuest(libvirt_guest.Guest(FakeDomain()), _plan(), lambda: own)
    with pytest.raises(libvirt.libvirtError):
        g.migrate('qemu+tcp://b/system', flags=0)
    assert own.closed


def test_the_guest_reports_the_last_job():
    inner = FakeGuest()
    g = lm.RTGuest(inner, _plan())
    assert g.rtmig_stats() == {}
    g.get_job_info()
    assert g.rtmig_stats() == {'completed': False}
    inner.job = types.SimpleNamespace(
        type=libvirt.VIR_DOMAIN_JOB_COMPLETED, downtime=42,
        memory_processed=123456)
    g.get_job_info()
    assert g.rtmig_stats() == {'completed': True, 'downtime_s': 0.042,
                               'memory_bytes': 123456}


def test_libvirt_units_are_whole_and_at_least_one():
    assert _plan(bandwidth=0.2 * lm.MIB).bandwidth_mib == 1
    assert _plan(bandwidth=7.6 * lm.MIB).bandwidth_mib == 8
    assert _plan(downtime=0.0001).downtime_limit_ms == 1
    payload = _plan().payload()
    assert payload['deadline_s'] == 60.0
    assert payload['max_downtime_s'] == 0.3


def test_instance_profile_store(tmp_path):
    assert profile_sources.instance_profile('u1', str(tmp_path)) is None
    assert profile_sources.instance_profile(
        'u1', str(tmp_path / 'missing')) is None
    (tmp_path / 'u1.json.gz').write_bytes(b'')
    assert profile_sources.instance_profile('u1', str(tmp_path)) == str(
        tmp_path / 'u1.json.gz')
    (tmp_path / 'u1.json').write_text('{}')
    assert profile_sources.instance_profile('u1', str(tmp_path)) == str(
        tmp_path / 'u1.json')


def test_planning_from_a_file_and_its_errors(tmp_path):
    request = flavor.parse_specs(SPECS)
    path = tmp_path / 'p.json'
    DirtyProfile.from_aggregate_rate(2 ** 30, 1e6).save(path)
    light = planning.migration_plan(request, 500e6, CONF.rtmig,
                                    profile_ref=str(path))
    heavy = planning.migration_plan(request, 500e6, CONF.rtmig)
    assert light.feasible and heavy.feasible
    assert light.bandwidth < heavy.bandwidth
    # replaced on disk: planned again from the new file
    DirtyProfile.from_aggregate_rate(8 * 2 ** 30, 2e9).save(path)
    again = planning.migration_plan(request, 500e6, CONF.rtmig,
                                    profile_ref=str(path))
    assert not again.feasible and again.reason
    path.write_text('not json')
    with pytest.raises(planning.PlanningError, match='p'):
        planning.migration_plan(request, 500e6, CONF.rtmig,
                                profile_ref=str(path))
    with pytest.raises(planning.PlanningError):
        planning.migration_plan(request, 500e6, CONF.rtmig,
                                profile_ref=str(tmp_path / 'gone.json'))


NOVA_NS = 'http://openstack.org/xmlns/libvirt/nova/1.1'
LIVE_XML = f"""<domain type='kvm' xmlns:nova='{NOVA_NS}'>
  <uuid>u1</uuid>
  <metadata><nova:instance><nova:name>s</nova:name></nova:instance></metadata>
  <cputune>
    <shares>1024</shares>
    <emulator_period>100000</emulator_period>
    <emulator_quota>5000</emulator_quota>
  </cputune>
</domain>"""


def test_cputune_restored_in_the_destination_xml():
    names = ('emulator_period', 'emulator_quota')
    assert lm.cputune_values(LIVE_XML, names) == {
        'emulator_period': '100000', 'emulator_quota': '5000'}
    # before the reservation there was no quota: the elements go
    out = lm.with_cputune(LIVE_XML, {'emulator_period': None,
                                     'emulator_quota': None})
    assert 'emulator_' not in out and '<shares>1024</shares>' in out
    assert 'nova:instance' in out          # namespace prefixes kept
    # a quota the VM had of its own comes back as it was
    out = lm.with_cputune(LIVE_XML, {'emulator_period': '20000',
                                     'emulator_quota': '8000'})
    assert lm.cputune_values(out, names) == {
        'emulator_period': '20000', 'emulator_quota': '8000'}
    # no <cputune> left empty; one made when needed
    bare = "<domain><uuid>u1</uuid><cputune><emulator_quota>5000" \
           "</emulator_quota></cputune></domain>"
    assert '<cputune' not in lm.with_cputune(bare, {'emulator_quota': None})
    made = lm.with_cputune("<domain/>", {'emulator_quota': '7000'})
    assert lm.cputune_values(made, ['emulator_quota']) == {
        'emulator_quota': '7000'}


def test_the_guest_rewrites_the_destination_xml():
    inner = FakeGuest()
    inner.get_xml_desc = lambda: LIVE_XML.replace(
        '<emulator_period>100000</emulator_period>\n    '
        '<emulator_quota>5000</emulator_quota>\n', '')
    g = lm.RTGuest(inner, _plan())
    g.remember_cputune({'emulator_period': 100000, 'emulator_quota': 5000})
    g.migrate('qemu+tcp://b/system', destination_xml=LIVE_XML)
    xml = inner.calls[-1][2]['destination_xml']
    assert 'emulator_quota' not in xml and 'emulator_period' not in xml


def test_one_function_turns_a_plan_into_steps():
    from rtmig_nova.enforce import reservation
    from rtmig_nova.model import sizing
    cpu = sizing.CpuReservation(0.25, 2500000, 10000000, 10000000, 25000,
                                100000)
    params = reservation.migration_thread_cpu(cpu)
    assert params == {'emulator_period': 100000, 'emulator_quota': 25000}
    steps = reservation.migration_steps('qemu:///system', 'u1', 8e6, 0.05,
                                        cpu=params)
    assert [s.kind for s in steps] == ['migration', 'cpu']
    assert (steps[0].bandwidth, steps[0].max_downtime) == (8e6, 0.05)
    steps = reservation.migration_steps(
        'qemu:///system', 'u1', 8e6, 0.05, deadline=(1, 2, 3),
        threads=[10, 11])
    assert [(s.kind, getattr(s, 'tid', None)) for s in steps] == [
        ('migration', None), ('deadline', 10), ('deadline', 11)]


class _MigrateData(dict):
    # Nova's LibvirtLiveMigrateData answers "in" and attributes
    def __getattr__(self, name):
        return self[name]


def test_the_migration_stream_goes_to_the_destination_address():
    assert lm.migration_peer('192.0.2.7') == '192.0.2.7'
    assert lm.migration_peer('2001:db8::7') == '2001:db8::7'
    assert lm.migration_peer('localhost') in ('127.0.0.1', '::1')
    assert lm.migration_peer('no-such-host.invalid') is None
    assert lm.migration_peer(None) is None
    # the destination's [libvirt] live_migration_inbound_addr wins
    data = _MigrateData(target_connect_addr='198.51.100.3')
    assert lm.migration_peer('host-b', data) == '198.51.100.3'
    assert lm.migration_peer('192.0.2.7', _MigrateData(
        target_connect_addr=None)) == '192.0.2.7'


def test_one_shaped_migration_at_a_time(monkeypatch):
    monkeypatch.setattr(lm, '_notifier', lambda host: None)
    ext = lm.RTLiveMigration(types.SimpleNamespace(), 'host-a')
    a, b = types.SimpleNamespace(uuid='a'), types.SimpleNamespace(uuid='b')
    assert ext._take_interface(a)
    assert ext._take_interface(a)           # its own again
    assert not ext._take_interface(b)
    ext.release([], None, a)
    assert ext._take_interface(b)
