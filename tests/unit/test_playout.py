"""The viewer's playout model of a frame stream (testbed.playout)."""

import numpy as np
import pytest

from rtmig_nova.testbed import playout

P = 0.04


def _stream(n, stall_after=None, stall_s=0.0, jitter=0.0, seed=1):
    rng = np.random.default_rng(seed)
    done = 10.0 + P * np.arange(n) + jitter * rng.random(n)
    if stall_after is not None:
        # the sender's clock stopped for stall_s (a paused guest): every
        # later frame comes stall_s later
        done[stall_after + 1:] += stall_s
    return np.arange(n), done


def test_a_steady_stream_misses_nothing():
    frames, done = _stream(200, jitter=0.005)
    po = playout.playout(frames, done, P, 0.01)
    assert po.count == 200 and po.misses == 0 and po.lost == 0
    assert po.max_gap_s == pytest.approx(P)
    assert (po.lateness_s == 0).all()


@pytest.mark.parametrize("stall", [0.005, 0.05, 0.3])
def test_a_pause_is_one_freeze_not_a_stream_late_for_ever(stall):
    frames, done = _stream(200, stall_after=50, stall_s=stall)
    tol = 0.01
    po = playout.playout(frames, done, P, tol)
    if stall <= tol:
        assert po.misses == 0
        assert po.max_gap_s == pytest.approx(P)
    else:
        assert po.misses == 1 and bool(po.missed[51])
        assert po.lateness_s[51] == pytest.approx(stall - tol)
        # the viewer's freeze: the pause and the frame it held up
        assert po.max_gap_s == pytest.approx(P + stall)
    assert not po.missed[52:].any()


def test_a_frame_with_a_lost_datagram_is_missed_and_its_slot_passes():
    frame = np.repeat(np.arange(10), 3)
    index = np.tile([0, 1, 2], 10)
    arrival = 1.0 + P * frame + 0.001 * index
    keep = ~((frame == 4) & (index == 1))
    frames, done = playout.frame_completion(
        frame[keep], index[keep], np.full(keep.sum(), 3), arrival[keep])
    assert np.isnan(done[4]) and not np.isnan(np.delete(done, 4)).any()
    po = playout.playout(frames, done, P, 0.01)
    assert po.lost == 1 and po.misses == 1 and bool(po.missed[4])
    assert po.slot_s[5] - po.slot_s[3] == pytest.approx(2 * P)
    assert po.max_gap_s == pytest.approx(2 * P)


def test_completion_takes_the_last_of_each_frames_datagrams():
    # out of order, a duplicate, a frame (2) of which nothing came
    frame = np.array([1, 0, 0, 1, 3, 0, 3])
    index = np.array([1, 1, 0, 0, 0, 1, 1])
    arrival = np.array([5.0, 2.0, 1.0, 4.0, 9.0, 7.0, 8.0])
    frames, done = playout.frame_completion(frame, index,
                                            np.full(7, 2), arrival)
    assert list(frames) == [0, 1, 2, 3]
    # frame 0: its index 1 first came at 2.0 (the duplicate at 7.0 is late)
    assert done[0] == 2.0 and done[1] == 5.0 and done[3] == 9.0
    assert np.isnan(done[2])
    assert playout.frame_completion([], [], [], [])[0].size == 0
    # a last frame cut by the end of the recording is not counted
    frames, done = playout.frame_completion(
        [0, 0, 1, 2, 2, 3], [0, 1, 0, 0, 1, 0], [2] * 6, [1, 2, 3, 4, 5, 6])
    assert list(frames) == [0, 1, 2] and np.isnan(done[1])
    assert playout.frame_completion([5], [0], [2], [1.0])[0].size == 0


def test_window_and_bad_arguments():
    frames, done = _stream(100)
    po = playout.playout(frames, done, P, 0.01)
    part = po.window(po.slot_s[10], po.slot_s[20])
    assert list(part.frames) == list(range(10, 20))
    with pytest.raises(ValueError):
        playout.playout(frames, done, 0.0, 0.01)
    with pytest.raises(ValueError):
        playout.playout(frames, done, P, -1)
    # nothing complete: everything missed
    none = playout.playout(frames, np.full(100, np.nan), P, 0.01)
    assert none.misses == 100 and none.lost == 100
