"""Property-based tests (hypothesis) of the input surfaces
tests/unit/test_input_fuzz.py does not cover, in its style and with its
judge (:func:`assert_clean`): ``rtmig reserve release`` (ids, state
directories), what ``rtmig experiment validate`` refuses before anything
real runs, QEMU trace files (:mod:`rtmig_nova.capture.trace`) and the
ledger a compute publishes for the scheduler
(:meth:`HostLedger.from_json`).

Nothing here touches the host: the undo of a released step is replaced by
a no-op, and an experiment that passes its checks stops where it would
plan its runs (counted as an answer).
"""

import json
import os
import warnings
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from rtmig_nova import bounds
from rtmig_nova.capture import trace
from rtmig_nova.model import ledger

from tests.unit.test_input_fuzz import (
    FUZZ, OUTCOMES, _json_values, _set, assert_clean, fuzz_text, options,
    rtmig, state_documents, valid)


class _Reached(BaseException):
    """The command got past its checks to the real work."""


# -- reserve release ----------------------------------------------------------

_IDS = st.one_of(
    st.sampled_from(["0123abcd", "nope", "a" * 128, "a" * 129, "..", ".",
                     "../0123abcd", "0123abcd.json", "-", "--all", "a/b",
                     "x\ny", " ", "~", "*"]),
    st.text(max_size=20), st.text(alphabet="0123abcd", min_size=1,
                                  max_size=10))


def _no_undo(record, connect=None):
    """Stands for a step's undo: reads nothing on the host."""


@settings(FUZZ, max_examples=100)
@given(data=st.data(), ident=_IDS,
       where=st.sampled_from(["dir"] * 4 + ["missing", "file", "long", "~",
                                            "nested-missing"]),
       garble=st.sampled_from(["no", "no", "no", "cut", "bytes", "none"]),
       others=st.integers(0, 2), every=st.booleans(), as_json=st.booleans())
def test_reserve_release(tmp_path, data, ident, where, garble, others,
                         every, as_json):
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    for old in os.listdir(state):
        os.unlink(state / old)
    if garble != "none":
        raw = json.dumps(data.draw(state_documents("0123abcd"))).encode()
        if garble == "cut":
            raw = raw[:data.draw(st.integers(0, len(raw)))]
        elif garble == "bytes":
            raw = data.draw(st.binary(max_size=100))
        (state / "0123abcd.json").write_bytes(raw)
    for i in range(others):
        (state / f"other{i}.json").write_text(json.dumps(
            {"version": 1, "id": f"other{i}", "label": "", "applied": []}))
    state_dir = {"dir": str(state), "missing": str(tmp_path / "none"),
                 "file": str(state / "other0.json") if others else
                 str(tmp_path), "long": str(tmp_path / ("d" * 300)),
                 "~": "~/nonexistent-rtmig-state",
                 "nested-missing": str(tmp_path / "a" / "b")}[where]
    argv = ["reserve", "release"] + (["--all"] if every else [ident])
    argv += ["--state-dir", state_dir] + (["--json"] if as_json else [])
    patches = [mock.patch.object(cls, "undo", staticmethod(_no_undo))
               for cls in _step_classes()]
    for p in patches:
        p.start()
    try:
        assert_clean(rtmig(*argv), argv)
    finally:
        for p in patches:
            p.stop()


def _step_classes():
    from rtmig_nova.enforce import reservation
    return list(reservation.STEP_KINDS.values())


# -- experiment validate: what is refused up front ----------------------------

_WORKLOAD_NAMES = ["idle", "video", "kv", "web", "ring", "bogus", "",
                   "video,video", " idle , kv ", ",", "VIDEO"]


def _workloads():
    return st.one_of(st.sampled_from(_WORKLOAD_NAMES),
                     st.lists(st.sampled_from(_WORKLOAD_NAMES),
                              max_size=4).map(",".join), fuzz_text())


