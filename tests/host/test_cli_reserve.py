"""``rtmig reserve`` on real parts: a TCG domain of the host's libvirtd, a
helper process as the SCHED_DEADLINE thread, a veth in a test namespace.
``apply`` changes them all, ``release`` (one or ``--all``) puts every one
back; a refused request changes nothing and leaves no state file."""

import json
import os
import subprocess
import sys

import pytest

from tests.cli_helpers import assert_one_error_line, run

from rtmig_nova.enforce import deadline
from rtmig_nova.enforce import libvirt_controls as lc
from rtmig_nova.enforce import netshape
from rtmig_nova.model.precopy import pages_per_count, send_rate
from tests.host import domains

NS = f"rtmigtest-c-{os.getpid()}"
IF = "rtm-c0"
LINK = "100Mbit/s"                      # 12.5e6 bytes/s
KINDS = ["migration", "cpu", "deadline", "shaping"]


pytestmark = pytest.mark.skipif(not domains.libvirtd_up(),
                                reason=domains.REQUIRES_LIBVIRTD)


@pytest.fixture(scope="module")
def netns():
    with domains.namespace_with_veth(NS, IF) as ns:
        yield ns


def _rtmig(*argv, check=True):
    """``rtmig ARGV`` in a child process: (status, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "rtmig_nova.cli"]
                          + [str(a) for a in argv], capture_output=True,
                          text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    """Plan files written by ``rtmig plan --json`` for a small 8 MiB
    profile: a feasible one (8 MiB/s, well below the link) and an
    infeasible one."""
    import numpy as np

    from rtmig_nova.model import DirtyProfile
    d = tmp_path_factory.mktemp("plans")
    rng = np.random.default_rng(1)
    rates = np.zeros(2048)
    rates[rng.choice(2048, 300, replace=False)] = \
        10.0 ** rng.uniform(-2, 2.5, 300)
    DirtyProfile.from_rates(rates, zero_pages=100).save(d / "small.json")
    out = {}
    host_qemu = _host_qemu()
    # planned for this host's QEMU, and once for one that counts its rate
    # limit otherwise (7.2 against 10.0), which apply must refuse
    other = "10.0" if pages_per_count(host_qemu) == 1 else "7.2"
    for name, deadline_s, qemu in (("feasible", "2s", host_qemu),
                                   ("infeasible", "10ms", host_qemu),
                                   ("other_qemu", "2s", other)):
        _, text, _ = _rtmig("plan", "--profile", d / "small.json",
                            "--deadline", deadline_s, "--max-downtime",
                            "50ms", "--link-capacity", LINK,
                            "--qemu-version", qemu, "--json")
        (d / f"{name}.json").write_text(text)
        out[name] = (d / f"{name}.json", json.loads(text))
    assert out["feasible"][1]["feasible"] is True
    assert out["feasible"][1]["bandwidth_bytes_per_s"] < 12.5e6
    assert out["infeasible"][1]["feasible"] is False
    return out


@pytest.fixture
def host(netns, tmp_path):
    """A domain, a helper process (its main thread) and the namespace,
    and a state dir."""
    with domains.reservation_host(netns, tmp_path / "state") as h:
        yield h


def _host_qemu():
    from rtmig_nova.testbed import hosts
    return hosts.qemu_version(domains.URI)


def test_a_plan_for_another_qemu_s_rate_limit_is_refused(host, plans,
                                                         capsys):
    plan_file, plan = plans["other_qemu"]
    before = _snapshot(host)
    code, out, err = run(capsys, *_apply_argv(host, plan_file))
    assert_one_error_line(code, out, err)
    assert "plan again with --qemu-version " + _host_qemu() in err
    assert _snapshot(host) == before and _state_files(host) == []


def _snapshot(h):
    return domains.reservation_snapshot(h, IF)


def _state_files(h):
    if not os.path.isdir(h["state"]):
        return []
    return [n for n in os.listdir(h["state"]) if n.endswith(".json")]


def _apply_argv(h, plan_file, *extra):
    return ["reserve", "apply", "--domain", h["name"], "--plan", plan_file,
            "--deadline-thread", h["tid"], "--interface", IF, "--netns",
            h["netns"], "--link-capacity", LINK, "--state-dir", h["state"],
            *extra]


def _assert_applied(h, plan):
    bw = plan["bandwidth_bytes_per_s"]
    assert lc.get_migration(h["dom"]) == (bw, plan["downtime_limit_s"])
    cpu = lc.get_cpu(h["dom"])
    assert cpu["emulator_quota"] == plan["cpu"]["quota_us"]
    assert cpu["emulator_period"] == plan["cpu"]["cgroup_period_us"]
    attr = deadline.get_attr(h["tid"])
    assert attr.policy == deadline.SCHED_DEADLINE
    assert (attr.runtime_ns, attr.deadline_ns, attr.period_ns) == (
        plan["cpu"]["runtime_ns"], plan["cpu"]["deadline_ns"],
        plan["cpu"]["period_ns"])
    classes = netshape.show(IF, h["netns"])
    # The class carries what this QEMU sends at that limit in whole frames.
    want = round(min(netshape.frame_rate(send_rate(
        bw, 4096, qemu_version=_host_qemu())), 12_500_000))
    assert any(c["role"] == "migration" and c["rate"] == want
               for c in classes)
    assert any(c["role"] == "link" and c["rate"] == 12_500_000
               for c in classes)


def test_apply_show_release_restores_everything(host, plans, capsys):
    plan_file, plan = plans["feasible"]
    before = _snapshot(host)
    code, out, err = run(capsys, *_apply_argv(host, plan_file, "--label",
                                              "cli test", "--json"))
    assert code == 0, err
    assert err == ""
    doc = json.loads(out)
    assert set(doc) == {"id", "label", "state_file", "applied"}
    assert doc["label"] == "cli test"
    assert doc["applied"] == KINDS
    assert os.path.isfile(doc["state_file"])
    ident = doc["id"]

    code, out, err = run(capsys, "reserve", "show", "--state-dir",
                         host["state"], "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["state_dir"] == host["state"]
    [res] = shown["reservations"]
    assert (res["id"], res["label"]) == (ident, "cli test")
    assert res["state_file"] == doc["state_file"]
    assert isinstance(res["created"], float)
    assert [s["kind"] for s in res["steps"]] == KINDS
    assert res["steps"][0]["record"]["domain"] == host["dom"].UUIDString()
    assert res["steps"][2]["record"]["tid"] == host["tid"]
    assert res["steps"][3]["record"] == {"ifname": IF,
                                         "netns": host["netns"]}
    code, out, err = run(capsys, "reserve", "show", "--state-dir",
                         host["state"])
    assert code == 0, err
    assert f"Reservation {ident}" in out and "cli test" in out
    for kind in KINDS:
        assert f"    {kind}" in out

    _assert_applied(host, plan)

    code, out, err = run(capsys, "reserve", "release", ident,
                         "--state-dir", host["state"])
    assert code == 0, err
    assert out.startswith(f"Released {ident}")
    assert _snapshot(host) == before
    assert _state_files(host) == []
    code, out, err = run(capsys, "reserve", "show", "--state-dir",
                         host["state"], "--json")
    assert json.loads(out)["reservations"] == []
    # Idempotent: nothing left to release is not an error.
    code, out, err = run(capsys, "reserve", "release", ident,
                         "--state-dir", host["state"])
    assert code == 0, err
    assert out.startswith("Nothing to release")
    code, out, err = run(capsys, "reserve", "release", ident,
                         "--state-dir", host["state"], "--json")
    assert code == 0 and json.loads(out)["released"] == []


def test_release_all_restores_everything(host, plans, capsys):
    plan_file, plan = plans["feasible"]
    before = _snapshot(host)
    code, out, err = run(capsys, *_apply_argv(host, plan_file))
    assert code == 0, err
    ident = out.split()[1]
    assert out.startswith(f"Reservation {ident} applied")
    assert f"rtmig reserve release {ident}" in out
    _assert_applied(host, plan)
    code, out, err = run(capsys, "reserve", "release", "--all",
                         "--state-dir", host["state"], "--json")
    assert code == 0, err
    assert json.loads(out)["released"] == [ident]
    assert _snapshot(host) == before
    assert _state_files(host) == []
    code, out, err = run(capsys, "reserve", "release", "--all",
                         "--state-dir", host["state"])
    assert code == 0 and out.startswith("Nothing to release")


def test_explicit_options_override_the_plan(host, plans, capsys):
    plan_file, plan = plans["feasible"]
    before = _snapshot(host)
    code, out, err = run(
        capsys, "reserve", "apply", "--domain", host["name"], "--plan",
        plan_file, "--bandwidth", "3MiB/s", "--downtime-limit", "120ms",
        "--emulator-quota", "5ms", "--emulator-period", "50ms",
        "--vcpu-quota", "30ms", "--vcpu-period", "100ms",
        "--deadline-thread", host["tid"], "--deadline-runtime", "2ms",
        "--deadline-period", "20ms", "--state-dir", host["state"], "--json")
    assert code == 0, err
    ident = json.loads(out)["id"]
    assert json.loads(out)["applied"] == ["migration", "cpu", "deadline"]
    assert lc.get_migration(host["dom"]) == (3 * lc.MIB, 0.12)
    cpu = lc.get_cpu(host["dom"])
    assert (cpu["emulator_quota"], cpu["emulator_period"],
            cpu["vcpu_quota"], cpu["vcpu_period"]) == (5000, 50000, 30000,
                                                       100000)
    attr = deadline.get_attr(host["tid"])
    # An explicit period: the deadline is the period, not the plan's.
    assert (attr.runtime_ns, attr.deadline_ns, attr.period_ns) == (
        2_000_000, 20_000_000, 20_000_000)
    assert netshape.show(IF, host["netns"]) is None
    code, out, err = run(capsys, "reserve", "release", ident,
                         "--state-dir", host["state"])
    assert code == 0, err
    assert _snapshot(host) == before


@pytest.mark.parametrize("reclaim", [False, True])
def test_deadline_vcpus(host, plans, capsys, reclaim):
    plan_file, plan = plans["feasible"]
    vcpus = lc.vcpu_threads(host["dom"])
    assert len(vcpus) == 2
    before = [deadline.get_attr(t).as_tuple()[:4] for t in vcpus]
    code, out, err = run(capsys, "reserve", "apply", "--domain",
                         host["name"], "--plan", plan_file,
                         "--deadline-vcpus", "--state-dir", host["state"],
                         "--json", *(["--deadline-reclaim"] if reclaim
                                     else []))
    assert code == 0, err
    assert json.loads(out)["applied"] == ["migration", "cpu", "deadline",
                                          "deadline"]
    for tid in vcpus:
        attr = deadline.get_attr(tid)
        assert attr.policy == deadline.SCHED_DEADLINE
        assert attr.flags & deadline.SCHED_FLAG_RECLAIM == (
            deadline.SCHED_FLAG_RECLAIM if reclaim else 0)
    code, out, err = run(capsys, "reserve", "release", "--all",
                         "--state-dir", host["state"])
    assert code == 0, err
    assert [deadline.get_attr(t).as_tuple()[:4] for t in vcpus] == before


def test_interrupted_apply_undoes_what_it_applied(host, plans, capsys,
                                                  monkeypatch):
    from rtmig_nova.enforce import reservation as rsv
    plan_file, _ = plans["feasible"]
    before = _snapshot(host)
    real = rsv.ShapingStep.apply

    def interrupted(self):      # the last change happens, then Ctrl-C
        real(self)
        raise KeyboardInterrupt
    monkeypatch.setattr(rsv.ShapingStep, "apply", interrupted)
    code, out, err = run(capsys, *_apply_argv(host, plan_file))
    assert (code, out, err) == (130, "", "rtmig: interrupted\n")
    assert _snapshot(host) == before
    assert _state_files(host) == []


def _bad_cases(h, plans):
    feasible = plans["feasible"][0]
    return {
        "unknown domain": [
            "reserve", "apply", "--domain", "rtmigtest-no-such-domain",
            "--plan", feasible, "--deadline-thread", h["tid"],
            "--state-dir", h["state"]],
        "negative bandwidth": _apply_argv(h, feasible, "--bandwidth=-5MiB/s"),
        "infeasible plan": _apply_argv(h, plans["infeasible"][0]),
        "over-capacity shaping": _apply_argv(h, feasible, "--link-capacity",
                                             "1Mbit/s"),
        # Found only when the shaping step runs inside the namespace: the
        # steps before it are undone.
        "unknown interface": [
            "reserve", "apply", "--domain", h["name"], "--plan", feasible,
            "--deadline-thread", h["tid"], "--interface", "rtm-none",
            "--netns", h["netns"], "--link-capacity", LINK, "--state-dir",
            h["state"]],
        "no such thread": _apply_argv(h, feasible, "--deadline-thread",
                                      "999999999"),
    }


@pytest.mark.parametrize("case", ["unknown domain", "negative bandwidth",
                                  "infeasible plan", "over-capacity shaping",
                                  "unknown interface", "no such thread"])
def test_refused_request_changes_nothing(host, plans, capsys, case):
    before = _snapshot(host)
    argv = _bad_cases(host, plans)[case]
    assert_one_error_line(*run(capsys, *argv))
    assert _snapshot(host) == before
    assert _state_files(host) == []


def test_messages_name_the_cause(host, plans, capsys):
    cases = _bad_cases(host, plans)
    for case, words in (
            ("unknown domain", ["--domain", "no domain"]),
            ("negative bandwidth", ["--bandwidth", "negative"]),
            ("infeasible plan", ["--plan", "infeasible", "nothing applied"]),
            ("over-capacity shaping", ["exceeds the link"]),
            ("unknown interface", ["step 'shaping' failed", "rtm-none",
                                   "undone: shaping, deadline, cpu, "
                                   "migration"])):
        _, _, err = run(capsys, *cases[case])
        for word in words:
            assert word in err, (case, err)


def test_in_a_child_process(host, plans):
    """The real command: privileged operations in its own (root) process,
    nothing on stderr."""
    plan_file, plan = plans["feasible"]
    before = _snapshot(host)
    code, out, err = _rtmig(*_apply_argv(host, plan_file, "--json"))
    assert err == ""
    ident = json.loads(out)["id"]
    _assert_applied(host, plan)
    code, out, err = _rtmig("reserve", "show", "--state-dir", host["state"])
    assert ident in out and err == ""
    code, out, err = _rtmig("reserve", "release", ident, "--state-dir",
                            host["state"])
    assert err == ""
    assert _snapshot(host) == before
    code, out, err = _rtmig("reserve", "apply", "--domain",
                            "rtmigtest-no-such-domain", "--plan", plan_file,
                            "--state-dir", host["state"], check=False)
    assert_one_error_line(code, out, err)
    assert _state_files(host) == []
