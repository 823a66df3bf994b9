"""HTB bandwidth reservations on a veth pair between two test namespaces.

All traffic stays between 10.199.0.1/24 (namespace a) and 10.199.0.2/24
(namespace b), or fd99::1/fd99::2, on a veth pair in namespaces this module
creates and deletes; the root namespace's interfaces are never touched.
Rates are bytes/s.
"""

import json
import os
import re
import subprocess
import sys

import pytest
from pyroute2 import NetNS

from rtmig_nova.enforce import netshape
from rtmig_nova.enforce.netshape import Match, ShapingPlan, TrafficClass
from tests.host import domains

PREFIX = "rtmigtest-"
NS_A = f"{PREFIX}a-{os.getpid()}"
NS_B = f"{PREFIX}b-{os.getpid()}"
IF_A, IF_B = "rtm-a", "rtm-b"
IP_A, IP_B = "10.199.0.1", "10.199.0.2"
IP6_A, IP6_B = "fd99::1", "fd99::2"
FLOWS = os.path.join(os.path.dirname(__file__), "_flows.py")

LINK = 12.5e6           # 100 Mbit/s
MIGRATION = 2.5e6       # 20 Mbit/s
RESERVED = 5e6          # 40 Mbit/s
BEST_EFFORT_PORT = 7000

pytestmark = pytest.mark.timeout(60)


def _ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True,
                   timeout=10)


def _stale_namespaces():
    """Our namespaces left by a crashed run (owner pid gone), and ours."""
    try:
        names = os.listdir("/var/run/netns")
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        m = re.fullmatch(re.escape(PREFIX) + r"[ab]-(\d+)", name)
        if m and (int(m.group(1)) == os.getpid()
                  or not domains.alive(int(m.group(1)))):
            out.append(name)
    return out


def _delete_namespaces(names):
    for name in names:
        subprocess.run(["ip", "netns", "del", name], capture_output=True,
                       timeout=10)


@pytest.fixture(scope="module")
def veth():
    _delete_namespaces(_stale_namespaces())
    try:
        _ip("netns", "add", NS_A)
        _ip("netns", "add", NS_B)
        _ip("-n", NS_A, "link", "add", IF_A, "type", "veth",
            "peer", "name", IF_B, "netns", NS_B)
        for ns, ifname, ip4, ip6 in ((NS_A, IF_A, IP_A, IP6_A),
                                     (NS_B, IF_B, IP_B, IP6_B)):
            _ip("-n", ns, "addr", "add", f"{ip4}/24", "dev", ifname)
            _ip("-n", ns, "addr", "add", f"{ip6}/64", "dev", ifname,
                "nodad")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", ifname, "up")
        yield
    finally:
        _delete_namespaces([NS_A, NS_B])


@pytest.fixture
def clean(veth):
    netshape.remove(IF_A, NS_A)
    yield
    netshape.remove(IF_A, NS_A)


def _plan(**kw):
    args = dict(
        ifname=IF_A, netns=NS_A, link_rate=LINK,
        migration=TrafficClass("migration", MIGRATION,
                               match=Match(dst_ports=(49152, 49215))),
        reserved=[TrafficClass("vm-rt", RESERVED,
                               match=Match(dst_ports=(5001, 5001)))])
    args.update(kw)
    return ShapingPlan(**args)


def _root_qdiscs():
    """``[(kind, handle)]`` of the root qdiscs of IF_A (pyroute2 view)."""
    with NetNS(NS_A, flags=0) as ipr:
        index = ipr.link_lookup(ifname=IF_A)[0]
        return [(m.get_attr("TCA_KIND"), m["handle"])
                for m in ipr.get_qdiscs(index)
                if m["parent"] == netshape.TC_H_ROOT]


def _mtu():
    with NetNS(NS_A, flags=0) as ipr:
        return ipr.get_links(ifname=IF_A)[0].get_attr("IFLA_MTU")


def _netns_exec(ns, *argv, timeout=10):
    return subprocess.run(["ip", "netns", "exec", ns, *argv],
                          capture_output=True, text=True, check=True,
                          timeout=timeout).stdout


_TC_UNITS = {"bit": 1, "Kbit": 1e3, "Mbit": 1e6, "Gbit": 1e9,
             "Tbit": 1e12}