def _rate_lists():
    rate = st.one_of(st.integers(1, 200).map(lambda n: f"{n}MiB/s"),
                     valid(bounds.BANDWIDTH), fuzz_text())
    return st.one_of(
        st.lists(rate, min_size=0, max_size=5).map(",".join),
        # Many rates: a list of runs the experiment could never finish.
        st.integers(1, 30000).map(lambda n: ",".join(["8MiB/s"] * n)))


@settings(FUZZ, max_examples=150)
@given(rest=options({
    "--workloads": _workloads(),
    "--bandwidths": _rate_lists(),
    "--repetitions": st.one_of(valid(bounds.REPETITIONS), fuzz_text()),
    "--downtime-limit": st.one_of(valid(bounds.DOWNTIME_LIMIT),
                                  st.sampled_from(["10s", "10.001s", "1ms"])),
    "--capture-duration": valid(bounds.CAPTURE_DURATION),
    "--calibration-runs": st.one_of(st.integers(0, 1000).map(str),
                                    fuzz_text()),
    "--output-dir": st.sampled_from(["out", "", "/dev/null", "a" * 300,
                                     "/nonexistent/x"])}),
       as_json=st.booleans())
def test_experiment_validate_refuses_up_front(tmp_path, rest, as_json):
    argv = ["experiment", "validate"] + rest + (["--json"] if as_json
                                                else [])

    def reached(workloads=None, bandwidths=None, repetitions=None):
        if workloads is not None:      # plan_runs: the work is bounded
            runs = repetitions * sum(
                len(w.bandwidths if bandwidths is None else bandwidths)
                for w in workloads)
            assert bounds.EXPERIMENT_RUNS.contains(runs), (argv, runs)
        raise _Reached()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        # Root or not, a valid request stops where the runs are planned.
        with mock.patch("os.geteuid", lambda: 0), \
                mock.patch("rtmig_nova.testbed.validation.plan_runs",
                           reached), \
                mock.patch("rtmig_nova.testbed.image.ensure_packages",
                           reached):
            try:
                result = rtmig(*argv)
            except _Reached:
                OUTCOMES.setdefault("experiment (reached the testbed)",
                                    [0, 0])[0] += 1
                return
    finally:
        os.chdir(cwd)
    assert assert_clean(result, argv) == 2


# -- QEMU trace files ---------------------------------------------------------

_OFFSETS = st.one_of(
    st.integers(0, 4096).map(lambda n: n * 4096),
    st.integers(0, 4096).map(lambda n: n * 4096),
    st.integers(0, 2 ** 64 - 1),
    st.sampled_from([2 ** 39, 2 ** 46, 2 ** 50, 2 ** 62 - 4096, 2 ** 62]))


_BLOCKS = [b"pc.ram", b"pc.ram", b"pc.ram", b"vga.vram", b"", b"a: b",
           b"/rom@etc/acpi/tables"]


@st.composite
def trace_lines(draw):
    """One line of a log-backend trace: mostly well formed, at any time
    and offset, sometimes cut or garbled."""
    tid = draw(st.integers(1, 99999))
    sec = draw(st.integers(0, 10 ** 12 - 1))
    usec = draw(st.integers(0, 999999))
    prefix = f"{tid}@{sec}.{usec:06d}:".encode()
    kind = draw(st.sampled_from(["page"] * 6 + ["sync"] * 2 + [
        "other", "nostamp", "garbage", "cut", "long"]))
    if kind == "page":
        offset = draw(_OFFSETS)
        block = draw(st.sampled_from(_BLOCKS))
        return prefix + b"ram_save_page " + block + \
            f": offset: 0x{offset:x} host: 0x7f0000000000".encode()
    if kind == "sync":
        n = draw(st.integers(0, 10 ** 20))
        return prefix + f"migration_bitmap_sync_end dirty_pages {n}".encode()
    if kind == "other":
        return prefix + b"migrate_set_state new state active"
    if kind == "nostamp":
        return b"ram_save_page pc.ram: offset: 0x1000 host: 0x1"
    if kind == "cut":
        whole = prefix + b"ram_save_page pc.ram: offset: 0x1000 host: 0x1"
        return whole[:draw(st.integers(0, len(whole)))]
    if kind == "long":
        return prefix + b"ram_save_page pc.ram" + b"x" * 5000
    return draw(st.binary(max_size=40)).replace(b"\n", b" ")


