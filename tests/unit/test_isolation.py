"""The isolation experiment's pure parts: Nova's downtime schedule, a run's
score from the client's records."""

import builtins
import types

import numpy as np
import pytest

from rtmig_nova.testbed import isolation
from rtmig_nova.testbed import traffic


def test_the_stock_downtime_schedule_is_novas():
    migration = pytest.importorskip("nova.virt.libvirt.migration")
    # Nova counts at least 2 GB, so a 128 MiB guest steps every 150 s
    steps = isolation.nova_downtime_steps(128)
    assert steps == list(migration.downtime_steps(2.0))
    assert steps[0] == (0, 50) and steps[1] == (150, 95)
    assert steps[-1] == (1500, 500)
    assert isolation.nova_downtime_steps(4096) == list(
        migration.downtime_steps(4.0))


def test_without_nova_the_same_schedule(monkeypatch):
    migration = pytest.importorskip("nova.virt.libvirt.migration")
    real_import = builtins.__import__

    def no_nova(name, *args, **kwargs):
        if name.startswith("nova"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_nova)
    for mib in (128, 3000, 8192):
        assert isolation.nova_downtime_steps(mib) == list(
            migration.downtime_steps(max(mib / 1024, 2.0)))


def _records(frames, per_frame=3, pause_after=None, pause_s=0.0):
    out = np.zeros(frames * per_frame, traffic.RECORD)
    k = np.repeat(np.arange(frames), per_frame)
    i = np.tile(np.arange(per_frame), frames)
    t = 5.0 + 0.04 * k + 1e-4 * i
    if pause_after is not None:
        t[k > pause_after] += pause_s
    out["frame"], out["index"], out["count"] = k, i, per_frame
    out["arrival_ns"] = (t * 1e9).astype(np.int64)
    return out


def test_a_run_is_scored_from_the_clients_records():
    setup = isolation.Setup(tolerance_s=0.01, max_downtime_s=0.1)
    check = types.SimpleNamespace(ok=True)
    measured = {"total_time_s": 9.5, "downtime_s": 0.2,
                "transferred_bytes": 1e8, "iterations": 4,
                "guest_check": check, "progress": [(0.05, 1000, 1)],
                "started_at": 3.0}
    row = isolation.score("stock", 2, setup,
                          _records(300, pause_after=120, pause_s=0.2),
                          measured, None, 12345)
    assert row["scenario"] == "stock" and row["run"] == 2
    assert row["frames"] == 300 and row["misses"] == 1
    assert row["lost_frames"] == 0
    assert row["max_gap_ms"] == pytest.approx(240, abs=0.5)
    assert row["downtime_ms"] == pytest.approx(200)
    assert row["max_downtime_ms"] == pytest.approx(100)
    assert row["integrity_ok"] is True and row["error"] == ""
    assert row["bulk_bytes"] == 12345
    assert set(isolation.FIELDS) <= set(row)
    # a migration that never finished still has the client's side
    row = isolation.score("auto-converge", 0, setup, _records(50), None,
                          "timed out", 0)
    assert row["total_time_s"] is None and row["error"] == "timed out"
    assert row["frames"] == 50 and row["misses"] == 0


def test_an_unknown_scenario_is_refused():
    with pytest.raises(ValueError, match="have stock, auto-converge"):
        isolation.run(None, None, "bogus")
