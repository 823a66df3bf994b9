"""The isolation experiment's pure parts: Nova's downtime schedule, a run's
score from the client's records, the rtmig scenario's request, plan and
link classes."""

import builtins
import os
import types

import numpy as np
import pytest

from rtmig_nova.enforce import netshape
from rtmig_nova.model import precopy
from rtmig_nova.model import profile as profile_mod
from rtmig_nova.testbed import isolation
from rtmig_nova.testbed import traffic

MIB = 1 << 20


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
                "started_at": 3.0, "paused_at": 9.82, "resumed_at": 10.0}
    row = isolation.score("stock", 2, setup,
                          _records(300, pause_after=120, pause_s=0.2),
                          measured, None, 12345)
    # frame 121 completes at 10.0402 (9.84 + 0.2 + 2 datagrams' 0.1 ms)
    assert row["paused_ms"] == pytest.approx(180)
    assert row["resume_to_frame_ms"] == pytest.approx(40.2, abs=0.01)
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
    with pytest.raises(ValueError, match="have stock, auto-converge, rtmig"):
        isolation.run(None, None, "bogus")
    with pytest.raises(ValueError, match="plans from a profile"):
        isolation.run(None, None, "rtmig")


def test_the_rt_flavor_is_parsed_as_novas_validators_parse_it():
    req = isolation.Setup(deadline_s=25, max_downtime_s=0.08,
                          vcpu_reservation="3ms/10ms", confidence=0.9,
                          stream_rate=512e3).request()
    assert req.deadline == pytest.approx(25)
    assert req.max_downtime == pytest.approx(0.08)
    assert (req.runtime, req.period) == pytest.approx((0.003, 0.01))
    assert req.confidence == pytest.approx(0.9)
    assert req.net_rate == pytest.approx(512e3)
    assert req.reclaim is True
    assert isolation.Setup(vcpu_reclaim=False).request().reclaim is False


