"""A host's RT capacity, its published ledger and the admission of one
more RT VM."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmig_nova.model import admission, flavor, ledger

CAP = ledger.HostCapacity(cpus=4, bound=0.95, link=125e6,
                          migration_link=50e6, migration_cpu=0.3)


def entry(uuid, vcpus, util, net=0.0, evac=10.0):
    return ledger.VMEntry(uuid, vcpus, util, net, evac)


def request(reservation="2ms/10ms", deadline="60s", **extra):
    return flavor.parse_specs({"rtmig:vcpu_reservation": reservation,
                               "rtmig:migration_deadline": deadline,
                               "rtmig:max_downtime": "300ms", **extra})


OK_NEED = ledger.EvacuationNeed(True, "", 5.0, 20e6, 0.1)


def test_inventories_reserve_the_migration_share():
    inv = CAP.inventories()
    cpu, net = inv[flavor.CPU_CLASS], inv[flavor.NET_CLASS]
    assert cpu["total"] == 4 * 950 and cpu["reserved"] == 300
    assert cpu["max_unit"] == 3800 - 300
    assert net["total"] == 1000000 and net["reserved"] == 400000
    assert net["max_unit"] == 600000


@pytest.mark.parametrize("kwargs", [
    dict(cpus=0), dict(bound=1.5), dict(link=0),
    dict(migration_link=2e8), dict(migration_cpu=0.99),
    dict(max_evacuation=-1)])
def test_capacity_bounds(kwargs):
    with pytest.raises(ValueError):
        ledger.HostCapacity(**{**CAP.to_dict(), **kwargs})


def test_ledger_round_trip_and_loads():
    led = ledger.HostLedger(CAP, [entry("a", 2, 0.6, 1e6, 3.0),
                                  entry("b", 1, 0.5, 0, math.inf)])
    back = ledger.HostLedger.from_json(led.to_json())
    assert back.vms == led.vms
    assert back.free_desc == led.free_desc
    assert sum(back.loads) == pytest.approx(0.6 * 2 + 0.5 + 0.3)
    assert back.evacuation_time == math.inf


@pytest.mark.parametrize("text", [
    None, "", "[]", '{"v": 2}', '{"v": 1, "capacity": {}, "vms": []}',
    '{"v": 1, "capacity": {"cpus": 2, "bound": 0.95, "link": 1e8, '
    '"migration_link": 1e7, "migration_cpu": 0.1}, "vms": [["x", 0, 0.5, '
    '0, 1]]}',
    "x" * (ledger.MAX_LEDGER_BYTES + 1),
    # Were RecursionError and OverflowError, past the scheduler's catch:
    '{"v": 1, "capacity": ' + "[" * 100000 + "]" * 100000 + "}",
    '{"v": 1, "capacity": {"cpus": 2, "bound": 0.95, "link": 1e8, '
    '"migration_link": 1e7, "migration_cpu": 0.1}, "vms": [["x", 1, 0.5, '
    '1' + "0" * 400 + ', 1]], "loads": []}',
    '{"v": 1, "capacity": {"cpus": 1, "bound": 0.95, "link": 1e8, '
    '"migration_link": 1e7, "migration_cpu": 0.1}, "vms": [], '
    '"loads": [1' + "0" * 400 + ']}',
    '{"v": 1, "capacity": {"cpus": 1, "bound": NaN, "link": 1e8, '
    '"migration_link": 1e7, "migration_cpu": 0.1}, "vms": [], "loads": []}',
    '{"v": 1, "capacity": {"cpus": 1, "bound": 0.95, "link": 1e8, '
    '"migration_link": 1e7, "migration_cpu": 0.1}, "vms": [["' + "u" * 5000
    + '", 0, 0.5, 0, 1]], "loads": []}'])
def test_malformed_ledgers_are_refused(text):
    with pytest.raises(ledger.LedgerError) as e:
        ledger.HostLedger.from_json(text)
    assert "\n" not in str(e.value) and len(str(e.value)) < 200


def test_fits_by_total_but_not_per_cpu():
    # 2 x 0.6 and the migration thread's 0.3: 2.1 of 3.8 CPUs used.  Three
    # more vCPUs of 0.5 are 1.5 of the 1.7 left, but need three CPUs with
    # 0.5 free: only two have it.
    led = ledger.HostLedger(CAP, [entry("a", 2, 0.6)])
    why = ledger.admit_vm(led, 3, request("5ms/10ms"), OK_NEED)
    assert why.startswith("cpu: 3 vCPUs of 0.5 CPU each need 3 CPUs")
    assert ledger.admit_vm(led, 2, request("5ms/10ms"), OK_NEED) == ""


def test_headroom_reasons():
    led = ledger.HostLedger(
        ledger.HostCapacity(**{**CAP.to_dict(), "max_evacuation": 20.0}),
        [entry("a", 1, 0.1, evac=16.0)])
    r = request()
    assert "over its bound 20 s" in ledger.admit_vm(led, 1, r, OK_NEED)
    assert ledger.admit_vm(led, 1, r, ledger.EvacuationNeed(
        True, "", 3.0, 1e6, 0.1)) == ""
    assert "keeps 0.3" in ledger.admit_vm(led, 1, r, ledger.EvacuationNeed(
        True, "", 1.0, 1e6, 0.5))
    assert "could not be migrated away" in ledger.admit_vm(
        led, 1, r, ledger.EvacuationNeed(False, "too slow", math.inf, 1e6,
                                         0.1))


def test_evacuation_need_from_the_model():
    from rtmig_nova.cli.profiles import load_profile
    profile = load_profile("builtin:default")      # 4 GiB video guest
    r = request()
    pl = ledger.migration_plan(profile, r, 500e6, {})
    need = ledger.need_of_plan(pl, r)
    assert need.feasible and 0 < need.time <= 60
    assert need.bandwidth == pl.bandwidth <= 500e6
    slow = ledger.need_of_plan(ledger.migration_plan(profile, r, 20e6, {}),
                               r)
    assert not slow.feasible and slow.time == math.inf and slow.reason


@settings(max_examples=200, deadline=None)
@given(loads=st.lists(st.floats(0, 0.95), min_size=1, max_size=6),
       count=st.integers(0, 7), util=st.floats(0.001, 0.95))
def test_group_fits_is_fit_servers_for_one_group(loads, count, util):
    bound = 0.95
    free = admission.free_desc(loads, bound)
    group = [admission.Server(util, 1.0)] * count
    exact = admission.fit_servers(loads, [group], bound) is not None
    assert admission.group_fits(free, count, util) == exact
