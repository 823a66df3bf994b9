import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmig_nova.model import admission
from rtmig_nova.model.admission import Server, admit, fit_servers


def brute_force(loads, groups, bound):
    """Every assignment of servers to CPUs, checked directly."""
    flat = [(g, s) for g, grp in enumerate(groups) for s in grp]
    for cpus in itertools.product(range(len(loads)), repeat=len(flat)):
        load = list(loads)
        seen = set()
        ok = True
        for (g, s), c in zip(flat, cpus):
            if (g, c) in seen:
                ok = False
                break
            seen.add((g, c))
            load[c] += s.utilisation
        # Only the CPUs that get a new server must stay within the bound (one
        # already over it, say after the bound was lowered, is left alone).
        if ok and all(load[c] <= bound + 1e-12 for c in set(cpus)):
            return True
    return False


def check_placement(loads, groups, bound, place):
    load = list(loads)
    touched = set()
    for grp, cpus in zip(groups, place):
        assert len(set(cpus)) == len(cpus), "a group shares a CPU"
        for s, c in zip(grp, cpus):
            load[c] += s.utilisation
            touched.add(c)
    assert all(load[c] <= bound + 1e-9 for c in touched)


utils = st.integers(min_value=1, max_value=20).map(lambda k: k / 20)
servers = utils.map(lambda u: Server(u * 0.01, 0.01))


@settings(max_examples=300, deadline=None)
@given(loads=st.lists(st.integers(0, 19).map(lambda k: k / 20), min_size=1,
                      max_size=4),
       groups=st.lists(st.lists(servers, min_size=1, max_size=3),
                       min_size=1, max_size=3),
       bound=st.sampled_from([0.95, 1.0, 0.5]))
def test_fit_servers_is_exact(loads, groups, bound):
    if sum(len(g) for g in groups) > 6:
        groups = groups[:1]
    place = fit_servers(loads, groups, bound)
    assert (place is not None) == brute_force(loads, groups, bound)
    if place is not None:
        check_placement(loads, groups, bound, place)


@settings(max_examples=200, deadline=None)
@given(cap=st.integers(1, 1000), reserved=st.lists(st.integers(0, 300),
                                                   max_size=5),
       rate=st.integers(1, 1000))
def test_link_fit_matches_sum(cap, reserved, rate):
    assert admission.fits_link(cap, reserved, rate) == \
        (sum(reserved) + rate <= cap)
    assert admission.link_left(cap, reserved) == max(cap - sum(reserved), 0)


def test_rt_bound_from_kernel_settings():
    assert admission.rt_bound() == 0.95
    assert admission.rt_bound(-1, 1000000) == 1.0
    with pytest.raises(ValueError, match="sched_rt_runtime_us"):
        admission.rt_bound(2000000, 1000000)


def test_vcpus_of_one_vm_need_distinct_cpus():
    vm = [Server(0.004, 0.01)] * 3
    assert fit_servers([0, 0], [vm], 0.95) is None
    assert fit_servers([0, 0, 0], [vm], 0.95) is not None


def test_admit_reasons():
    vm = [Server(0.006, 0.01), Server(0.006, 0.01)]
    res = admit([0.5, 0.5], 0.95, 1e9, [8e8], [vm], rate=3e8)
    assert not res.admitted and res.reason.startswith("network:")
    res = admit([0.5, 0.5], 0.95, 1e9, [], [vm], rate=1e8)
    assert not res.admitted and "cpu:" in res.reason
    assert "left under the bound" in res.reason
    res = admit([0.5, 0.5, 0.5], 0.95, 1e9, [], [vm[:1] * 4])
    assert "distinct CPUs" in res.reason
    # Enough in total, but no CPU has 0.6 free: fragmentation.
    res = admit([0.5, 0.5], 0.95, 1e9, [], [[Server(0.006, 0.01)]])
    assert "fragmented" in res.reason
    res = admit([0.1, 0.2], 0.95, 1e9, [1e8], [vm], rate=1e8)
    assert res.admitted and sorted(res.placement[0]) == [0, 1]


@pytest.mark.parametrize("bad", [
    lambda: Server(0, 0.01), lambda: Server(0.02, 0.01),
    lambda: Server(float("nan"), 0.01), lambda: fit_servers([], [], 0.9),
    lambda: fit_servers([-0.1], [], 0.9), lambda: fit_servers([0], [], 1.5),
    lambda: admission.fits_link(0, [], 1), lambda: admission.fits_link(
        10, [-1], 1), lambda: admission.fits_link(10, [], 0),
])
def test_bad_input(bad):
    with pytest.raises(ValueError):
        bad()
