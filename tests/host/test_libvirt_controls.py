"""Migration and CPU controls on a real TCG domain of the host's libvirtd."""

import glob
import os

import pytest

from rtmig_nova.enforce import libvirt_controls as lc
from tests.host import domains


pytestmark = pytest.mark.skipif(not domains.libvirtd_up(),
                                reason=domains.REQUIRES_LIBVIRTD)


@pytest.fixture
def dom():
    with domains.transient_domain() as d:
        yield d


def _cgroup_dir(dom):
    hits = glob.glob(f"/sys/fs/cgroup/cpu/machine/qemu-*-{dom.name()}"
                     ".libvirt-qemu")
    if not hits:       # cgroup v2
        hits = glob.glob(f"/sys/fs/cgroup/**/*{dom.name()}*.scope",
                         recursive=True)
    assert hits, "no cgroup for the domain"
    return hits[0]


def _read_quota(dom, sub):
    base = os.path.join(_cgroup_dir(dom), sub)
    v1 = os.path.join(base, "cpu.cfs_quota_us")
    if os.path.exists(v1):
        with open(v1) as f:
            return int(f.read())
    with open(os.path.join(base, "cpu.max")) as f:
        quota = f.read().split()[0]
    return -1 if quota == "max" else int(quota)


def test_migration_controls_round_trip(dom):
    before = lc.get_migration(dom)
    speed, downtime = lc.set_migration(dom, bandwidth=50.2 * lc.MIB,
                                       max_downtime=0.2499)
    assert speed == 51 * lc.MIB            # rounded up to whole MiB/s
    assert downtime == 0.249               # rounded down to whole ms
    assert lc.get_migration(dom) == (51 * lc.MIB, 0.249)
    # QEMU itself has the values (max-bandwidth bytes/s, downtime-limit ms).
    import json

    import libvirt_qemu
    out = json.loads(libvirt_qemu.qemuMonitorCommand(
        dom, '{"execute": "query-migrate-parameters"}', 0))["return"]
    assert out["max-bandwidth"] == 51 * lc.MIB
    assert out["downtime-limit"] == 249
    lc.set_migration(dom, *before)
    assert lc.get_migration(dom) == before


def test_cpu_controls_reach_the_cgroups_and_restore(dom):
    before = lc.get_cpu(dom)
    assert before["vcpu_quota"] == -1 or before["vcpu_quota"] > 0
    after = lc.set_cpu(dom, vcpu_period=100000, vcpu_quota=20000,
                       emulator_period=50000, emulator_quota=15000)
    assert after["vcpu_quota"] == 20000 and after["emulator_quota"] == 15000
    assert _read_quota(dom, "vcpu0") == 20000
    assert _read_quota(dom, "vcpu1") == 20000
    assert _read_quota(dom, "emulator") == 15000
    lc.set_cpu(dom, **before)
    assert lc.get_cpu(dom) == before
    assert _read_quota(dom, "vcpu0") == before["vcpu_quota"]


def test_threads_of_the_domain(dom):
    tids = lc.vcpu_threads(dom)
    assert len(tids) == 2
    names = dict(lc.qemu_threads(dom))
    assert all(names[t].startswith("CPU ") for t in tids)
    assert lc.qemu_pid(dom) in names


@pytest.mark.parametrize("kw, word", [
    ({"vcpu_quota": 10}, "vcpu_quota"),
    ({"vcpu_period": 10}, "vcpu_period"),
    ({"cpu_shares": 10}, "unknown CPU parameter"),
    ({"vcpu_quota": 1.5}, "integer"),
])
def test_bad_cpu_parameters_change_nothing(dom, kw, word):
    before = lc.get_cpu(dom)
    with pytest.raises(ValueError, match=word):
        lc.set_cpu(dom, **kw)
    assert lc.get_cpu(dom) == before


def test_unknown_domain_and_bad_migration_values(dom):
    conn = dom.connect()
    with pytest.raises(lc.LibvirtError, match="no domain 'nope'"):
        lc.lookup(conn, "nope")
    assert lc.lookup(conn, dom.name()).UUIDString() == dom.UUIDString()
    before = lc.get_migration(dom)
    for kw in ({"bandwidth": 0}, {"bandwidth": -5}, {"max_downtime": 0},
               {"max_downtime": 0.0004}):
        with pytest.raises(ValueError):
            lc.set_migration(dom, **kw)
    assert lc.get_migration(dom) == before