@st.composite
def migration_trace(draw):
    """The lines of one traced migration (syncs at rising times, the pages
    sent between them), some pages at any offset."""
    tid, t = 4242, draw(st.integers(0, 10 ** 9)) * 10 ** 6
    lines = []
    for _ in range(draw(st.integers(1, 5))):
        t += draw(st.integers(0, 3 * 10 ** 6))
        lines.append(f"{tid}@{t // 10 ** 6}.{t % 10 ** 6:06d}:"
                     f"migration_bitmap_sync_end dirty_pages "
                     f"{draw(st.integers(0, 10 ** 6))}".encode())
        for offset in draw(st.lists(_OFFSETS, max_size=8)):
            t += 1
            block = draw(st.sampled_from(_BLOCKS))
            lines.append(f"{tid}@{t // 10 ** 6}.{t % 10 ** 6:06d}:"
                         f"ram_save_page ".encode() + block +
                         f": offset: 0x{offset:x} host: 0x1".encode())
    return lines


@st.composite
def trace_bytes(draw):
    if draw(st.booleans()):
        lines = draw(migration_trace())
        for _ in range(draw(st.integers(0, 2))):
            lines.insert(draw(st.integers(0, len(lines))),
                         draw(trace_lines()))
    else:
        lines = draw(st.lists(trace_lines(), max_size=30))
    data = b"\n".join(lines) + (b"\n" if draw(st.integers(0, 4)) else b"")
    return data


@settings(FUZZ, max_examples=200)
@given(data=trace_bytes(), page_size=st.sampled_from([4096, 65536]),
       total=st.one_of(st.none(), st.integers(-1, 2 ** 40)),
       chunk=st.integers(1, 64))
