# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""What a video client sees of a frame stream: a playout model (pure).

The client plays frame k when all of its datagrams are in and its slot has
come.  It starts ``tolerance`` seconds after the first frame completes (its
playout buffer) and then plays a frame every ``period``: frame k's slot is
``slot[k-1] + period``, and ``done[k]``, when the frame's last datagram
arrived, must not be later.  Frame k **misses its deadline** when it is:
the picture freezes, and the client buffers again, playing the frame
``tolerance`` after it arrives (``slot[k] = done[k] + tolerance``).  Its
lateness is ``done[k] - (slot[k-1] + period)`` (0 for a frame in time).  A
frame that never completes (a datagram lost) is a miss whose slot passes
without it.  A pause of the stream by D > ``tolerance`` is thus one missed
frame, late by D - ``tolerance``, and a gap of ``period`` + D between the
frames shown.

The model needs no common clock between sender and client: only the
client's arrival times and the frame numbers, so a guest whose clock stops
while it is paused (under TCG and with kvmclock alike the downtime does
not advance the guest's CLOCK_MONOTONIC) is judged as its viewers see it:
one freeze of about the downtime, not a stream late for ever after.

Units: seconds.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Playout:
    """Per-frame results of :func:`playout` (arrays over frames
    ``first .. last``, the frame numbers seen)."""
    frames: np.ndarray          # frame numbers
    done_s: np.ndarray          # completion time, s (nan: never complete)
    slot_s: np.ndarray          # when it was (or would have been) played, s
    lateness_s: np.ndarray      # s; 0 in time
    missed: np.ndarray          # bool
    period_s: float
    tolerance_s: float

    @property
    def count(self):
        return int(self.frames.size)

    @property
    def misses(self):
        return int(self.missed.sum())

    @property
    def lost(self):
        """Frames never complete."""
        return int(np.isnan(self.done_s).sum())

    @property
    def max_gap_s(self):
        """The longest time between two consecutive frames played (the
        freeze a viewer sees; ``period`` when nothing froze), s."""
        if self.frames.size < 2:
            return 0.0
        shown = self.slot_s[~np.isnan(self.done_s)]
        return float(np.diff(shown).max()) if shown.size > 1 else 0.0

    def window(self, start_s, end_s):
        """The frames whose slots fall in [start_s, end_s)."""
        keep = (self.slot_s >= start_s) & (self.slot_s < end_s)
        return dataclasses.replace(
            self, frames=self.frames[keep], done_s=self.done_s[keep],
            slot_s=self.slot_s[keep], lateness_s=self.lateness_s[keep],
            missed=self.missed[keep])


def frame_completion(frame, index, count, arrival_s):
    """Per frame, when its last datagram arrived.

    ``frame``, ``index``, ``count``, ``arrival_s``: one entry per datagram
    received (duplicates allowed).  Returns ``(frames, done_s)`` over every
    frame number from the smallest to the last complete one, ``done_s``
    nan for a frame some datagram of which never arrived.  Frames after
    the last complete one are left out: the recording ended while they
    were on their way (a last frame truly lost cannot be told from that).
    """
    frame = np.asarray(frame, dtype=np.int64)
    if frame.size == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    index = np.asarray(index, dtype=np.int64)
    count = np.asarray(count, dtype=np.int64)
    arrival_s = np.asarray(arrival_s, dtype=float)
    first, last = int(frame.min()), int(frame.max())
    frames = np.arange(first, last + 1)
    # distinct (frame, index) pairs, the first arrival of each
    order = np.lexsort((arrival_s, index, frame))
    f, i, c, a = frame[order], index[order], count[order], arrival_s[order]
    new = np.ones(f.size, bool)
    new[1:] = (f[1:] != f[:-1]) | (i[1:] != i[:-1])
    f, i, c, a = f[new], i[new], c[new], a[new]
    slot = f - first
    got = np.bincount(slot, minlength=frames.size)
    want = np.zeros(frames.size, np.int64)
    np.maximum.at(want, slot, c)
    done = np.full(frames.size, -np.inf)
    np.maximum.at(done, slot, a)
    done[(got < want) | (got == 0)] = np.nan
    complete = np.flatnonzero(~np.isnan(done))
    end = complete[-1] + 1 if complete.size else 0
    return frames[:end], done[:end]


def playout(frames, done_s, period_s, tolerance_s):
    """Play ``frames`` (consecutive numbers) completed at ``done_s`` (nan:
    never) with a frame every ``period_s`` after a buffer of
    ``tolerance_s`` (see the module doc)."""
    if not period_s > 0 or not tolerance_s >= 0:
        raise ValueError("period must be > 0 and tolerance >= 0")
    frames = np.asarray(frames)
    done = np.asarray(done_s, dtype=float)
    n = done.size
    slot = np.zeros(n)
    late = np.zeros(n)
    missed = np.zeros(n, bool)
    complete = np.flatnonzero(~np.isnan(done))
    if complete.size == 0:
        return Playout(frames, done, np.full(n, np.nan), late,
                       np.ones(n, bool), float(period_s), float(tolerance_s))
    start = complete[0]
    # frames before the first complete one are lost; their slots precede it
    prev = done[start] + tolerance_s - period_s
    slot[:start] = prev - period_s * np.arange(start, 0, -1)
    missed[:start] = True
    for k in range(start, n):
        due = prev + period_s
        if np.isnan(done[k]):
            slot[k], missed[k] = due, True
        elif done[k] > due:
            slot[k], late[k], missed[k] = done[k] + tolerance_s, \
                done[k] - due, True
        else:
            slot[k] = due
        prev = slot[k]
    return Playout(frames, done, slot, late, missed, float(period_s),
                   float(tolerance_s))