def _tc_classes():
    """``{classid: (rate, ceil)}`` in bytes/s, from ``tc -s class show``."""
    out = _netns_exec(NS_A, "tc", "-s", "class", "show", "dev", IF_A)
    found = {}
    for m in re.finditer(r"class htb (\S+) .*?rate ([\d.]+)(\w+) "
                         r"ceil ([\d.]+)(\w+)", out):
        found[m.group(1)] = (float(m.group(2)) * _TC_UNITS[m.group(3)] / 8,
                             float(m.group(4)) * _TC_UNITS[m.group(5)] / 8)
    return found


def _by_role(rows):
    return {(r["role"], r["index"]): r for r in rows}


# -- (1) the hierarchy ------------------------------------------------------

def test_apply_shows_configured_rates(clean):
    result = netshape.apply_plan(_plan())
    assert result["filters"] == 8   # 2 classes x TCP/UDP x IPv4/IPv6
    rows = netshape.show(IF_A, NS_A)
    got = {(r["role"], r["index"]): (r["classid"], r["rate"], r["ceil"])
           for r in rows}
    assert got == {
        ("link", None): ("1:1", LINK, LINK),
        ("migration", None): ("1:10", MIGRATION, MIGRATION),
        ("reserved", 0): ("1:20", RESERVED, RESERVED),
        ("default", None): ("1:fffe", LINK - MIGRATION - RESERVED, LINK),
    }
    # apply's own table names the classes
    names = {r["classid"]: r["name"] for r in result["classes"]}
    assert names["1:10"] == "migration" and names["1:20"] == "vm-rt"
    # iproute2's view agrees
    tc = _tc_classes()
    assert set(tc) == {"1:1", "1:10", "1:20", "1:fffe"}
    for classid, rate, ceil in got.values():
        assert tc[classid] == pytest.approx((rate, ceil), rel=1e-3)
    assert _root_qdiscs() == [("htb", netshape.ROOT_HANDLE)]


def test_apply_is_idempotent_and_replaces_our_own(clean):
    netshape.apply_plan(_plan())
    netshape.apply_plan(_plan())
    bigger = _plan(reserved=[TrafficClass("vm-rt", 6e6,
                                          match=Match(dst_ports=(5001,
                                                                 5001))),
                             TrafficClass("vm-2", 1e6, ceil=LINK,
                                          match=Match(peer="10.199.0.0/24"))])
    netshape.apply_plan(bigger)
    rows = _by_role(netshape.show(IF_A, NS_A))
    assert rows[("reserved", 0)]["rate"] == 6e6
    assert (rows[("reserved", 1)]["rate"],
            rows[("reserved", 1)]["ceil"]) == (1e6, LINK)
    assert rows[("default", None)]["rate"] == LINK - MIGRATION - 7e6
    assert _root_qdiscs() == [("htb", netshape.ROOT_HANDLE)]


# -- (2) the reservations hold under load ----------------------------------

