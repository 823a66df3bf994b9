"""The CPU a migrating guest's vCPUs receive, on A and then on B.

Sampled in the background from the threads' scheduler statistics
(``/proc/TID/schedstat``: ns on a CPU), A's vCPU threads while they live
and B's incoming ones once they exist: what the isolation experiment's
timeline shows beside the migration's rate and the frame gaps.

Units: seconds.
"""

import threading
import time

from rtmig_nova.testbed import hosts


def threads_cpu_s(tids):
    """CPU seconds the threads ``tids`` have run, summed over the ones
    still there; None if none is."""
    total, seen = 0, False
    for tid in tids:
        try:
            with open("/proc/%d/schedstat" % int(tid)) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue            # ended
        seen = True
    return total / 1e9 if seen else None


class VcpuSampler:
    """Samples every ``period`` s, from :meth:`start` to :meth:`stop`,
    the CPU seconds of domain ``name``'s vCPU threads ``tids_a`` on A and
    of its incoming vCPU threads on B (found once they exist).
    :attr:`samples`: (``time.monotonic()``, A's CPU s or None, B's or
    None) tuples."""

    def __init__(self, name, tids_a, period=0.1):
        if not 0.01 <= period <= 10:
            raise ValueError("sampling period must be 0.01-10 s, got %r"
                             % (period,))
        self.name = name
        self.tids_a = list(tids_a)
        self.period = period
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="rtmtb-vcpu-sampler")

    def _run(self):
        tids_b = []
        while not self._stop.is_set():
            if not tids_b:
                tids_b = hosts.incoming_vcpu_threads(self.name)
            self.samples.append((time.monotonic(),
                                 threads_cpu_s(self.tids_a),
                                 threads_cpu_s(tids_b) if tids_b else None))
            self._stop.wait(self.period)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        """Stop sampling; returns :attr:`samples`."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5 * self.period + 5)
        return self.samples


def cpu_share(samples, window_s=0.5):
    """(window ends, share of one CPU the vCPUs received in each
    ``window_s`` window, A's and B's together) from :class:`VcpuSampler`
    samples; empty arrays with fewer than two samples."""
    import numpy as np
    if len(samples) < 2:
        return np.array([]), np.array([])
    t = np.array([s[0] for s in samples], dtype=float)
    # each host's counter held at its last value once its threads are gone
    total = np.zeros(t.size)
    for col in (1, 2):
        v = np.array([np.nan if s[col] is None else s[col]
                      for s in samples], dtype=float)
        seen = np.isfinite(v)
        if not seen.any():
            continue
        first = int(np.argmax(seen))
        v[:first] = v[first]
        for i in range(first + 1, v.size):     # forward fill
            if not np.isfinite(v[i]):
                v[i] = v[i - 1]
        total += v - v[first]
    edges = np.arange(t[0], t[-1] + 1e-9, window_s)
    if edges.size < 2:
        return np.array([]), np.array([])
    at = np.interp(edges, t, total)
    return edges[1:], np.diff(at) / window_s
