"""rtmig_nova.enforce.reservation's state directory: each state file is
taken or refused on its own (issue 12), and the callers in Nova's compute
service see the good ones.  Nothing here touches the host: the records
have no steps, or steps whose undo is mocked."""

import json
import logging
import os

import pytest

from rtmig_nova import bounds
from rtmig_nova import conf
from rtmig_nova.compute import vm_reservation
from rtmig_nova.enforce import deadline
from rtmig_nova.enforce import reservation


def _record(state, ident, label="", applied=()):
    doc = {"version": 1, "id": ident, "label": label, "created": 1e9,
           "applied": list(applied)}
    (state / f"{ident}.json").write_text(json.dumps(doc))
    return doc


BAD = {
    "cut.json": b'{"version": 1, "id": "cut"',
    "binary.json": b"\xff\xfe\x00",
    "list.json": b"[]",
    "wrongid.json": json.dumps({"version": 1, "id": "other",
                                "applied": []}).encode(),
    "version.json": json.dumps({"version": 2, "id": "version",
                                "applied": []}).encode(),
    "steps.json": json.dumps({"version": 1, "id": "steps",
                              "applied": [{"kind": "x"}]}).encode(),
    "deep.json": b"[" * 1000 + b"]" * 1000,
    "a b.json": b"{}",
}


@pytest.fixture
def state(tmp_path):
    d = tmp_path / "state"
    d.mkdir()
    return d


def test_scan_takes_the_good_files_and_refuses_each_bad_one(state):
    good = [_record(state, "a1", "x"), _record(state, "z9")]
    for name, data in BAD.items():
        (state / name).write_bytes(data)
    (state / "dir.json").mkdir()
    (state / ".tmp-abc").write_text("{")        # a write in progress
    (state / "notes.txt").write_text("{")       # not a state file
    docs, refused = reservation.scan(str(state))
    assert docs == good
    by_name = {os.path.basename(r.path): r.reason for r in refused}
    assert sorted(by_name) == sorted(list(BAD) + ["dir.json"])
    for r in refused:
        assert "\n" not in str(r) and str(r).startswith(r.path + ": ")
    assert by_name["cut.json"].startswith("unreadable state file (not JSON")
    assert by_name["wrongid.json"] == \
        "not a reservation state file (its id is not its file name)"
    assert "nested deeper than 32 levels" in by_name["deep.json"]
    assert by_name["a b.json"] == "its name is no reservation id"
    assert "Is a directory" in by_name["dir.json"]


def test_a_file_beyond_the_size_limit_is_refused_alone(state, monkeypatch):
    monkeypatch.setattr(bounds, "MAX_DOCUMENT_BYTES", 1000)
    good = _record(state, "ok")
    (state / "big.json").write_text(" " * 1001)
    docs, [refused] = reservation.scan(str(state))
    assert docs == [good]
    assert refused.reason == ("unreadable state file (larger than 1000 "
                              "bytes, the limit for this kind of file)")


def test_load_logs_each_refused_file(state, caplog):
    good = _record(state, "ok")
    (state / "bad.json").write_text("{")
    with caplog.at_level(logging.WARNING, "rtmig_nova.enforce.reservation"):
        assert reservation.load(str(state)) == [good]
    [rec] = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert rec.levelno == logging.WARNING
    assert str(state / "bad.json") in rec.getMessage()
    assert "not JSON" in rec.getMessage()


def test_a_missing_state_dir_is_empty_an_unlistable_one_an_error(tmp_path):
    assert reservation.scan(str(tmp_path / "none")) == ([], [])
    afile = tmp_path / "f"
    afile.write_text("")
    with pytest.raises(reservation.ReservationError,
                       match="cannot list the state directory"):
        reservation.load(str(afile))


def test_release_reads_only_its_own_file(state):
    _record(state, "ok")
    (state / "bad.json").write_text("{")
    assert reservation.release("ok", str(state)) is True
    assert reservation.release("ok", str(state)) is False
    with pytest.raises(reservation.ReservationError,
                       match=r"bad.json: unreadable state file"):
        reservation.release("bad", str(state))
    assert os.listdir(state) == ["bad.json"]


