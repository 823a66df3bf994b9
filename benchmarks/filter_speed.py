#!/usr/bin/env python3
"""Speed of RTReservationFilter against Nova's own NUMATopologyFilter on the
same 10,000 host states (run on demand, not in CI).

    python benchmarks/filter_speed.py [--hosts 10000] [--repeat 7]

Target (issue #8): at most 20 us per host on average, 10,000 hosts in at
most 0.2 s for one request.  Every host publishes a ledger of 10 real-time
VMs (distinct per host) and a 2-node NUMA topology of 8 CPUs per node.  The
RT request is a 2-vCPU flavor reserving 2 ms every 10 ms; the NUMA request
one guest NUMA node of 2 shared CPUs.  Both filters see the same host
states in one process, side by side.  ``cold``: the ledgers parsed for the
first time and the VM's migration planned (the first request after every
compute published anew); ``warm``: ledgers already parsed (they change only
when a compute reports a change).  Medians of --repeat runs; one core.
"""

import argparse
import os
import random
import statistics
import sys
import time

if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                os.pardir))

from nova import objects  # noqa: E402
from nova.scheduler.filters import numa_topology_filter  # noqa: E402
from nova.tests.unit.scheduler import fakes  # noqa: E402
from oslo_utils.fixture import uuidsentinel  # noqa: E402

from rtmig_nova import conf  # noqa: E402
from rtmig_nova import planning  # noqa: E402
from rtmig_nova.model import flavor, ledger  # noqa: E402
from rtmig_nova.scheduler import filters, ledgers  # noqa: E402


def numa_topology():
    cells = []
    for i in range(2):
        cpus = set(range(8 * i, 8 * i + 8))
        cells.append(objects.NUMACell(
            id=i, cpuset=cpus, pcpuset=set(), memory=65536, cpu_usage=4,
            memory_usage=8192, socket=0, pinned_cpus=set(), siblings=[],
            mempages=[objects.NUMAPagesTopology(size_kb=4, total=16777216,
                                                used=0)]))
    return objects.NUMATopology(cells=cells)


def host_states(n, rng):
    cap = ledger.HostCapacity(cpus=16, bound=0.95, link=1.25e9,
                              migration_link=5e8, migration_cpu=0.5)
    topo = numa_topology()
    hosts = []
    for i in range(n):
        vms = [ledger.VMEntry(f"{i}-{k}", rng.choice((1, 2, 4)),
                              rng.choice((0.1, 0.2, 0.3)), 1e6,
                              rng.uniform(5, 40)) for k in range(10)]
        hosts.append(fakes.FakeHostState(f"host{i}", f"node{i}", {
            "uuid": f"00000000-0000-0000-0000-{i:012d}",
            "stats": {ledgers.STATS_KEY:
                      ledger.HostLedger(cap, vms).to_json()},
            "numa_topology": topo, "pci_stats": None,
            "cpu_allocation_ratio": 16.0, "ram_allocation_ratio": 1.5,
            "allocation_candidates": [{"mappings": {}}]}))
    return hosts


def rt_spec():
    specs = flavor.flavor_properties(2, {
        "rtmig:vcpu_reservation": "2ms/10ms",
        "rtmig:migration_deadline": "60s", "rtmig:max_downtime": "300ms"})
    return objects.RequestSpec(
        instance_uuid=uuidsentinel.rt, numa_topology=None, pci_requests=None,
        flavor=objects.Flavor(vcpus=2, memory_mb=4096, extra_specs=specs),
        image=objects.ImageMeta(properties=objects.ImageMetaProps()),
        scheduler_hints={})


def numa_spec():
    topo = objects.InstanceNUMATopology(cells=[objects.InstanceNUMACell(
        id=0, cpuset={0, 1}, pcpuset=set(), memory=4096)])
    return objects.RequestSpec(
        instance_uuid=uuidsentinel.numa, numa_topology=topo,
        pci_requests=None,
        flavor=objects.Flavor(vcpus=2, memory_mb=4096, extra_specs={}),
        image=objects.ImageMeta(properties=objects.ImageMetaProps()),
        scheduler_hints={})


def timed(fn, repeat, before=None):
    times, out = [], None
    for _ in range(repeat):
        if before:
            before()
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def cold():
    ledgers._CACHE.clear()
    planning._need.cache_clear()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    objects.register_all()
    conf.CONF([], project="rtmig-bench", default_config_files=[])
    rng = random.Random(1)
    hosts = host_states(args.hosts, rng)
    rt, numa = filters.RTReservationFilter(), \
        numa_topology_filter.NUMATopologyFilter()
    rspec, nspec = rt_spec(), numa_spec()
    rt.run_filter_for_index(0)

    def run_rt():
        return list(rt.filter_all(hosts, rspec))

    def run_numa():
        return list(numa.filter_all(hosts, nspec))

    n = len(hosts)
    t_cold, out = timed(run_rt, args.repeat, before=cold)
    t_warm, out = timed(run_rt, args.repeat)
    t_numa, nout = timed(run_numa, args.repeat)
    print(f"hosts: {n}; passed: RT {len(out)}, NUMA {len(nout)}")
    for name, t in (("RTReservationFilter warm", t_warm),
                    ("RTReservationFilter cold", t_cold),
                    ("NUMATopologyFilter", t_numa)):
        print(f"{name:26s} {t * 1e3:8.1f} ms  {t / n * 1e6:6.2f} us/host  "
              f"({t / t_numa:.2f}x NUMATopologyFilter)")


if __name__ == "__main__":
    main()