def _run_flows(ports, duration=3.0):
    receiver = subprocess.Popen(
        ["ip", "netns", "exec", NS_B, sys.executable, FLOWS,
         "--deadline", str(duration + 6), "recv", IP_B, *map(str, ports)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout.readline().strip() == "READY"
        sent = json.loads(_netns_exec(
            NS_A, sys.executable, FLOWS, "--deadline", str(duration + 4),
            "send", IP_B, str(duration), *map(str, ports),
            timeout=duration + 8))
        out, err = receiver.communicate(timeout=duration + 8)
        assert receiver.returncode == 0, err
        return sent, json.loads(out)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait(5)


def test_reservations_hold_under_load(clean):
    netshape.apply_plan(_plan())
    before = _by_role(netshape.show(IF_A, NS_A))
    mig_port, rt_port = 49152, 5001
    sent, got = _run_flows([mig_port, rt_port, BEST_EFFORT_PORT])
    after = _by_role(netshape.show(IF_A, NS_A))
    assert all("error" not in row for row in sent.values()), sent
    mtu = _mtu()
    l2 = {}
    for port in (mig_port, rt_port, BEST_EFFORT_PORT):
        row = got[str(port)]
        assert "goodput" in row, got
        # HTB counts whole frames: (MTU + 14 Ethernet bytes) per MSS of
        # payload (MSS excludes the TCP options, e.g. timestamps)
        l2[port] = row["goodput"] * (mtu + 14) / row["mss"]
    print(f"\nmeasured (bytes/s): goodput "
          f"{ {p: round(got[str(p)]['goodput']) for p in l2} }, "
          f"L2 { {p: round(v) for p, v in l2.items()} }")
    # the migration gets its 2.5 MB/s (it is capped there: ceil = rate)
    assert l2[mig_port] == pytest.approx(MIGRATION, rel=0.10)
    # the real-time VM flow gets at least its reservation despite the
    # best-effort flow that would take the whole link
    assert l2[rt_port] >= RESERVED * 0.90
    # best effort gets the rest, and the link cap holds
    assert l2[BEST_EFFORT_PORT] >= (LINK - MIGRATION - RESERVED) * 0.5
    assert sum(l2.values()) <= LINK * 1.05
    # the class counters saw the bytes: L2 bytes >= payload bytes
    for role, port in ((("migration", None), mig_port),
                       (("reserved", 0), rt_port),
                       (("default", None), BEST_EFFORT_PORT)):
        counted = after[role]["bytes"] - before[role]["bytes"]
        payload = got[str(port)]["bytes"]
        expect = payload * (mtu + 14) / got[str(port)]["mss"]
        assert counted == pytest.approx(expect, rel=0.03), (role, port)


def _packets():
    return {k: v["packets"] for k, v in
            _by_role(netshape.show(IF_A, NS_A)).items()}


@pytest.mark.parametrize("dst, port, role", [
    (IP_B, 49200, ("migration", None)),
    (IP6_B, 49152, ("migration", None)),
    (IP_B, 5001, ("reserved", 0)),
    (IP6_B, 5001, ("reserved", 0)),
    (IP6_B, 7000, ("reserved", 1)),     # by peer, IPv6
    (IP_B, 7000, ("default", None)),
    (IP_B, 49216, ("default", None)),   # just past the migration range
])
def test_classification(clean, dst, port, role):
    netshape.apply_plan(_plan(reserved=[
        TrafficClass("vm-rt", RESERVED, match=Match(dst_ports=(5001, 5001))),
        TrafficClass("vm-v6", 1e6, match=Match(peer=IP6_B + "/128"))]))
    before = _packets()
    count = 30
    _netns_exec(NS_A, sys.executable, FLOWS, "udp", dst, str(port),
                str(count))
    after = _packets()
    delta = {k: after[k] - before[k] for k in after}
    assert delta[role] >= count, delta
    for other in delta:
        if other not in (role, ("link", None)):
            assert delta[other] < count, delta     # at most stray ND/ARP


# -- (3) removal ------------------------------------------------------------

def test_remove_leaves_no_htb(clean):
    netshape.apply_plan(_plan())
    assert netshape.remove(IF_A, NS_A) is True
    assert netshape.show(IF_A, NS_A) is None
    assert all(kind != "htb" for kind, _ in _root_qdiscs())
    out = _netns_exec(NS_A, "tc", "qdisc", "show", "dev", IF_A)
    assert "htb" not in out
    assert netshape.remove(IF_A, NS_A) is False      # idempotent


# -- (4) validation ---------------------------------------------------------

def _one_line(exc):
    text = str(exc.value)
    assert text and "\n" not in text
    return text


@pytest.mark.parametrize("plan, message", [
    (_plan(migration=TrafficClass("migration", 60e6,
                                  match=Match(dst_ports=(49152, 49215))),
           reserved=[TrafficClass("a", 30e6, match=Match(peer="10.0.0.1")),
                     TrafficClass("b", 20e6, match=Match(peer="10.0.0.2"))],
           link_rate=100e6),
     "migration 60 MB/s + reserved 50 MB/s exceed the link's 100 MB/s"),
    (_plan(migration=TrafficClass("migration", 10e6,
                                  match=Match(dst_ports=(49152, 49215)))),
     "migration 10 MB/s + reserved 5 MB/s exceed the link's 12.5 MB/s"),
    (_plan(migration=TrafficClass("migration", 0,
                                  match=Match(dst_ports=(1, 2)))),
     "migration 'migration' rate must be > 0 bytes/s"),
    (_plan(reserved=[TrafficClass("vm", -5, match=Match(peer="10.0.0.1"))]),
     "reserved 'vm' rate must be > 0 bytes/s"),
    (_plan(link_rate=float("nan")), "link_rate must be > 0 bytes/s"),
    (_plan(reserved=[TrafficClass("vm", 1e6, ceil=0.5e6,
                                  match=Match(peer="10.0.0.1"))]),
     "ceil 500 kB/s is below its rate 1 MB/s"),
    (_plan(reserved=[TrafficClass("vm", 1e6,
                                  match=Match(dst_ports=(5002, 5001)))]),
     "lo > hi"),
    (_plan(reserved=[TrafficClass("vm", 1e6,
                                  match=Match(dst_ports=(1, 70000)))]),
     "ports are integers 0..65535"),
    (_plan(reserved=[TrafficClass("vm", 1e6, match=Match())]),
     "matches no packets"),
    (_plan(reserved=[TrafficClass("vm", 1e6,
                                  match=Match(peer="10.199.0.1/24"))]),
     "has host bits set"),
    (_plan(ifname="rtmig-nosuch0", netns=None),
     "unknown interface 'rtmig-nosuch0'"),
    (_plan(netns=PREFIX + "nosuch"), "unknown network namespace"),
    (_plan(ifname="nosuch0"),
     f"unknown interface 'nosuch0' in network namespace '{NS_A}'"),
])
def test_validation_errors_change_nothing(clean, plan, message):
    netshape.apply_plan(_plan())
    before = (netshape.show(IF_A, NS_A), _root_qdiscs())
    with pytest.raises(ValueError) as exc:
        netshape.apply_plan(plan)
    assert message in _one_line(exc)
    after = (netshape.show(IF_A, NS_A), _root_qdiscs())
    strip = [{k: v for k, v in r.items() if k not in ("bytes", "packets")}
             for r in before[0]]
    assert strip == [{k: v for k, v in r.items()
                      if k not in ("bytes", "packets")} for r in after[0]]
    assert before[1] == after[1]


def test_validation_without_existing_shaping_adds_nothing(clean):
    with pytest.raises(ValueError):
        netshape.apply_plan(_plan(link_rate=1e6))
    assert netshape.show(IF_A, NS_A) is None
    assert all(kind != "htb" for kind, _ in _root_qdiscs())


# -- (5) all or nothing -----------------------------------------------------

@pytest.mark.parametrize("existing", [False, True])
@pytest.mark.parametrize("target, fail_at", [("_add_filter", 3),
                                             ("_add_class", 2)])
def test_failure_midway_leaves_nothing(clean, monkeypatch, existing,
                                       target, fail_at):
    if existing:
        netshape.apply_plan(_plan())
    real = getattr(netshape, target)
    calls = []

    def flaky(*args, **kw):
        calls.append(args)
        if len(calls) == fail_at:
            raise OSError(105, "injected failure")
        return real(*args, **kw)

    monkeypatch.setattr(netshape, target, flaky)
    with pytest.raises(netshape.NetShapeError) as exc:
        netshape.apply_plan(_plan())
    text = _one_line(exc)
    assert "injected failure" in text and "removed what was added" in text
    assert len(calls) == fail_at
    assert netshape.show(IF_A, NS_A) is None
    assert all(kind != "htb" for kind, _ in _root_qdiscs())


# -- (6) foreign qdiscs -----------------------------------------------------

@pytest.mark.parametrize("kind, handle, options", [
    ("tbf", 0x50000, dict(rate=1250000, burst=16000, latency=50)),
    ("htb", 0x10000, dict(default=0x10)),   # someone else's htb 1:
])
def test_refuses_foreign_root_qdisc(clean, kind, handle, options):
    with NetNS(NS_A, flags=0) as ipr:
        index = ipr.link_lookup(ifname=IF_A)[0]
        ipr.tc("add", kind, index, handle, **options)
    try:
        before = _root_qdiscs()
        assert before == [(kind, handle)]
        with pytest.raises(netshape.ForeignQdiscError) as exc:
            netshape.apply_plan(_plan())
        assert f"root qdisc {kind} {handle >> 16:x}:0" in _one_line(exc)
        assert _root_qdiscs() == before
        assert netshape.show(IF_A, NS_A) is None
        assert netshape.remove(IF_A, NS_A) is False
        assert _root_qdiscs() == before
    finally:
        with NetNS(NS_A, flags=0) as ipr:
            index = ipr.link_lookup(ifname=IF_A)[0]
            ipr.tc("del", index=index, handle=handle,
                   parent=netshape.TC_H_ROOT)


def test_rates_above_32_bits(clean):
    # 100 Gbit/s: the kernel's 32-bit rate fields overflow, 64-bit ones used
    big = _plan(link_rate=12.5e9, reserved=[],
                migration=TrafficClass("migration", 5e9,
                                       match=Match(dst_ports=(49152, 49215))))
    netshape.apply_plan(big)
    rows = _by_role(netshape.show(IF_A, NS_A))
    assert (rows[("link", None)]["rate"], rows[("migration", None)]["rate"],
            rows[("default", None)]["rate"]) == (12.5e9, 5e9, 7.5e9)
    tc = _tc_classes()
    assert tc["1:1"] == pytest.approx((12.5e9, 12.5e9), rel=1e-3)


def test_a_bursty_class_gets_its_bucket(clean):
    # a video frame's train of datagrams passes at once, not at the rate
    netshape.apply_plan(_plan(reserved=[TrafficClass(
        "vm-rt", RESERVED, ceil=LINK, burst=48000,
        match=Match(dst_ports=(5001, 5001)))]))
    out = _netns_exec(NS_A, "tc", "class", "show", "dev", IF_A)
    # tc prints sizes within 16 bytes of a KiB multiple as "NKb"
    bursts = {cls: float(n) * {"b": 1, "Kb": 1024, "Mb": 1 << 20}[unit]
              for cls, n, unit in re.findall(
                  r"class htb (\S+) .*? burst ([\d.]+)(b|Kb|Mb)", out)}
    assert bursts["1:20"] == pytest.approx(48000, abs=16)
    assert bursts["1:10"] == pytest.approx(MIGRATION // 1000 + 1600, abs=16)


# -- (6) a running migration's rate raised in place -------------------------

def test_set_rates_changes_the_migration_class_in_place(clean):
    from rtmig_nova.enforce import reservation
    netshape.apply_plan(_plan())
    filters = _netns_exec(NS_A, "tc", "filter", "show", "dev", IF_A)
    raised = _plan(migration=TrafficClass(
        "migration", 2 * MIGRATION, match=Match(dst_ports=(49152, 49215))))
    want = netshape.migration_rates(raised)
    assert want["default"][0] == LINK - 2 * MIGRATION - RESERVED
    step = reservation.ShapingRateStep(IF_A, NS_A, want)
    record = step.prepare()
    assert record["rates"] == {"migration": [MIGRATION, MIGRATION],
                               "default": [LINK - MIGRATION - RESERVED, LINK]}
    step.apply()
    tc = _tc_classes()
    assert tc["1:10"] == pytest.approx((2 * MIGRATION,) * 2, rel=1e-3)
    assert tc["1:fffe"] == pytest.approx(tuple(want["default"]), rel=1e-3)
    assert tc["1:20"] == pytest.approx((RESERVED, RESERVED), rel=1e-3)
    # the same hierarchy, filters and all: changed, not rebuilt
    assert _netns_exec(NS_A, "tc", "filter", "show", "dev", IF_A) == filters
    reservation.ShapingRateStep.undo(record)
    tc = _tc_classes()
    assert tc["1:10"] == pytest.approx((MIGRATION, MIGRATION), rel=1e-3)
    assert tc["1:fffe"] == pytest.approx((LINK - MIGRATION - RESERVED, LINK),
                                         rel=1e-3)
    # nothing of ours there: nothing changed, and an undo is a no-op
    netshape.remove(IF_A, NS_A)
    assert netshape.set_rates(IF_A, NS_A, want) is None
    reservation.ShapingRateStep.undo(record)
    with pytest.raises(reservation.ReservationError, match="no rtmig HTB"):
        step.prepare()
    with pytest.raises(ValueError, match="unknown class"):
        netshape.set_rates(IF_A, NS_A, {"link": [1, 1]})