@pytest.mark.parametrize("ident", ["", "../x", "a/b", ".x", "a\0b", "a b",
                                   "x" * 129, None, 5])
def test_release_refuses_what_is_no_id(state, ident):
    with pytest.raises(reservation.ReservationError,
                       match="is no reservation id"):
        reservation.release(ident, str(state))


def test_recover_releases_the_readable_ones(state, monkeypatch):
    undone = []
    monkeypatch.setattr(reservation.DeadlineStep, "undo", staticmethod(
        lambda record, connect=None: undone.append(record["tid"])))
    step = {"kind": "deadline", "record": {"tid": 7, "start": 1,
                                           "previous": [0] * 7}}
    _record(state, "a", "p one", [step])
    _record(state, "b", "q two")
    (state / "bad.json").write_text("[]")
    assert reservation.recover(str(state), label_prefix="p ") == ["a"]
    assert undone == [7]
    assert reservation.recover(str(state)) == ["b"]
    assert os.listdir(state) == ["bad.json"]


def test_recover_goes_on_past_one_that_cannot_be_undone(
        state, monkeypatch):
    def undo(record, connect=None):
        if record["tid"] == 7:
            raise OSError("no such thread")
    monkeypatch.setattr(reservation.DeadlineStep, "undo", staticmethod(undo))

    def step(tid):
        return {"kind": "deadline", "record": {"tid": tid, "start": 1,
                                               "previous": [0] * 7}}
    _record(state, "a", "p one", [step(7)])
    _record(state, "b", "p two", [step(8)])
    with pytest.raises(reservation.ReservationError) as e:
        reservation.recover(str(state))
    assert str(e.value).startswith("released b; ")
    assert "a" in str(e.value) and "\n" not in str(e.value)
    # what could not be undone stays recorded, the rest is gone
    assert os.listdir(state) == ["a.json"]


def test_nova_vm_records_survive_a_bad_neighbour(state):
    """vm_reservation's _records saw [] for the whole host when one file
    was bad (and so released nothing, and reserved twice)."""
    conf.CONF.set_override("reservation_state_dir", str(state), "rtmig")
    try:
        good = _record(state, "r1", "nova-vm h u1")
        _record(state, "r2", "nova-vm other u2")
        (state / "bad.json").write_text("{")
        vms = vm_reservation.RTVMReservations("h")
        assert vms._records() == [good]
        assert vms._records("u1") == [good]
        assert vms._records("u2") == []
    finally:
        conf.CONF.clear_override("reservation_state_dir", "rtmig")


def test_running_steps_wait_for_the_thread_then_take_both(monkeypatch):
    from rtmig_nova.enforce import libvirt_controls
    threads = []
    monkeypatch.setattr(libvirt_controls, "qemu_threads",
                        lambda dom: list(threads))
    monkeypatch.setattr(libvirt_controls, "qemu_pid", lambda dom: 4242)
    dl = (2_000_000, 10_000_000, 10_000_000)
    assert reservation.running_migration_steps(
        "dom", dl, 65536, "10.0.0.2") == []
    threads[:] = [(4242, "qemu-kvm"), (4250, "CPU 0/TCG"),
                  (4260, "mig/src/main")]
    deadline_step, queue_step = reservation.running_migration_steps(
        "dom", dl, 65536, "10.0.0.2", (49152, 49215))
    assert (deadline_step.kind, deadline_step.tid) == ("deadline", 4260)
    assert (deadline_step.runtime_ns, deadline_step.deadline_ns,
            deadline_step.period_ns) == dl
    assert deadline_step.flags == 0
    reclaiming, = reservation.running_migration_steps(
        "dom", dl, thread_flags=deadline.SCHED_FLAG_RECLAIM)
    assert reclaiming.flags == deadline.SCHED_FLAG_RECLAIM
    assert queue_step == reservation.SendQueueStep(
        4242, "10.0.0.2", (49152, 49215), 65536)
    # each alone
    assert [s.kind for s in reservation.running_migration_steps(
        "dom", None, 65536)] == ["send-queue"]
    assert [s.kind for s in reservation.running_migration_steps(
        "dom", dl, 0)] == ["deadline"]
