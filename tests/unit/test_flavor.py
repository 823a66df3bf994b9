"""The flavor contract: rtmig: extra specs and their Placement request."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtmig_nova.model import flavor
from tests.cli_helpers import assert_one_error_line, run

BASE = {"rtmig:vcpu_reservation": "2ms/10ms",
        "rtmig:migration_deadline": "60s",
        "rtmig:max_downtime": "300ms"}


def test_non_rt_flavor_is_left_alone():
    assert flavor.parse_specs({"hw:cpu_policy": "dedicated"}) is None
    assert flavor.check_placement_request(2, {"hw:mem_page_size": "1GB"}) \
        == ""


def test_defaults_and_units():
    r = flavor.parse_specs(BASE)
    assert r.runtime == pytest.approx(2e-3) and r.period == pytest.approx(1e-2)
    assert r.utilisation == pytest.approx(0.2)
    assert r.net_rate == 0 and r.confidence == 0.95
    assert r.profile == "builtin:default"
    assert r.reclaim is False
    r = flavor.parse_specs({**BASE, "rtmig:net_rate": "80Mbit/s",
                            "rtmig:confidence": "99%"})
    assert r.net_rate == pytest.approx(10e6) and r.confidence == 0.99


@pytest.mark.parametrize("key, value, words", [
    ("rtmig:vcpu_reservation", "12ms/10ms", "exceeds period"),
    ("rtmig:vcpu_reservation", "2ms", "RUNTIME/PERIOD"),
    ("rtmig:vcpu_reservation", "100ns/10ms", "1024 ns"),
    ("rtmig:vcpu_reservation", "1ms/2s", "period"),
    ("rtmig:net_rate", "2Tbit/s", "above"),
    ("rtmig:net_rate", "fast", "rtmig:net_rate"),
    ("rtmig:migration_deadline", "2d", "rtmig:migration_deadline"),
    ("rtmig:migration_deadline", "0", "1 ms to 86400 s"),
    ("rtmig:max_downtime", "0.1ms", "outside"),
    ("rtmig:max_downtime", "3000s", "outside"),
    ("rtmig:confidence", "1", "rtmig:confidence"),
    ("rtmig:confidence", "0.9999999", "at most 0.999999"),
    ("rtmig:vcpu_reclaim", "maybe", "true or false"),
    ("rtmig:vcpu_reclaim", "", "true or false"),
    ("rtmig:profile", "../etc/passwd", "no path"),
    ("rtmig:profile", "/tmp/x.json", "no path"),
    ("rtmig:bogus", "1", "unknown extra spec"),
])
def test_bad_values_name_the_key(key, value, words):
    with pytest.raises(flavor.SpecError) as e:
        flavor.parse_specs({**BASE, key: value})
    assert key in str(e.value) and words in str(e.value)


@pytest.mark.parametrize("text, value", [
    ("true", True), ("True", True), ("yes", True), ("1", True),
    ("on", True), ("false", False), ("FALSE", False), ("no", False),
    ("0", False), (" off ", False)])
def test_vcpu_reclaim_reads_as_novas_booleans(text, value):
    r = flavor.parse_specs({**BASE, "rtmig:vcpu_reclaim": text})
    assert r.reclaim is value
    # reclaiming changes what a vCPU may use, not what it reserves
    assert r.cpu_units_per_vcpu == flavor.parse_specs(BASE).cpu_units_per_vcpu


def test_required_keys():
    with pytest.raises(flavor.SpecError, match="rtmig:migration_deadline"):
        flavor.parse_specs({"rtmig:vcpu_reservation": "2ms/10ms",
                            "rtmig:max_downtime": "300ms"})


def test_placement_request_matches_and_mismatches():
    r = flavor.parse_specs({**BASE, "rtmig:net_rate": "10MB/s"})
    want = flavor.placement_request(3, r)
    assert want == {"resources:CUSTOM_RTMIG_CPU_MILLI": "600",
                    "resources:CUSTOM_RTMIG_NET_KBPS": "80000",
                    "trait:CUSTOM_RTMIG_HOST": "required"}
    specs = {**BASE, "rtmig:net_rate": "10MB/s", **want}
    assert flavor.check_placement_request(3, specs) == ""
    # The vCPU count is part of it: the same specs on 2 vCPUs disagree.
    assert "CUSTOM_RTMIG_CPU_MILLI" in flavor.check_placement_request(2, specs)
    # Specs without the request, and a request without specs.
    assert "disagrees" in flavor.check_placement_request(3, BASE)
    assert "without rtmig: specs" in flavor.check_placement_request(
        3, {"resources:CUSTOM_RTMIG_CPU_MILLI": "600"})
    assert "reserve no such resource" in flavor.check_placement_request(
        3, {**BASE, **flavor.placement_request(3, flavor.parse_specs(BASE)),
            "resources:CUSTOM_RTMIG_NET_KBPS": "5"})


@given(runtime_us=st.integers(2, 1000000),
       period_us=st.integers(1000, 1000000))
def test_cpu_units_never_undercount(runtime_us, period_us):
    if runtime_us > period_us:
        return
    r = flavor.parse_specs({**BASE, "rtmig:vcpu_reservation":
                            f"{runtime_us}us/{period_us}us"})
    units = r.cpu_units_per_vcpu
    assert units / 1000 >= r.utilisation - 1e-9
    assert units / 1000 < r.utilisation + 1e-3


def test_flavor_properties_refuse_a_deadline_below_one_pass():
    with pytest.raises(flavor.SpecError, match="shorter than one pass"):
        flavor.flavor_properties(2, {**BASE, "rtmig:migration_deadline":
                                     "1s"}, 4 << 30, 125e6)
    props = flavor.flavor_properties(2, BASE, 4 << 30, 1.25e9)
    assert flavor.check_placement_request(2, props) == ""


def test_rtmig_flavor_command(capsys):
    code, out, err = run(capsys, "flavor", "rt.small", "--vcpus", "2",
                         "--vcpu-reservation", "2ms/10ms", "--deadline",
                         "60s", "--max-downtime", "300ms", "--net-rate",
                         "10MB/s")
    assert code == 0 and err == ""
    assert out.startswith("openstack --os-compute-api-version 2.86 flavor "
                          "set ")
    assert "resources:CUSTOM_RTMIG_CPU_MILLI=400" in out
    assert out.rstrip().endswith(" rt.small")
    code, out, err = run(capsys, "flavor", "rt", "--vcpus", "2",
                         "--vcpu-reservation", "2ms/10ms", "--deadline",
                         "60s", "--max-downtime", "300ms", "--json")
    doc = json.loads(out)
    assert flavor.check_placement_request(2, doc["extra_specs"]) == ""
    assert "rtmig:vcpu_reclaim" not in doc["extra_specs"]
    code, out, err = run(capsys, "flavor", "rt", "--vcpus", "2",
                         "--vcpu-reservation", "2ms/10ms", "--vcpu-reclaim",
                         "--deadline", "60s", "--max-downtime", "300ms",
                         "--json")
    specs = json.loads(out)["extra_specs"]
    assert specs["rtmig:vcpu_reclaim"] == "true"
    assert flavor.parse_specs(specs).reclaim is True


@pytest.mark.parametrize("argv", [
    ["--vcpus", "0"],
    ["--vcpus", "2", "--memory", "4GiB"],
    ["--vcpus", "2", "--net-rate", "lots"],
])
def test_rtmig_flavor_bad_input(capsys, argv):
    code, out, err = run(capsys, "flavor", "f", "--vcpu-reservation",
                         "2ms/10ms", "--deadline", "60s", "--max-downtime",
                         "300ms", *argv)
    assert_one_error_line(code, out, err)
