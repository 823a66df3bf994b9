"""The analytic model's survivor cells (issue #10): P(converged within N
rounds) must not depend on how many cells hold the survivors.

Near a convergence cliff the rounds distribution turns on which side of the
epoch's 100 ms steps each survivor is: from a count just above a step the
epoch is 100 ms longer and leaves about a window of pages fewer pending.
Cells that straddled a step, slopes taken across it and survivors of
several cells merged into one normal made the answer move with the number
of cells: 0.86, 0.65, 0.56, 0.63, 0.67 for 12 .. 192 cells on the 64 GiB
benchmark guest below, against 0.62 simulated.
"""

import numpy as np
import pytest

from rtmig_nova.model import DirtyProfile, MigrationSettings
from rtmig_nova.model import analytic, montecarlo
from rtmig_nova.model.profile import bin_rates

PAGE = 4096
GIB = 2 ** 30
MIB = 2 ** 20


def _video_server(memory_bytes, zero_pages=True):
    """The histogram of benchmarks/guests.py's video-server guest, the same
    draw (seed 0), without building its per-page array: a 1080p 8-frame
    ring at 25 fps, 64 hot pages at 200/s, 6% of memory lognormal around
    0.01/s, the rest idle, half of it zero pages (or none)."""
    rng = np.random.default_rng(0)
    pages = memory_bytes // PAGE
    ring = 8 * -(-(1920 * 1080 * 3 // 2) // PAGE)
    background = pages * 6 // 100
    # Where the background pages lie: a histogram does not say, but the
    # draw keeps the generator where guests.py has it for their rates.
    rng.choice(np.arange(ring + 64, pages), background, replace=False)
    active = np.concatenate((
        np.full(ring, 25.0 / 8), np.full(64, 200.0),
        np.exp(rng.normal(np.log(0.01), 1.5, background))))
    rates, counts, _ = bin_rates(active)
    idle = pages - active.size
    return DirtyProfile.from_histogram(rates, counts, idle,
                                       idle // 2 if zero_pages else 0)


def _within(profile, settings, rounds, cells, monkeypatch):
    monkeypatch.setattr(analytic, "CELLS", cells)
    return analytic.predict(profile, settings).converges_within(rounds)


# Between CELLS / 2 and 4 x CELLS cells P(converged within N rounds) moves
# by less than this (the cells' own discretisation; it was 0.3 before).
CELLS_TOL = 0.01


def test_rounds_converge_in_cells_on_a_big_guest_at_the_cliff(
        monkeypatch):
    # The benchmarks' 64 GiB guest at the bandwidth where its eighth round
    # converges about two migrations in three (the simulator, 1400 runs
    # on two layouts: 0.62 +- 0.013).
    prof = _video_server(64 * GIB)
    st = MigrationSettings(250 * MIB, 0.299)
    cells = analytic.CELLS
    p = {n: _within(prof, st, 8, n, monkeypatch)
         for n in (cells // 2, cells, 2 * cells, 4 * cells)}
    ref = p[4 * cells]
    assert 0.2 < ref < 0.9, p          # at the cliff, or the test says little
    assert max(abs(v - ref) for v in p.values()) < CELLS_TOL, p


def test_rounds_agree_with_the_simulator_at_the_cliff(monkeypatch):
    # The same guest at 1 GiB without zero pages, where the fourth round
    # converges about three migrations in five.  A histogram has no page
    # addresses: each simulator seed lays the pages out afresh, and the
    # layout moves the answer far more than the runs on one layout do
    # (0.45 .. 0.85 between layouts), so the standard error is taken over
    # layouts (about 0.023 here; 200 layouts give 0.596 +- 0.012).  This
    # guest does not bound the model's own error at a cliff: with another
    # draw of the background rates the model is 0.06 below the simulator
    # (0.61 against 0.67 +- 0.012), the validation suite's rounds
    # tolerance.  With the cells as they were it was 0.77 here.
    prof = _video_server(1 * GIB, zero_pages=False)
    st = MigrationSettings(59.5 * MIB, 0.299)
    per_layout = np.array([
        montecarlo.simulate(prof, st, runs=20, seed=seed)
        .converges_within(4) for seed in range(60)])
    sim = per_layout.mean()
    se = per_layout.std(ddof=1) / np.sqrt(per_layout.size)
    cells = analytic.CELLS
    p = {n: _within(prof, st, 4, n, monkeypatch) for n in (cells, 4 * cells)}
    assert 0.2 < sim < 0.9, sim
    assert abs(p[cells] - p[4 * cells]) < CELLS_TOL, p
    assert abs(p[cells] - sim) < 3 * se, (p, sim, se)


@pytest.mark.parametrize("cells", [1, 2, 5, 24, 37])
def test_any_number_of_cells_gives_a_prediction(cells, monkeypatch):
    prof = _video_server(GIB // 4)
    monkeypatch.setattr(analytic, "CELLS", cells)
    pred = analytic.predict(prof, MigrationSettings(120 * MIB, 0.3))
    assert pred.converges > 0.999
    assert np.isfinite(pred.total_time.mean)
