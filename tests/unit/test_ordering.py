"""Address order against cold-first order under both dirty logs
(rtmig_nova.model.ordering, ``rtmig compare-orders``)."""

import json

import numpy as np
import pytest

from rtmig_nova.model import DirtyProfile, ordering, predict
from rtmig_nova.model.precopy import MigrationSettings
from tests.cli_helpers import assert_one_error_line, run

MIB = 2 ** 20


@pytest.fixture(scope="module")
def guest():
    # 64 MiB, 2000 pages written at 0.1 to 100 writes/s, scattered
    rng = np.random.default_rng(1)
    rates = np.zeros(16384)
    hot = rng.choice(16384, 2000, replace=False)
    rates[hot] = 10 ** rng.uniform(-1, 2, hot.size)
    return DirtyProfile.from_rates(rates, zero_pages=4000)


def test_the_four_cases_are_the_models_own_predictions(guest):
    rows = ordering.compare("g", guest, MigrationSettings(64 * MIB, 0.05))
    assert [(r.dirty_log, r.order) for r in rows] == list(ordering.CASES)
    for r in rows:
        pred = predict(guest, 64 * MIB, 0.05, dirty_log=r.dirty_log,
                       order=r.order)
        assert r.converges == pytest.approx(pred.converges)
        assert r.total_s == pytest.approx(pred.total_time.quantile(0.5))
        assert r.sent_bytes == pytest.approx(pred.bytes_sent.quantile(0.5))


def test_cold_first_helps_where_sending_clears_the_log(guest):
    rows = ordering.compare("g", guest, MigrationSettings(40 * MIB, 0.05))
    rows = ordering.least_bandwidths(rows, guest, 2.0, 0.05, 0.95, 1e9)
    effect = ordering.effect(rows)
    clear = effect[("g", "clear")]
    assert clear["sent_bytes"] < 0.95 and clear["total_s"] < 0.95
    assert clear["least_bandwidth"] < 1.0
    # under a per-round sync the order cannot spare a write: the plan
    # needs the same bandwidth (and at 40 MiB/s neither converges)
    assert effect[("g", "sync")]["least_bandwidth"] == 1.0
    assert effect[("g", "sync")]["total_s"] is None


def test_compare_orders_prints_every_case_and_the_effect(capsys):
    code, out, err = run(capsys, "compare-orders", "--bandwidth", "40MiB/s",
                         "--downtime-limit", "50ms", "--deadline", "20s",
                         "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert [(r["dirty_log"], r["order"]) for r in doc["rows"]] == \
        list(ordering.CASES)
    assert {e["dirty_log"] for e in doc["effect"]} == {"sync", "clear"}
    code, out, err = run(capsys, "compare-orders", "--bandwidth", "40MiB/s",
                         "--downtime-limit", "50ms")
    assert code == 0 and "Cold-first against address order" in out


@pytest.mark.parametrize("argv", [
    ["--downtime-limit", "50ms"],
    ["--bandwidth", "40MiB/s", "--downtime-limit", "50ms", "--order",
     "rate"],
    ["--bandwidth", "0", "--downtime-limit", "50ms"],
    ["--bandwidth", "40MiB/s", "--downtime-limit", "50ms", "--profile",
     "/nonexistent.json"],
])
def test_compare_orders_refuses_bad_input_in_one_line(capsys, argv):
    assert_one_error_line(*run(capsys, "compare-orders", *argv))


@pytest.mark.parametrize("profiles", [
    ["--profile", "builtin:default", "docs/isolation/profile.json"],
    ["--profile", "builtin:default", "--profile",
     "docs/isolation/profile.json"],
])
def test_compare_orders_takes_several_profiles_either_way(capsys, profiles):
    # a shell's brace expansion gives one --profile then several paths
    code, out, err = run(capsys, "compare-orders", "--bandwidth", "40MiB/s",
                         "--downtime-limit", "50ms", "--json", *profiles)
    assert code == 0, err
    names = {r["workload"] for r in json.loads(out)["rows"]}
    assert names == {"builtin:default", "docs/isolation/profile.json"}
