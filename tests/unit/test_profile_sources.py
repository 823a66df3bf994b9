"""rtmig_nova.compute.profile_sources: the order sources are asked in,
and the dirty-rate source's start-then-read on a stand-in libvirt domain
(the real one: tests/testbed/test_rt_live_migration_libvirt.py)."""

import time
import types

import pytest

from rtmig_nova import conf
from rtmig_nova.compute import profile_sources

CONF = conf.CONF
MIB = 2 ** 20


class _Domain:
    """What the source calls on a libvirt domain; the calculation is
    measured ``delay`` s after it starts (None: never)."""

    def __init__(self, delay, mib_per_s=5, fail=None):
        self.delay = delay
        self.mib_per_s = mib_per_s
        self.fail = fail
        self.started = []

    def UUIDString(self):
        return "u1"

    def maxMemory(self):
        return 256 * 1024               # KiB

    def startDirtyRateCalc(self, seconds, flags):
        if self.fail:
            raise self.fail
        self.started.append((time.monotonic(), seconds))

    def connect(self):
        return self

    def getAllDomainStats(self, stats, flags=0):
        values = {"dirtyrate.calc_status": 0}
        if self.started and self.delay is not None and \
                time.monotonic() - self.started[-1][0] >= self.delay:
            values = {"dirtyrate.calc_status": 2,
                      "dirtyrate.megabytes_per_second": self.mib_per_s}
        return [(self, values)]


def _guest(dom):
    return types.SimpleNamespace(_domain=dom)


INSTANCE = types.SimpleNamespace(uuid="u1")


def test_a_measured_rate_becomes_a_coarse_profile():
    dom = _Domain(delay=0.0)
    src = profile_sources.LibvirtDirtyRate()
    assert src.find(INSTANCE, None, _guest(dom), wait=True) is None
    src.prepare(INSTANCE, _guest(dom))
    src.prepare(INSTANCE, _guest(dom))     # a second check: still one
    assert len(dom.started) == 1
    found = src.find(INSTANCE, None, _guest(dom), wait=True)
    assert found.source == "dirty_rate"
    assert found.profile.coarse
    assert found.profile.memory_bytes == 256 * MIB
    assert found.profile.metadata["aggregate_dirty_rate_bytes_per_s"] == \
        5 * MIB
    # read once: the next migration measures again
    assert src.find(INSTANCE, None, _guest(dom), wait=True) is None


def test_the_start_waits_at_most_its_budget():
    dom = _Domain(delay=None)                   # never measured
    src = profile_sources.LibvirtDirtyRate()
    src.prepare(INSTANCE, _guest(dom))
    t0 = time.monotonic()
    assert src.find(INSTANCE, None, _guest(dom), wait=True) is None
    waited = time.monotonic() - t0
    assert profile_sources.DIRTY_RATE_MAX_WAIT - 0.05 <= waited
    assert waited < profile_sources.DIRTY_RATE_MAX_WAIT + 0.5


def test_a_result_still_to_come_is_waited_for():
    dom = _Domain(delay=0.3)
    src = profile_sources.LibvirtDirtyRate()
    src.prepare(INSTANCE, _guest(dom))
    assert src.find(INSTANCE, None, _guest(dom), wait=False) is None
    found = src.find(INSTANCE, None, _guest(dom), wait=True)
    assert found is not None and found.profile.coarse


def test_a_libvirt_without_the_calculation_leaves_it_to_the_next():
    dom = _Domain(delay=0.0, fail=AttributeError("startDirtyRateCalc"))
    src = profile_sources.LibvirtDirtyRate()
    src.prepare(INSTANCE, _guest(dom))
    assert src.find(INSTANCE, None, _guest(dom), wait=True) is None
    assert src.find(INSTANCE, None, None, wait=True) is None


def test_sources_load_in_the_configured_order():
    names = ["flavor", "instance", "dirty_rate"]
    assert [s.name for s in profile_sources.load(names)] == names
    request = types.SimpleNamespace(profile="builtin:video-4g")
    flavor_src = profile_sources.load(["flavor"])[0]
    assert flavor_src.find(INSTANCE, request, None, False).ref == \
        "builtin:video-4g"


@pytest.mark.parametrize("names, message", [
    ([], "is empty"),
    (["instance", "nope"], "unknown nope; available: dirty_rate, flavor, "
                           "instance"),
])
def test_unknown_sources_are_refused(names, message):
    with pytest.raises(profile_sources.SourceError, match=message):
        profile_sources.load(names)


def test_the_instance_store(tmp_path):
    CONF.set_override("instance_profile_dir", str(tmp_path), "rtmig")
    try:
        src = profile_sources.InstanceStore()
        assert src.find(INSTANCE, None, None, False) is None
        (tmp_path / "u1.json.gz").write_bytes(b"")
        assert src.find(INSTANCE, None, None, False).ref == str(
            tmp_path / "u1.json.gz")
    finally:
        CONF.clear_override("instance_profile_dir", "rtmig")
