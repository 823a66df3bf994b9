"""Reservations on real parts: a TCG domain of the host's libvirtd, a thread
of a helper process, an interface in a test namespace.  Applying changes
them all; releasing, a failure at any step, or recovery after a crash puts
every one of them back exactly."""

import os

import pytest

from rtmig_nova.enforce import deadline
from rtmig_nova.enforce import libvirt_controls as lc
from rtmig_nova.enforce import netshape
from rtmig_nova.enforce import reservation as rsv
from tests.host import domains

NS = f"rtmigtest-r-{os.getpid()}"
IF = "rtm-r0"


pytestmark = pytest.mark.skipif(not domains.libvirtd_up(),
                                reason=domains.REQUIRES_LIBVIRTD)


@pytest.fixture(scope="module")
def netns():
    with domains.namespace_with_veth(NS, IF) as ns:
        yield ns


@pytest.fixture
def host(netns, tmp_path):
    """A domain, a helper thread and the namespace, and a state dir."""
    with domains.reservation_host(netns, tmp_path / "state") as h:
        yield h


def _snapshot(h):
    return domains.reservation_snapshot(h, IF)


def _steps(h):
    plan = netshape.ShapingPlan(
        ifname=IF, netns=h["netns"], link_rate=12.5e6,
        migration=netshape.TrafficClass(
            "migration", 5e6, match=netshape.Match(dst_ports=(49152, 49215))))
    name = h["dom"].name()
    return [rsv.MigrationStep(domains.URI, name, 40 * lc.MIB, 0.123),
            rsv.CpuStep(domains.URI, name,
                        {"emulator_period": 100000, "emulator_quota": 20000,
                         "vcpu_period": 100000, "vcpu_quota": 30000}),
            rsv.DeadlineStep(h["tid"], 1_000_000, 10_000_000, 10_000_000),
            rsv.ShapingStep(plan)]


def test_apply_then_release_restores_everything(host):
    before = _snapshot(host)
    res = rsv.Reservation(_steps(host), host["state"], label="t")
    ident = res.apply()
    assert lc.get_migration(host["dom"]) == (40 * lc.MIB, 0.123)
    cpu = lc.get_cpu(host["dom"])
    assert cpu["emulator_quota"] == 20000 and cpu["vcpu_quota"] == 30000
    attr = deadline.get_attr(host["tid"])
    assert attr.policy == deadline.SCHED_DEADLINE
    assert attr.runtime_ns == 1_000_000
    classes = netshape.show(IF, host["netns"])
    assert any(c["role"] == "migration" and c["rate"] == 5e6
               for c in classes)
    docs = rsv.load(host["state"])
    assert [d["id"] for d in docs] == [ident]
    assert [s["kind"] for s in docs[0]["applied"]] == [
        "migration", "cpu", "deadline", "shaping"]
    assert rsv.release(ident, host["state"]) is True
    assert _snapshot(host) == before
    assert rsv.load(host["state"]) == []
    assert rsv.release(ident, host["state"]) is False


@pytest.mark.parametrize("failing", [0, 1, 2, 3])
def test_a_failing_step_undoes_the_ones_before(host, failing, monkeypatch):
    before = _snapshot(host)
    steps = _steps(host)

    def boom():
        raise RuntimeError("injected fault")
    monkeypatch.setattr(steps[failing], "apply", boom)
    with pytest.raises(rsv.ReservationError) as e:
        rsv.Reservation(steps, host["state"]).apply()
    assert f"step {steps[failing].kind!r} failed: injected fault" in \
        str(e.value)
    assert "\n" not in str(e.value)
    assert _snapshot(host) == before
    assert rsv.load(host["state"]) == []


def test_recover_after_a_crash(host, monkeypatch):
    before = _snapshot(host)
    steps = _steps(host)
    real = steps[2].apply

    def crash():        # the change happens, then the process "dies"
        real()
        raise KeyboardInterrupt
    monkeypatch.setattr(steps[2], "apply", crash)
    with pytest.raises(KeyboardInterrupt):
        rsv.Reservation(steps, host["state"]).apply()
    # Left as a crash leaves it: applied, and recorded.
    assert deadline.get_attr(host["tid"]).policy == deadline.SCHED_DEADLINE
    assert len(rsv.load(host["state"])) == 1
    assert len(rsv.recover(host["state"])) == 1
    assert _snapshot(host) == before
    assert rsv.recover(host["state"]) == []


def test_unknown_domain_changes_nothing(host):
    before = _snapshot(host)
    steps = _steps(host)
    steps[1] = rsv.CpuStep(domains.URI, "no-such-domain",
                           {"vcpu_quota": 30000})
    with pytest.raises(rsv.ReservationError, match="no domain"):
        rsv.Reservation(steps, host["state"]).apply()
    assert _snapshot(host) == before


def test_over_subscribed_shaping_fails_before_any_change(host):
    before = _snapshot(host)
    steps = _steps(host)
    steps[3].plan.migration = netshape.TrafficClass(
        "migration", 20e6, match=netshape.Match(dst_ports=(49152, 49215)))
    with pytest.raises(rsv.ReservationError, match="exceed"):
        rsv.Reservation(steps, host["state"]).apply()
    assert _snapshot(host) == before
