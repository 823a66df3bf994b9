"""``rtmig reserve``: what needs neither root nor libvirtd (argument
errors, plan files, the state directory's records).  The host side is in
tests/host/test_cli_reserve.py."""

import json
import os
import subprocess
import sys

import pytest

from tests.cli_helpers import assert_one_error_line, run

from rtmig_nova.cli import reserve


def plan_doc(**changes):
    doc = {"feasible": True, "reason": "",
           "bandwidth_bytes_per_s": 8388608.0, "downtime_limit_s": 0.049,
           "probability": 0.99,
           "cpu": {"share": 0.0064, "runtime_ns": 63876,
                   "deadline_ns": 10000000, "period_ns": 10000000,
                   "quota_us": 1000, "cgroup_period_us": 100000}}
    doc.update(changes)
    return doc


@pytest.fixture
def files(tmp_path):
    def write(name, doc):
        path = tmp_path / name
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        return path
    return {
        "plan": write("plan.json", plan_doc()),
        "infeasible": write("infeasible.json", plan_doc(
            feasible=False, reason="the first pass alone takes too long")),
        "not_json": write("junk.json", "{not json"),
        "not_plan": write("other.json", {"format": "rtmig-dirty-profile"}),
        "no_cpu": write("nocpu.json", {k: v for k, v in plan_doc().items()
                                       if k != "cpu"}),
        "bad_quota": write("badquota.json", plan_doc(cpu=dict(
            plan_doc()["cpu"], quota_us=-1))),
        "missing": tmp_path / "missing.json",
        "state": tmp_path / "state",
    }


APPLY = ["reserve", "apply", "--domain", "vm"]