def _video_like(busy_pages=232, rate=3.125, mib=128):
    # the video workload's ring: 8 frames of 320x240x3/2 bytes, each page
    # rewritten every 8 x 40 ms
    rates = np.zeros(mib * MIB // 4096)
    rates[1000:1000 + busy_pages] = rate
    return profile_mod.DirtyProfile.from_rates(rates)


@pytest.mark.parametrize("qemu", ["7.2", "10.0"])
def test_the_rtmig_plan_and_its_classes_fit_the_link(qemu):
    setup = isolation.Setup()
    link = isolation.migration_link(setup, qemu)
    assert link % MIB == 0

    # what QEMU sends at that bandwidth fits the link's rest; 1 MiB/s more
    # would not
    def wire(bw):
        return netshape.frame_rate(precopy.send_rate(bw, 4096,
                                                     qemu_version=qemu))
    rest = setup.link_rate - setup.stream_rate - isolation.RPC_RATE
    assert wire(link) <= rest < wire(link + MIB)
    pl = isolation.plan(_video_like(), setup, qemu)
    assert pl.feasible and pl.bandwidth <= link
    assert pl.downtime_limit <= setup.max_downtime_s
    assert pl.prediction.total_time.quantile(0.95) <= setup.deadline_s
    shaping = isolation.link_shaping(setup, pl, qemu)
    netshape.validate(shaping, check_host=False)
    rates = {tc.name: tc.rate for tc in shaping.reserved}
    assert rates == {"rt-stream": setup.stream_rate,
                     "libvirt-rpc": isolation.RPC_RATE}
    # the migration is held to what QEMU sends under its cap, no more
    assert shaping.migration.ceil is None
    assert shaping.migration.rate == pytest.approx(netshape.frame_rate(
        precopy.send_rate(pl.bandwidth, 4096, qemu_version=qemu)))
    stream = shaping.reserved[0]
    assert stream.match.dst_ports == (traffic.FRAME_PORT,) * 2
    assert stream.burst == setup.stream_burst


def test_an_impossible_request_is_refused_before_anything_starts():
    setup = isolation.Setup(deadline_s=2.0)
    with pytest.raises(isolation.PlanInfeasible, match="no plan within 2s"):
        isolation.plan(_video_like(), setup, "10.0")
    with pytest.raises(isolation.PlanInfeasible, match="not 1 MiB/s"):
        isolation.migration_link(isolation.Setup(stream_rate=12.5e6), "10.0")


def test_the_rtmig_row_carries_the_plan():
    setup = isolation.Setup()
    pl = isolation.plan(_video_like(), setup, "10.0")
    measured = {"total_time_s": 14.0, "downtime_s": 0.03,
                "downtime_limit_s": pl.downtime_limit,
                "bandwidth_limit_bytes_per_s": pl.bandwidth,
                "guest_check": types.SimpleNamespace(ok=True)}
    row = isolation.score("rtmig", 0, setup, _records(100), measured, None,
                          0, pl)
    assert row["predicted_total_s"] == pytest.approx(
        pl.prediction.total_time.quantile(0.5))
    assert row["predicted_total_hi_s"] >= row["predicted_total_s"]
    assert row["downtime_limit_ms"] == pytest.approx(pl.downtime_limit * 1e3)
    assert row["bandwidth_limit_bytes_per_s"] == pl.bandwidth
    stock = isolation.score("stock", 0, setup, _records(100), measured,
                            None, 0)
    assert stock["predicted_total_s"] is None


# -- the experiment: resume, report -----------------------------------------

class _Bed:
    def __init__(self):
        self.down_called = 0

    def down(self):
        self.down_called += 1


def _fake_run(calls, fail=(), timed_out=()):
    def run(bed, boot_files, scenario, setup, index, out_dir, log, profile,
            calibration):
        calls.append((scenario, index))
        if (scenario, index) in fail:
            raise isolation.hosts.TestbedError("guest did not boot")
        records = _records(200, pause_after=100, pause_s=0.3)
        records.tofile(os.path.join(out_dir, "%s-%d.frames"
                                    % (scenario, index)))
        pl = isolation.plan(_video_like(), setup, "10.0") \
            if scenario == "rtmig" else None
        measured = {"total_time_s": 12.0 + index, "downtime_s": 0.05,
                    "guest_check": types.SimpleNamespace(ok=True),
                    "progress": [(0.0, 0, 1), (0.5, 3e6, 1), (1.0, 6e6, 2)],
                    "started_at": 9.0, "paused_at": 8.95, "resumed_at": 9.2,
                    "vcpu_cpu": [(9.0, 1.0, None), (9.5, 1.05, 0.0),
                                 (10.0, None, 0.04)]}
        error = None
        if (scenario, index) in timed_out:
            # as run() records a migration it aborted: no start, no
            # progress, the abort time as its total
            measured = {"total_time_s": 90.0, "started_at": None,
                        "vcpu_cpu": measured["vcpu_cpu"]}
            error = "timed out: aborted after 90 s"
        return isolation.score(scenario, index, setup, records, measured,
                               error, 1000, pl)
    return run


def test_the_experiment_resumes_from_its_csv(tmp_path, monkeypatch):
    beds = []
    monkeypatch.setattr(isolation.hosts, "up",
                        lambda *a, **k: beds.append(_Bed()) or beds[-1])
    monkeypatch.setattr(isolation, "capture",
                        lambda bed, boot, setup, log: _video_like())
    calls = []
    monkeypatch.setattr(isolation, "run",
                        _fake_run(calls, fail={("stock", 1)}))
    runs = isolation.plan_runs(["stock", "rtmig"], 2)
    assert runs == [("stock", 0), ("rtmig", 0), ("stock", 1), ("rtmig", 1)]
    out = str(tmp_path / "out")
    rows = isolation.run_experiment(out, str(tmp_path / "w"), None, runs)
    assert calls == runs and beds[0].down_called == 1
    assert rows[("stock", 1)]["error"] == "TestbedError: guest did not boot"
    assert os.path.exists(os.path.join(out, isolation.PROFILE_NAME))
    # restarted: only the failed run again, the profile reused
    calls.clear()
    monkeypatch.setattr(isolation, "capture", None)
    monkeypatch.setattr(isolation, "run", _fake_run(calls))
    rows = isolation.run_experiment(out, str(tmp_path / "w"), None, runs)
    assert calls == [("stock", 1)]
    assert not any(r["error"] for r in rows.values())
    on_disk = isolation.read_rows(out)
    assert sorted(on_disk) == sorted(runs)
    assert on_disk[("rtmig", 1)]["total_time_s"] == 13.0
    # all done: nothing brought up
    calls.clear()
    isolation.run_experiment(out, str(tmp_path / "w"), None, runs)
    assert calls == [] and len(beds) == 2
    # a stock run that timed out (no start, no progress: the report's
    # timeline takes the scenario's next run)
    rows_path = os.path.join(out, isolation.CSV_NAME)
    os.remove(rows_path)
    monkeypatch.setattr(isolation, "run",
                        _fake_run(calls, timed_out={("stock", 0)}))
    rows = isolation.run_experiment(out, str(tmp_path / "w"), None, runs)
    assert rows[("stock", 0)]["error"].startswith("timed out")

    pytest.importorskip("matplotlib")
    from rtmig_nova.testbed import isolation_report
    paths, summ = isolation_report.write_report(out, {"date": "today"})
    assert all(os.path.getsize(p) > 0 for p in paths)
    s = summ["rtmig"]
    assert s["runs"] == 2 and s["failed"] == 0 and s["deadline_met"] == 2
    # the 300 ms pause is a 340 ms gap: beyond the 100 ms bound
    assert s["gap_within_bound"] == 0
    assert s["frames"] == 400 and s["misses"] == 2
    assert s["paused_ms"] == pytest.approx(250)
    verdict = isolation_report.verdict(summ)
    assert verdict == {"deadline met in every run": True,
                       "freeze within the downtime bound in every run":
                           False,
                       "frame misses at most 1%": True}
    with open(os.path.join(out, isolation_report.REPORT_MD)) as f:
        md = f.read()
    assert "| rtmig | 2 | 2 | 0 | 2 / 400 (0.50%)" in md


def test_an_unknown_scenario_is_not_planned():
    with pytest.raises(ValueError, match="have stock"):
        isolation.plan_runs(["stock", "nova"], 1)
    with pytest.raises(ValueError):
        isolation.plan_runs([], 1)


def test_a_timed_out_run_is_a_result_and_a_failed_one_fails_every(
        tmp_path, monkeypatch):
    from rtmig_nova.testbed import isolation_report
    setup = isolation.Setup()
    out = str(tmp_path)
    os.makedirs(os.path.join(out, isolation.RUNS_DIR))
    rows = {}
    for index in range(2):
        row = isolation.score("rtmig", index, setup, _records(100),
                              {"total_time_s": 10.0}, None, 0)
        rows[("rtmig", index)] = {k: row.get(k) for k in isolation.FIELDS}
    rows[("rtmig", 1)]["error"] = "timed out: aborted"
    rows[("rtmig", 1)]["total_time_s"] = 85.0
    isolation._write_rows(out, rows)
    back = isolation.read_rows(out)
    assert back[("rtmig", 0)]["run"] == 0 and back[("rtmig", 0)][
        "frames"] == 100
    # a timed-out migration is measured (not done again) and missed
    assert isolation.measured(back[("rtmig", 1)])
    summ = isolation_report.summary(back)["rtmig"]
    assert summ["runs"] == 2 and summ["deadline_met"] == 1
    assert summ["total_time_s"] == 10.0
    assert not isolation_report.verdict({"rtmig": summ})[
        "deadline met in every run"]
    # a run that could not be scored fails the "every run" targets
    back[("rtmig", 1)] = isolation._failed_row("rtmig", 1, setup, "boom")
    summ = isolation_report.summary(back)["rtmig"]
    assert summ["runs"] == 1 and summ["failed"] == 1
    assert isolation_report.verdict({"rtmig": summ}) == {
        "deadline met in every run": False,
        "freeze within the downtime bound in every run": False,
        "frame misses at most 1%": True}


def test_rows_it_did_not_write_are_done_again(tmp_path):
    path = tmp_path / isolation.CSV_NAME
    head = ",".join(isolation.FIELDS)
    good = isolation.score("stock", 0, isolation.Setup(), _records(50),
                           None, None, 0)
    line = ",".join("" if good[k] is None else str(good[k])
                    for k in isolation.FIELDS)
    path.write_text("\n".join([head, line, line.replace("stock,0,", "stock,"
                                                        "1.5,", 1),
                               line.replace("stock,0,", "nova,2,", 1),
                               line.replace("stock,0,50,", "stock,3,x,", 1),
                               line.replace("stock,0,", "stock,inf,", 1)]))
    assert sorted(isolation.read_rows(str(tmp_path))) == [("stock", 0)]
    path.write_bytes(b"scenario,run\n\xff\xfe,\x00")
    with pytest.raises(ValueError):
        isolation.read_rows(str(tmp_path))


def test_a_stream_that_stops_is_an_endless_freeze():
    setup = isolation.Setup()
    rec = _records(100)
    last = rec["arrival_ns"].max() / 1e9
    row = isolation.score("stock", 0, setup, rec, None, None, 0,
                          stream_end_s=last + 5.0)
    assert row["max_gap_ms"] == pytest.approx(5000, abs=1)
    none = isolation.score("stock", 0, setup, rec[:0], None, None, 0,
                           stream_end_s=last)
    assert none["max_gap_ms"] == float("inf") and none["frames"] == 0