def test_trace_parsers_raise_only_trace_errors(data, page_size, total,
                                               chunk):
    """What ``rtmig capture`` reads from QEMU: a TraceError (one line) or a
    profile of a bounded guest; never another exception or an allocation
    of the offsets' size."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            p = trace.parse_trace([data[i:i + chunk] for i in
                                   range(0, len(data), chunk)],
                                  page_size=page_size)
            assert len(p.other_blocks) <= trace.MAX_OTHER_BLOCKS + 1
            if p.max_page >= 0:
                assert p.max_page < bounds.MAX_TRACED_PAGES
                p.never_sent(p.max_page + 1)
            prof = trace.profile_from_trace(data, page_size=page_size,
                                            total_pages=total)
        except trace.TraceError as e:
            assert "\n" not in str(e) and len(str(e)) < 500
        else:
            assert 0 < prof.memory_bytes <= bounds.MAX_GUEST_MEMORY


# -- the scheduler's ledger ---------------------------------------------------


def _ledger_doc():
    cap = ledger.HostCapacity(cpus=4, bound=0.9, link=1.25e9,
                              migration_link=6e8, migration_cpu=0.2)
    vms = [ledger.VMEntry("u1", 2, 0.2, 1e6, 12.5),
           ledger.VMEntry("u2", 1, 0.5, 0.0, float("inf"))]
    return json.loads(ledger.HostLedger(cap, vms).to_json())


_LEDGER_FIELDS = [("v",), ("capacity",), ("capacity", "cpus"),
                  ("capacity", "bound"), ("capacity", "link"),
                  ("capacity", "migration_link"),
                  ("capacity", "migration_cpu"),
                  ("capacity", "max_evacuation"), ("vms",), ("loads",)]
_BIG = st.sampled_from([10 ** 400, -10 ** 400, 2 ** 1100, "HUGE",
                        "NaN", "Infinity", 1e308, True, None, "x" * 5000])


@st.composite
def ledger_text(draw):
    doc = _ledger_doc()
    for path in draw(st.lists(st.sampled_from(_LEDGER_FIELDS), max_size=3,
                              unique=True)):
        _set(doc, path, draw(st.one_of(_json_values(), _BIG)))
    if draw(st.booleans()):
        row = draw(st.integers(0, 1))
        col = draw(st.integers(0, 4))
        doc["vms"] = list(doc["vms"]) if isinstance(doc.get("vms"), list) \
            else [[None] * 5, [None] * 5]
        doc["vms"] += [[None] * 5] * max(0, 2 - len(doc["vms"]))
        if isinstance(doc["vms"][row], list) and \
                len(doc["vms"][row]) == 5:
            doc["vms"][row] = list(doc["vms"][row])
            doc["vms"][row][col] = draw(st.one_of(_json_values(), _BIG))
    if draw(st.booleans()) and isinstance(doc.get("loads"), list) and \
            doc["loads"]:
        doc["loads"][0] = draw(st.one_of(_json_values(), _BIG))
    text = json.dumps(doc)
    for name in ("NaN", "Infinity"):
        text = text.replace(f'"{name}"', name)      # as Python writes them
    # More digits than json.dumps writes (Python's int limit).
    text = text.replace('"HUGE"', "9" * 5000)
    how = draw(st.sampled_from(["plain"] * 6 + ["cut", "deep", "bytes"]))
    if how == "cut":
        text = text[:draw(st.integers(0, len(text)))]
    elif how == "deep":
        depth = draw(st.sampled_from([33, 5000, 200000]))
        text = '{"v": 1, "capacity": ' + "[" * depth + "]" * depth + "}"
    elif how == "bytes":
        text = draw(st.text(max_size=50))
    return text


@settings(FUZZ, max_examples=300)
@given(text=ledger_text())
def test_ledger_from_json_raises_only_ledger_errors(text):
    """The scheduler filter catches LedgerError (the host is refused): no
    other exception may leave from_json, and a ledger that parses has
    finite sums."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            led = ledger.HostLedger.from_json(text)
        except ledger.LedgerError as e:
            assert "\n" not in str(e) and len(str(e)) < 500
            return
        assert 0 <= led.net_reserved < float("inf")
        assert led.evacuation_time >= 0
        assert all(0 <= vm.utilisation <= 1 for vm in led.vms)
        json.loads(led.to_json())


def test_ledger_round_trips():
    doc = _ledger_doc()
    led = ledger.HostLedger.from_json(json.dumps(doc))
    assert json.loads(led.to_json()) == doc


def test_the_surfaces_answer_valid_input_too(tmp_path):
    """The properties above could hold by refusing everything."""
    state = tmp_path / "s"
    state.mkdir()
    for ident in ("0123abcd", "b" * 128):
        (state / f"{ident}.json").write_text(json.dumps(
            {"version": 1, "id": ident, "label": "", "applied": []}))
    argv = ["reserve", "release", "0123abcd", "--state-dir", state]
    assert assert_clean(rtmig(*argv), argv) == 0
    argv = ["reserve", "release", "--all", "--state-dir", state, "--json"]
    result = rtmig(*argv)
    assert assert_clean(result, argv) == 0
    assert json.loads(result[1])["released"] == ["b" * 128]
    with mock.patch("os.geteuid", lambda: 0), mock.patch(
            "rtmig_nova.testbed.validation.plan_runs",
            side_effect=_Reached()):
        try:
            rtmig("experiment", "validate", "--repetitions", "1000",
                  "--workloads", "video", "--bandwidths", "8MiB/s")
        except _Reached:
            pass
        else:
            raise AssertionError("a valid experiment was refused")
    led = ledger.HostLedger.from_json(json.dumps(_ledger_doc()))
    assert led.net_reserved == 1e6
