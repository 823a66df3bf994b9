"""rtmig_nova.compute.vm_reservation: the vCPU reservation's numbers and
the arrival watcher's bounds (applied on real threads: the functional
tests in tests/functional/test_rt_live_migration.py)."""

import time
import types

from rtmig_nova.compute import vm_reservation
from rtmig_nova.model import flavor

REQUEST = flavor.parse_specs({'rtmig:vcpu_reservation': '2ms/10ms',
                              'rtmig:migration_deadline': '30s',
                              'rtmig:max_downtime': '300ms'})
INSTANCE = types.SimpleNamespace(uuid='u1',
                                 flavor=types.SimpleNamespace(vcpus=2))


def test_a_vcpu_gets_its_runtime_every_period():
    assert vm_reservation.vcpu_deadline(REQUEST) == (
        2_000_000, 10_000_000, 10_000_000)


def test_the_flavor_says_whether_a_vcpu_reclaims():
    from rtmig_nova.enforce import deadline
    capped = vm_reservation.vcpu_steps([11, 12], REQUEST)
    assert [(s.tid, s.runtime_ns, s.period_ns, s.flags) for s in capped] \
        == [(11, 2_000_000, 10_000_000, 0), (12, 2_000_000, 10_000_000, 0)]
    reclaiming = flavor.parse_specs({'rtmig:vcpu_reservation': '2ms/10ms',
                                     'rtmig:vcpu_reclaim': 'true',
                                     'rtmig:migration_deadline': '30s',
                                     'rtmig:max_downtime': '300ms'})
    steps = vm_reservation.vcpu_steps([11], reclaiming)
    assert [s.flags for s in steps] == [deadline.SCHED_FLAG_RECLAIM]


def test_an_arrival_that_never_comes_is_reported_not_waited_for():
    vms = vm_reservation.RTVMReservations('h')
    vms.watch_arrival(INSTANCE, REQUEST, lambda: None, timeout=0.2)
    thread, _stop, box = vms._watchers['u1']
    thread.join(2)
    assert not thread.is_alive()
    assert 'did not appear here within 0.2 s' in str(box['error'])


def test_a_watcher_of_an_instance_gone_elsewhere_is_stopped(tmp_path):
    from rtmig_nova import conf
    conf.CONF.set_override('reservation_state_dir', str(tmp_path), 'rtmig')
    try:
        vms = vm_reservation.RTVMReservations('h')
        vms.watch_arrival(INSTANCE, REQUEST, lambda: None, timeout=60)
        thread = vms._watchers['u1'][0]
        t0 = time.monotonic()
        assert vms.reconcile(set()) == []
        thread.join(2)
        assert not thread.is_alive() and time.monotonic() - t0 < 2
        assert vms._watchers == {}
    finally:
        conf.CONF.clear_override('reservation_state_dir', 'rtmig')
