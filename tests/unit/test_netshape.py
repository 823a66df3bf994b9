"""Pure parts of rtmig_nova.enforce.netshape (no root needed)."""

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtmig_nova.enforce import netshape
from rtmig_nova.enforce.netshape import Match, ShapingPlan, TrafficClass


@given(st.integers(0, 65535), st.integers(0, 65535))
def test_port_blocks_cover_the_range_exactly(a, b):
    lo, hi = min(a, b), max(a, b)
    covered = []
    for value, mask in netshape._port_blocks(lo, hi):
        size = (~mask & 0xffff) + 1
        assert value & ~mask & 0xffff == 0          # aligned block
        covered.extend(range(value, value + size))
    assert covered == list(range(lo, hi + 1))


def test_port_blocks_of_libvirts_migration_range_is_one_block():
    assert netshape._port_blocks(*netshape.MIGRATION_PORTS) == [
        (49152, 0xffc0)]


def test_u32_keys_ipv4_ports_and_peer():
    sel = netshape._u32_selectors(Match(dst_ports=(5001, 5001),
                                        peer="10.1.0.0/16"))
    assert [eth for eth, _ in sel] == [0x0800, 0x0800]   # TCP, UDP
    assert sel[0][1] == ["0x05/0x0f+0", "0x00/0x1f+6", "0x00/0xff+7",
                         "0x0a/0xff+16", "0x01/0xff+17", "0x06/0xff+9",
                         "0x13/0xff+22", "0x89/0xff+23"]


def test_u32_keys_ipv6_peer_only():
    [(eth, keys)] = netshape._u32_selectors(Match(peer="fd99::/126"))
    assert eth == 0x86dd
    assert keys[0] == "0xfd/0xff+24" and keys[-1] == "0x00/0xfc+39"
    assert len(keys) == 16


def _plan(**kw):
    args = dict(ifname="eth1", link_rate=100e6,
                migration=TrafficClass("migration", 60e6,
                                       match=Match(dst_ports=(49152,
                                                              49215))))
    args.update(kw)
    return ShapingPlan(**args)


def test_oversubscription_names_the_limits():
    plan = _plan(reserved=[TrafficClass("a", 50e6, match=Match(peer="::1"))])
    with pytest.raises(ValueError, match="^eth1: migration 60 MB/s "
                       r"\+ reserved 50 MB/s exceed the link's 100 MB/s$"):
        netshape.validate(plan, check_host=False)
    with pytest.raises(ValueError, match=r"\+ best-effort 50 MB/s exceed"):
        netshape.validate(_plan(default_rate=50e6), check_host=False)


@pytest.mark.parametrize("kw, message", [
    (dict(ifname="a/b"), "invalid interface name"),
    (dict(ifname="x" * 16), "invalid interface name"),
    (dict(link_rate=True), "link_rate must be a number of bytes/s"),
    (dict(reserved=[TrafficClass("migration", 1e6,
                                 match=Match(peer="10.0.0.1"))]),
     "class names must be unique: migration"),
    (dict(reserved=[TrafficClass("vm", 1e6, ceil=200e6,
                                 match=Match(peer="10.0.0.1"))]),
     "ceil 200 MB/s exceeds the link's 100 MB/s"),
    (dict(reserved=[TrafficClass("vm", 1e6, match=Match(peer="nonsense"))]),
     "reserved 'vm' peer 'nonsense'"),
    (dict(netns="a/b"), "invalid network namespace name"),
    (dict(reserved=[TrafficClass("vm", 1e6, burst=1000,
                                 match=Match(peer="10.0.0.1"))]),
     "reserved 'vm' burst 1000 B outside 1600 B..10000000 B"),
    (dict(reserved=[TrafficClass("vm", 1e6, burst=2e7,
                                 match=Match(peer="10.0.0.1"))]),
     "burst 20000000 B outside"),
    (dict(reserved=[TrafficClass("vm", 1e6, burst="32K",
                                 match=Match(peer="10.0.0.1"))]),
     "burst must be a number of bytes, got '32K'"),
])
def test_invalid_plans(kw, message):
    with pytest.raises(ValueError) as exc:
        netshape.validate(_plan(**kw))
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_plan_round_trips_through_plain_data():
    plan = _plan(reserved=[TrafficClass("vm", 1e6, 2e6,
                                        Match((5001, 5002), "10.0.0.0/8"),
                                        burst=32000)],
                 netns="ns", default_rate=1e6)
    data = dataclasses.asdict(plan)
    # privsep's msgpack turns tuples into lists
    data["reserved"][0]["match"]["dst_ports"] = [5001, 5002]
    assert netshape._plan_from_dict(data) == plan


def test_best_effort_gets_the_rest_or_the_floor():
    assert netshape._default_rate(_plan()) == 40e6
    full = _plan(migration=TrafficClass("m", 100e6, match=Match(peer="::1")))
    assert netshape._default_rate(full) == 100e6 * 0.001


def test_a_class_bucket_is_its_burst_or_one_millisecond():
    assert netshape._class_params(1e6, 2e6)["burst"] == 1000 + 1600
    assert netshape._class_params(1e6, 2e6, 32000)["burst"] == 32000
    # the ceil's bucket stays 1 ms at the ceil: a burst leaves at the
    # link's pace, not at once
    assert netshape._class_params(1e6, 2e6, 32000)["cburst"] == 2000 + 1600
