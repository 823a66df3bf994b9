#!/usr/bin/env python3
"""What the rtmig live-migration extension adds to the start and the end of
a live migration on the source (run on demand as root, not in CI).

    python benchmarks/live_migration_overhead.py [--repeat 9]

Target (issue #9): at most 1 s added to the start (profile lookup, plan,
the destination's admission check, applying the source's reservation) and
at most 1 s to the end (releasing it).  Measured here, on real libvirt
(qemu:///system, a diskless TCG domain idling in its firmware):

``plan cold``      the first plan of a flavor: profile loaded, model run
``plan warm``      the same plan again (cached, as for every later one)
``admit``          the destination's ledger check for one more VM (a ledger
                   of 10 RT VMs; the database query Nova makes around it is
                   not included)
``dirty rate``     the ``dirty_rate`` profile source's wait for its 1 s
                   calculation when the migration starts 0.8 s after the
                   source's check started it (pre_live_migration's time)
``dirty rate now`` the same when the migration starts at once: the wait is
                   capped (DIRTY_RATE_MAX_WAIT) and the plan falls back to
                   the next source
``plan measured``  the plan from the measured coarse profile (not cached)
``reserve``        the source's reservation applied: migration speed and
                   downtime, the emulator cgroup's CFS quota, a state file
                   fsynced per step
``release``        all of it undone, the state file removed
``vm reserve``     the VM's own vCPU reservation (SCHED_DEADLINE on each
                   vCPU thread, state file), as spawn and the arrival
                   watcher apply it (off the migration's path on arrival:
                   the watcher runs during the transfer)
``vm release``     undone, as the source does when the migration ended

Medians of --repeat runs (``plan cold``: each run with the caches
cleared).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import types

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                os.pardir))

from rtmig_nova import conf  # noqa: E402
from rtmig_nova import planning  # noqa: E402
from rtmig_nova.model import flavor, ledger  # noqa: E402

CONF = conf.CONF
SPECS = {'rtmig:vcpu_reservation': '2ms/10ms', 'rtmig:net_rate': '10MB/s',
         'rtmig:migration_deadline': '60s', 'rtmig:max_downtime': '300ms'}


def _ms(samples):
    return statistics.median(samples) * 1000.0


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    CONF([], project="rtmig-nova")
    request = flavor.parse_specs(SPECS)
    link = CONF.rtmig.link_capacity * CONF.rtmig.migration_link_share
    cold, warm = [], []
    for _ in range(args.repeat):
        planning._load.cache_clear()
        planning._plan.cache_clear()
        cold.append(_timed(lambda: planning.migration_plan(
            request, link, CONF.rtmig))[0])
        warm.append(_timed(lambda: planning.migration_plan(
            request, link, CONF.rtmig))[0])
    pl = planning.migration_plan(request, link, CONF.rtmig)

    capacity = ledger.HostCapacity(cpus=8, bound=0.95, link=1.25e9,
                                   migration_link=link, migration_cpu=0.5,
                                   max_evacuation=0.0)
    need = planning.evacuation_need(request, link, CONF.rtmig)
    vms = [ledger.VMEntry(str(i), 2, 0.2, 1e7, need.time)
           for i in range(10)]
    admit = []
    for _ in range(args.repeat):
        admit.append(_timed(lambda: ledger.admit_vm(
            ledger.HostLedger(capacity, vms), 2, request, need))[0])

    import libvirt
    from nova.virt.libvirt import guest as nova_guest
    from rtmig_nova.compute import live_migration as lm
    from rtmig_nova.compute import profile_sources
    from tests.host import domains
    lm._notifier = lambda host: None           # no Nova transport here
    reserve, release = [], []
    with domains.transient_domain() as dom, \
            tempfile.TemporaryDirectory() as state_dir:
        conn = dom.connect()
        CONF.set_override("reservation_state_dir", state_dir, "rtmig")
        ext = lm.RTLiveMigration(types.SimpleNamespace(
            capacity=types.SimpleNamespace(migration_link=link)), "a")
        mp = lm.MigrationPlan.of(dom.UUIDString(), request, "flavor",
                                 request.profile, pl)
        instance = types.SimpleNamespace(uuid=dom.UUIDString())
        source = profile_sources.LibvirtDirtyRate()
        rate_wait, rate_now, measured_plan = [], [], []
        for _ in range(args.repeat):
            g = nova_guest.Guest(dom)
            source.prepare(instance, g)
            t, found = _timed(lambda: source.find(instance, request, g,
                                                  wait=True))
            assert found is None, "a 1 s calculation done at once?"
            rate_now.append(t)
            time.sleep(1.0)         # let that calculation end
            source.prepare(instance, g)
            time.sleep(0.8)
            t, found = _timed(lambda: source.find(instance, request, g,
                                                  wait=True))
            assert found is not None, "no dirty-rate result"
            rate_wait.append(t)
            measured_plan.append(_timed(lambda: planning.migration_plan_of(
                request, link, CONF.rtmig, found.profile))[0])
        from rtmig_nova.compute import vm_reservation
        from rtmig_nova.enforce import privileged
        privileged.sys_admin_pctxt.set_client_mode(False)   # root here
        vms = vm_reservation.RTVMReservations("a")
        vm_instance = types.SimpleNamespace(
            uuid=dom.UUIDString(), flavor=types.SimpleNamespace(
                vcpus=dom.info()[3]))
        vm_reserve, vm_release = [], []
        for _ in range(args.repeat):
            vm_reserve.append(_timed(lambda: vms.reserve(
                vm_instance, request, dom))[0])
            vm_release.append(_timed(lambda: vms.release(
                vm_instance.uuid))[0])
            assert os.listdir(state_dir) == []
        for _ in range(args.repeat):
            g = lm.RTGuest(nova_guest.Guest(dom), mp)
            t, held = _timed(lambda: ext.reserve_source(
                None, instance, mp, g, domains.URI, lambda uri: conn))
            assert held is not None
            reserve.append(t)
            release.append(_timed(lambda: ext.release(
                held, lambda uri: conn))[0])
            assert os.listdir(state_dir) == []
        # the migration's libvirt connection of its own (the shim's
        # _rtmig_migration_connection), opened, the domain looked up, closed
        own_conn = []
        for _ in range(args.repeat):
            def open_lookup_close():
                c = libvirt.open(domains.URI)
                c.lookupByUUIDString(dom.UUIDString())
                c.close()
            own_conn.append(_timed(open_lookup_close)[0])

    print("live-migration extension overhead (median of %d, ms)"
          % args.repeat)
    for label, samples in (("plan cold", cold), ("plan warm", warm),
                           ("admit", admit), ("dirty rate", rate_wait),
                           ("dirty rate now", rate_now),
                           ("plan measured", measured_plan),
                           ("reserve", reserve),
                           ("release", release),
                           ("vm reserve", vm_reserve),
                           ("vm release", vm_release),
                           ("own connection", own_conn)):
        print("  %-14s %8.3f" % (label, _ms(samples)))
    print("  start (plan warm + admit + reserve + own connection): %.1f ms;"
          " cold: %.1f ms"
          % (_ms(warm) + _ms(admit) + _ms(reserve) + _ms(own_conn),
             _ms(cold) + _ms(admit) + _ms(reserve) + _ms(own_conn)))
    print("  start with a dirty-rate measurement (dirty rate + plan "
          "measured + admit + reserve): %.1f ms; at once (dirty rate now "
          "+ plan warm + admit + reserve): %.1f ms"
          % (_ms(rate_wait) + _ms(measured_plan) + _ms(admit)
             + _ms(reserve),
             _ms(rate_now) + _ms(warm) + _ms(admit) + _ms(reserve)))
    print("  end (release): %.1f ms; with the VM's release on the "
          "source: %.1f ms" % (_ms(release), _ms(release) + _ms(vm_release)))


if __name__ == "__main__":
    main()
