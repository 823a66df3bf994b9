"""The QEMU release the plans follow: from the configuration or the host,
into the plan, its CPU and its link share."""

import types

import pytest

from rtmig_nova import planning
from rtmig_nova.enforce import libvirt_controls
from rtmig_nova.enforce import reservation
from rtmig_nova.model import DirtyProfile
from rtmig_nova.model import flavor
from rtmig_nova.model import ledger
from rtmig_nova.model import precopy
from rtmig_nova.model import sizing

MIB = 2 ** 20


def test_auto_takes_the_host_s_and_a_setting_wins():
    assert planning.qemu_version("auto", 10000002) == "10.0"
    assert planning.qemu_version("auto") == precopy.DEFAULT_QEMU_VERSION
    assert planning.qemu_version("8.2", 10000002) == "8.2"
    group = types.SimpleNamespace(qemu_version="auto", **{
        k: None for k in ("model", "cpu_cost_per_page", "cpu_margin",
                          "deadline_period", "cgroup_period", "dirty_log",
                          "send_order", "check_interval", "switchover_time",
                          "setup_time", "setup_time_sd", "send_rate_sd",
                          "max_rounds", "send_queue_cap")})
    assert planning.plan_options(group, 10000002)["qemu_version"] == "10.0"


def test_the_link_share_follows_the_qemu_that_sends():
    # 4 MiB/s: QEMU 10 puts 25% more on the wire than 7.2; a class sized
    # for 7.2 would throttle it below what the plan predicts
    old = reservation.migration_shaping("eth9", 100 * MIB, 4 * MIB,
                                        (49152, 49215))
    new = reservation.migration_shaping("eth9", 100 * MIB, 4 * MIB,
                                        (49152, 49215), qemu_version="10.0")
    assert new.migration.rate / old.migration.rate == pytest.approx(
        128 / 103, rel=0.02)
    assert new.migration.rate >= precopy.send_rate(4 * MIB, 4096,
                                                   qemu_version="10.0")


def test_a_plan_for_qemu_10_knows_its_send_rate():
    profile = DirtyProfile.from_aggregate_rate(256 * MIB, 2e6)
    request = flavor.parse_specs({"rtmig:vcpu_reservation": "2ms/10ms",
                                  "rtmig:migration_deadline": "60s",
                                  "rtmig:max_downtime": "300ms"})
    plans = {v: ledger.migration_plan(profile, request, 64 * MIB,
                                      {"qemu_version": v})
             for v in ("7.2", "10.0")}
    for version, pl in plans.items():
        assert pl.feasible, pl.reason
        assert pl.settings["qemu_version"] == version
        assert pl.prediction.settings.qemu_version == version
    # the same bandwidth costs more CPU on 10.0 where it sends more
    bw = plans["7.2"].bandwidth
    cpu = {v: sizing.cpu_reservation(bw, 4096, 1e-6, qemu_version=v).share
           for v in plans}
    assert cpu["10.0"] >= cpu["7.2"]


class _Conn:
    def __init__(self, version):
        self.version = version

    def getVersion(self):
        if isinstance(self.version, Exception):
            raise self.version
        return self.version


class _Dom:
    def __init__(self, version):
        self._conn = _Conn(version)

    def connect(self):
        return self._conn


def test_the_host_s_version_from_libvirt():
    assert libvirt_controls.hypervisor_version(_Dom(10000002)) == 10000002
    assert libvirt_controls.hypervisor_version(_Dom(0)) is None
    assert libvirt_controls.hypervisor_version(object()) is None


def test_rtmig_reserve_refuses_a_plan_for_another_qemu(tmp_path, capsys):
    from rtmig_nova.cli import reserve
    from rtmig_nova.cli.errors import CliError
    from tests.cli_helpers import run
    profile = tmp_path / "p.json"
    DirtyProfile.from_aggregate_rate(256 * MIB, 2e6).save(profile)
    plan = tmp_path / "plan.json"
    code, out, err = run(capsys, "plan", "--profile", profile, "--deadline",
                         "60s", "--max-downtime", "300ms", "--link-capacity",
                         "64MiB/s", "--qemu-version", "7.2", "--json")
    assert code == 0, err
    plan.write_text(out)
    values = reserve.read_plan(str(plan))
    assert values.qemu_version == "7.2"
    req = types.SimpleNamespace(plan_qemu=values.qemu_version, domain="vm1")
    reserve._check_plan_qemu(req, 7002000)          # the same counting
    reserve._check_plan_qemu(req, None)             # not known: no check
    with pytest.raises(CliError, match="--qemu-version 10.0"):
        reserve._check_plan_qemu(req, 10000002)