BAD = {
    "missing --domain": ["reserve", "apply", "--bandwidth", "1e8",
                         "--downtime-limit", "1"],
    "no subcommand": ["reserve"],
    "unknown subcommand": ["reserve", "bogus"],
    "bad --migration-ports": APPLY + ["--plan", "{plan}", "--interface",
                                      "eth0", "--link-capacity", "1Gbit/s",
                                      "--migration-ports", "49215-49152"],
    "--migration-ports not numbers": APPLY + [
        "--plan", "{plan}", "--interface", "eth0", "--link-capacity",
        "1Gbit/s", "--migration-ports", "low-high"],
    "--migration-ports too large": APPLY + [
        "--plan", "{plan}", "--interface", "eth0", "--link-capacity",
        "1Gbit/s", "--migration-ports", "49152-70000"],
    "bad --migration-peer": APPLY + ["--plan", "{plan}", "--interface",
                                     "eth0", "--link-capacity", "1Gbit/s",
                                     "--migration-peer", "10.0.0.1/8"],
    "release without ID or --all": ["reserve", "release"],
    "release with ID and --all": ["reserve", "release", "abc", "--all"],
    "no migration controls": APPLY,
    "no --downtime-limit": APPLY + ["--bandwidth", "1e8"],
    "negative bandwidth": APPLY + ["--bandwidth=-5", "--downtime-limit",
                                   "1"],
    "zero bandwidth": APPLY + ["--bandwidth", "0", "--downtime-limit", "1"],
    "sub-ms downtime": APPLY + ["--bandwidth", "1e8", "--downtime-limit",
                                "500us"],
    "infeasible plan": APPLY + ["--plan", "{infeasible}"],
    "plan not JSON": APPLY + ["--plan", "{not_json}"],
    "plan of another format": APPLY + ["--plan", "{not_plan}"],
    "plan without cpu": APPLY + ["--plan", "{no_cpu}"],
    "plan with a bad quota": APPLY + ["--plan", "{bad_quota}"],
    "missing plan": APPLY + ["--plan", "{missing}"],
    "emulator period out of range": APPLY + ["--plan", "{plan}",
                                             "--emulator-period", "2s"],
    "emulator quota below 1 ms": APPLY + ["--plan", "{plan}",
                                          "--emulator-quota", "500us"],
    "vcpu period without quota": APPLY + ["--plan", "{plan}",
                                          "--vcpu-period", "100ms"],
    "deadline options without a thread": APPLY + [
        "--plan", "{plan}", "--deadline-runtime", "1ms"],
    "reclaim without a thread": APPLY + ["--plan", "{plan}",
                                         "--deadline-reclaim"],
    "deadline thread without runtime": APPLY + [
        "--bandwidth", "1e8", "--downtime-limit", "1",
        "--deadline-thread", "1234"],
    "deadline thread 0": APPLY + ["--plan", "{plan}", "--deadline-thread",
                                  "0"],
    "--interface without --link-capacity": APPLY + ["--plan", "{plan}",
                                                    "--interface", "eth0"],
    "--netns without --interface": APPLY + ["--plan", "{plan}", "--netns",
                                            "ns1"],
    "negative link capacity": APPLY + ["--plan", "{plan}", "--interface",
                                       "eth0", "--link-capacity=-1"],
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_arguments(capsys, files, case):
    argv = [a.format(**files) for a in BAD[case]]
    code, out, err = run(capsys, *argv)
    assert_one_error_line(code, out, err)
    assert not os.path.exists(files["state"])


def test_error_messages_say_what(capsys, files):
    _, _, err = run(capsys, *APPLY, "--plan", files["plan"], "--interface",
                    "eth0", "--link-capacity", "1Gbit/s",
                    "--migration-ports", "x")
    assert "--migration-ports" in err and "49152-49215" in err
    _, _, err = run(capsys, "reserve", "release")
    assert "ID or --all" in err
    _, _, err = run(capsys, *APPLY, "--plan", files["infeasible"])
    assert "infeasible" in err and "too long" in err
    _, _, err = run(capsys, *APPLY, "--plan", files["no_cpu"])
    assert "cpu.quota_us" in err
    _, _, err = run(capsys, *APPLY)
    assert "--bandwidth" in err and "--plan" in err


def test_read_plan(files):
    p = reserve.read_plan(str(files["plan"]))
    assert (p.bandwidth, p.downtime_limit, p.quota_us, p.cgroup_period_us,
            p.runtime_ns, p.deadline_ns, p.period_ns) == (
        8388608.0, 0.049, 1000, 100000, 63876, 10000000, 10000000)


@pytest.mark.parametrize("text, ports", [
    ("49152-49215", (49152, 49215)), ("5001", (5001, 5001)),
    (" 0 - 65535 ", (0, 65535))])
def test_parse_ports(text, ports):
    assert reserve.parse_ports(text) == ports


def _args(capsys, *argv):
    """The request ``reserve apply ARGV`` builds (without the host)."""
    from rtmig_nova.cli.config import load_defaults
    from rtmig_nova.cli.parser import build_parser
    args = build_parser().parse_args([str(a) for a in argv])
    return reserve.build_request(args, load_defaults())


def test_request_from_plan_and_overrides(capsys, files):
    req = _args(capsys, *APPLY, "--plan", files["plan"],
                "--deadline-thread", "7", "--deadline-thread", "7",
                "--deadline-thread", "9", "--interface", "eth0",
                "--link-capacity", "1Gbit/s")
    assert (req.bandwidth, req.downtime_limit) == (8388608.0, 0.049)
    assert req.cpu == {"emulator_period": 100000, "emulator_quota": 1000}
    assert req.threads == [7, 9]
    assert req.deadline == (63876, 10000000, 10000000)
    assert req.deadline_reclaim is False
    assert req.shaping == {"ifname": "eth0", "netns": None,
                           "link_rate": 125e6, "rate": 8388608.0,
                           "ports": (49152, 49215), "peer": None}
    assert req.state_dir == "/var/lib/rtmig-nova/reservations"
    req = _args(capsys, *APPLY, "--plan", files["plan"], "--bandwidth",
                "4MiB/s", "--downtime-limit", "20ms", "--emulator-quota",
                "2.5ms", "--vcpu-quota", "30ms", "--deadline-vcpus",
                "--deadline-runtime", "1ms", "--deadline-period", "5ms",
                "--interface", "eth0", "--netns", "ns1", "--link-capacity",
                "100MB/s", "--migration-ports", "5001",
                "--migration-peer", "10.0.0.2", "--state-dir", "/tmp/x")
    assert (req.bandwidth, req.downtime_limit) == (4 * 2 ** 20, 0.02)
    assert req.cpu == {"emulator_period": 100000, "emulator_quota": 2500,
                       "vcpu_period": 100000, "vcpu_quota": 30000}
    assert req.vcpus is True and req.threads == []
    assert req.deadline == (1000000, 5000000, 5000000)
    assert req.shaping["rate"] == 4 * 2 ** 20
    assert req.shaping["ports"] == (5001, 5001)
    assert req.shaping["peer"] == "10.0.0.2/32"
    assert req.state_dir == "/tmp/x"


def test_request_without_a_plan(capsys):
    req = _args(capsys, *APPLY, "--bandwidth", "1Gbit/s",
                "--downtime-limit", "300ms")
    assert (req.bandwidth, req.downtime_limit) == (125e6, 0.3)
    assert req.cpu == {} and req.deadline is None and req.shaping is None
    req = _args(capsys, *APPLY, "--bandwidth", "1e8", "--downtime-limit",
                "1", "--deadline-thread", "5", "--deadline-runtime", "1ms",
                "--deadline-period", "10ms", "--deadline-deadline", "4ms",
                "--deadline-reclaim")
    assert req.deadline == (1000000, 4000000, 10000000)
    assert req.deadline_reclaim is True


def test_state_dir_from_the_config_file(capsys, tmp_path):
    state = tmp_path / "records"
    conf = tmp_path / "rtmig.conf"
    conf.write_text(f"[rtmig]\nreservation_state_dir = {state}\n")
    code, out, err = run(capsys, "--config-file", conf, "reserve", "show",
                         "--json")
    assert code == 0, err
    assert json.loads(out) == {"state_dir": str(state), "reservations": [],
                               "refused": []}
    code, out, err = run(capsys, "reserve", "show", "--state-dir", state)
    assert code == 0, err
    assert out == f"No reservations recorded in {state}\n"


def test_show_and_release_a_record_without_steps(capsys, tmp_path):
    """A record holds no step until the first one starts changing things
    (a crash right after apply began): show lists it, release removes it,
    and releasing it again is not an error."""
    state = tmp_path / "state"
    state.mkdir()
    ident = "0123abcd"
    (state / f"{ident}.json").write_text(json.dumps(
        {"version": 1, "id": ident, "label": "crashed", "created": 1e9,
         "applied": []}))
    code, out, err = run(capsys, "reserve", "show", "--state-dir", state)
    assert code == 0, err
    assert f"Reservation {ident}" in out and "crashed" in out
    assert "none recorded" in out
    code, out, err = run(capsys, "reserve", "release", ident,
                         "--state-dir", state)
    assert code == 0, err
    assert out.startswith(f"Released {ident} (crashed)")
    assert os.listdir(state) == []
    code, out, err = run(capsys, "reserve", "release", ident,
                         "--state-dir", state)
    assert code == 0, err
    assert "Nothing to release" in out and ident in out
    code, out, err = run(capsys, "reserve", "release", "--all",
                         "--state-dir", state, "--json")
    assert code == 0, err
    assert json.loads(out) == {"state_dir": str(state), "released": []}


def test_show_describes_undo_records(capsys, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    steps = [
        {"kind": "migration", "record": {
            "uri": "qemu:///system", "domain": "uuid-1",
            "bandwidth": 9223372036853727232, "max_downtime": 0.3}},
        {"kind": "cpu", "record": {
            "uri": "qemu:///system", "domain": "uuid-1",
            "params": {"emulator_period": 100000, "emulator_quota": -1}}},
        {"kind": "deadline", "record": {
            "tid": 4242, "start": 1, "previous": [0, 0, 5, 0, 0, 0, 0]}},
        {"kind": "shaping", "record": {"ifname": "eth1", "netns": None}}]
    (state / "abc.json").write_text(json.dumps(
        {"version": 1, "id": "abc", "label": "", "created": 1e9,
         "applied": steps}))
    code, out, err = run(capsys, "reserve", "show", "--state-dir", state)
    assert code == 0, err
    for text in ("1 reservation recorded", "unlimited",
                 "downtime-limit 300 ms", "emulator_quota none",
                 "emulator_period 100000 us", "thread 4242: SCHED_OTHER "
                 "(nice 5)", "eth1: the kernel's default qdisc"):
        assert text in out, text
    code, out, err = run(capsys, "reserve", "show", "--state-dir", state,
                         "--json")
    doc = json.loads(out)
    [res] = doc["reservations"]
    assert res["steps"] == steps
    assert res["state_file"] == str(state / "abc.json")


def _record(state, ident, label=""):
    (state / f"{ident}.json").write_text(json.dumps(
        {"version": 1, "id": ident, "label": label, "created": 1e9,
         "applied": []}))


def test_a_corrupt_state_file_is_refused_on_its_own(capsys, tmp_path):
    """show lists the good records and the refused file (exit 0); release
    ID of a good one works; release --all releases the good ones and is
    one error line naming the refused file."""
    state = tmp_path / "state"
    state.mkdir()
    _record(state, "good1", "one")
    _record(state, "good2", "two")
    (state / "bad.json").write_text("{")
    code, out, err = run(capsys, "reserve", "show", "--state-dir", state)
    assert code == 0 and err == "", err
    assert "2 reservations recorded" in out
    assert "Reservation good1" in out and "Reservation good2" in out
    assert "1 state file refused" in out
    assert f"{state / 'bad.json'}: unreadable state file (not JSON" in out
    code, out, err = run(capsys, "reserve", "show", "--state-dir", state,
                         "--json")
    assert code == 0 and err == "", err
    doc = json.loads(out)
    assert [r["id"] for r in doc["reservations"]] == ["good1", "good2"]
    [refused] = doc["refused"]
    assert refused["state_file"] == str(state / "bad.json")
    assert refused["reason"].startswith("unreadable state file (not JSON")
    code, out, err = run(capsys, "reserve", "release", "good1",
                         "--state-dir", state)
    assert code == 0 and err == "", err
    assert out.startswith("Released good1 (one)")
    code, out, err = run(capsys, "reserve", "release", "--all",
                         "--state-dir", state)
    assert_one_error_line(code, out, err)
    assert f"released good2; not released: {state / 'bad.json'}: " in err
    assert sorted(os.listdir(state)) == ["bad.json"]
    code, out, err = run(capsys, "reserve", "release", "bad", "--state-dir",
                         state)
    assert_one_error_line(code, out, err)
    assert f"{state / 'bad.json'}: unreadable state file" in err
    assert os.listdir(state) == ["bad.json"]


@pytest.mark.parametrize("ident", ["../etc/passwd", ".tmp-x", "a b", "",
                                   "x" * 129, "a/b", "\u00e9"])
def test_release_refuses_what_is_no_reservation_id(capsys, tmp_path,
                                                   ident):
    err = run(capsys, "reserve", "release", ident, "--state-dir", tmp_path)
    assert_one_error_line(*err)
    assert "is no reservation id" in err[2]


def test_state_dir_that_is_a_file(capsys, tmp_path):
    path = tmp_path / "f"
    path.write_text("")
    for argv in (["reserve", "show"], ["reserve", "release", "--all"],
                 ["reserve", "release", "abc"]):
        code, out, err = run(capsys, *argv, "--state-dir", path)
        assert_one_error_line(code, out, err)
        assert str(path) in err and "Not a directory" in err


def test_help_does_not_import_the_enforcement_layer():
    code = (
        "import sys\n"
        "from rtmig_nova import cli\n"
        "for argv in (['--help'], ['reserve', '--help'],\n"
        "             ['reserve', 'apply', '--help']):\n"
        "    assert cli.main(argv) == 0\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in\n"
        "         ('libvirt', 'pyroute2', 'oslo_privsep', 'eventlet',\n"
        "          'numpy', 'oslo_config')\n"
        "         or m.startswith('rtmig_nova.enforce')]\n"
        "print(heavy)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert "--deadline-thread" in proc.stdout and "--state-dir" in proc.stdout


def test_plan_from_standard_input():
    proc = subprocess.run(
        [sys.executable, "-m", "rtmig_nova.cli", "reserve", "apply",
         "--domain", "vm", "--plan", "-"], capture_output=True, text=True,
        timeout=60, input=json.dumps(plan_doc(feasible=False,
                                              reason="too slow")))
    assert_one_error_line(proc.returncode, proc.stdout, proc.stderr)
    assert "<stdin>" in proc.stderr and "too slow" in proc.stderr
